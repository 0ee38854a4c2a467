"""`tether serve APP` imports APP the way API.md §4 says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tether.runtime.cli import main
from tether.runtime.loader import load_app


@pytest.fixture
def clean_path() -> object:
    saved_path, saved_modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = saved_path
    for name in set(sys.modules) - saved_modules:
        del sys.modules[name]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_py_file_is_a_top_level_module_beside_its_shared_module(
    tmp_path: Path, clean_path: object
) -> None:
    write(tmp_path / "shared_x1.py", "VALUE = 1\n")
    app = write(tmp_path / "myapp_x1.py", "import shared_x1\nUSES = shared_x1.VALUE\n")
    module = load_app(str(app))
    assert module.__name__ == "myapp_x1"
    assert module.USES == 1
    assert sys.path[0] == str(tmp_path)
    assert load_app(str(app)) is module  # importing again is a no-op


def test_a_folder_with_app_py(tmp_path: Path, clean_path: object) -> None:
    folder = tmp_path / "shop"
    write(folder / "app.py", "NAME = 'shop'\n")
    assert load_app(str(folder)).NAME == "shop"
    other = tmp_path / "other"
    write(other / "app.py", "NAME = 'other'\n")
    with pytest.raises(ImportError, match="a different module named 'app'"):
        load_app(str(other))


def test_a_package_folder_and_a_module_name(tmp_path: Path, clean_path: object) -> None:
    package = tmp_path / "pkg_x2"
    write(package / "__init__.py", "KIND = 'package'\n")
    assert load_app(str(package)).KIND == "package"
    assert load_app("pkg_x2").KIND == "package"


def test_missing_apps_are_clear_errors(tmp_path: Path, clean_path: object) -> None:
    with pytest.raises(FileNotFoundError, match="no app file"):
        load_app(str(tmp_path / "nope.py"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"neither app\.py nor __init__\.py"):
        load_app(str(tmp_path / "empty"))
    with pytest.raises(ModuleNotFoundError):
        load_app("no_such_module_x3")


def test_cli_reports_a_bad_app_and_bad_limits(tmp_path: Path, clean_path: object) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["serve", str(tmp_path / "missing.py")])
    assert result.exit_code != 0
    assert "no app file" in result.output
    app = write(tmp_path / "okapp_x4.py", "")
    result = runner.invoke(main, ["serve", str(app), "--max-depth", "0"])
    assert result.exit_code != 0
    assert "max_depth must be a positive int" in result.output


def test_cli_serve_builds_the_app_and_serves_it(
    tmp_path: Path, clean_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tether.runtime.serving as serving

    served: list[tuple[object, str, int]] = []
    monkeypatch.setattr(
        serving, "serve_forever", lambda app, host, port, **kw: served.append((app, host, port))
    )
    app = write(tmp_path / "served_x5.py", "")
    result = CliRunner().invoke(
        main,
        [
            "serve",
            str(app),
            "--port",
            "8123",
            "--uplink-key",
            "k",
            "--allow-origin",
            "https://a.example",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "uplink key set" in result.output
    [(asgi, host, port)] = served
    assert (host, port) == ("127.0.0.1", 8123)
    assert asgi.options.allowed_origins == ("https://a.example",)  # type: ignore[attr-defined]


def test_tune_gc_freezes_what_was_loaded_and_raises_the_first_threshold() -> None:
    # In a fresh interpreter: the collector's settings are process-wide.
    code = (
        "import gc; from tether.runtime.serving import GC_THRESHOLD, tune_gc;"
        "older = gc.get_threshold()[1:]; tune_gc();"
        "assert gc.get_freeze_count() > 1000, gc.get_freeze_count();"
        "assert gc.get_threshold() == (GC_THRESHOLD, *older), gc.get_threshold();"
        "print('tuned')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "tuned"
