"""The codec and the protocol stay pure: no asyncio, sockets or ssl, no pickle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import TIMEOUT

SRC = Path(__file__).resolve().parent.parent / "src" / "tether"


def test_codec_and_protocol_load_no_io_modules() -> None:
    code = (
        "import sys; before = set(sys.modules); import tether.codec, tether.protocol;"
        "new = set(sys.modules) - before;"
        "print(','.join(m for m in ('asyncio', 'socket', 'ssl', 'pickle') if m in new))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, check=True
    )
    assert result.stdout.strip() == ""


def test_no_pickle_or_eval_anywhere_in_the_package() -> None:
    banned_modules = {"pickle", "marshal", "dill", "cloudpickle", "shelve"}
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & banned_modules, path
            elif isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] not in banned_modules, path
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"eval", "exec", "__import__"}, path
