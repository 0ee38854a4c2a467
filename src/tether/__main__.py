"""``python -m tether`` is the ``tether`` command."""

from tether.runtime.cli import main

main()
