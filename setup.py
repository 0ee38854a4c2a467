"""Builds the codec's optional C speedups (tether/codec/_speedups.c).

Everything else is in pyproject.toml. Without a C compiler the build goes on without
them, and the codec runs its pure-Python versions of the same loops.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("tether.codec._speedups", ["src/tether/codec/_speedups.c"], optional=True)
    ]
)
