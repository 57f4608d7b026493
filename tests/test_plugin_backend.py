"""A third-party backend, installed the way a user installs one: a tiny package declaring a
``slate_epoch.backends`` entry point, pip-installed into a temporary venv. ``open_store`` finds
its scheme the first time it meets it, and a claim runs on its store."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

TIMEOUT = 180.0  # creating a venv and building a wheel, on a busy 2-core machine

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "slate-epoch-demo-plugin"
version = "0.1.0"

[project.entry-points."slate_epoch.backends"]
demo = "slate_epoch_demo_plugin:open_demo"
"""

MODULE = '''\
"""A store for the scheme demo://: a MemoryStore that remembers the URL it was opened with."""

from slate_epoch.backends.memory import MemoryStore


class DemoStore(MemoryStore):
    def __init__(self, url: str, options: dict) -> None:
        super().__init__()
        self.url = url
        self.options = options


def open_demo(url: str, **options: object) -> DemoStore:
    return DemoStore(url, options)
'''

SCRIPT = """\
import anyio
from slate_epoch import claim_epoch, open_store
from slate_epoch._open import available_schemes

async def main() -> None:
    store = open_store("demo://bucket/prefix", flavour="plain")
    print(type(store).__module__, type(store).__name__, store.url, store.options)
    async with store:
        first = await claim_epoch(store, "r")
        second = await claim_epoch(store, "r")
    print("epochs", first.epoch, second.epoch)
    print("listed", "demo" in available_schemes())

anyio.run(main)
"""


def _run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.mark.timeout(2 * TIMEOUT)
def test_a_plugin_package_registers_its_scheme_by_entry_point(tmp_path: Path) -> None:
    package = tmp_path / "plugin"
    (package / "slate_epoch_demo_plugin").mkdir(parents=True)
    (package / "pyproject.toml").write_text(PYPROJECT)
    (package / "slate_epoch_demo_plugin" / "__init__.py").write_text(MODULE)

    # A fresh venv that sees this project's packages (slate-epoch itself, installed editable,
    # and its dependencies) through a .pth line, and nothing else.
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    purelib = Path(
        _run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        ).stdout.strip()
    )
    ours = sysconfig.get_paths()["purelib"]
    (purelib / "slate_epoch_project.pth").write_text(f"import site; site.addsitedir({ours!r})\n")

    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        package,
    )
    done = _run(python, "-c", textwrap.dedent(SCRIPT))
    lines = done.stdout.splitlines()
    assert lines[0] == (
        "slate_epoch_demo_plugin DemoStore demo://bucket/prefix {'flavour': 'plain'}"
    )
    assert lines[1] == "epochs 1 2"
    assert lines[2] == "listed True"


def test_without_the_plugin_the_scheme_is_unknown() -> None:
    """The same scheme in this process, where no package declares it."""
    from slate_epoch import open_store

    with pytest.raises(ValueError, match="unsupported URL scheme 'demo'"):
        open_store("demo://bucket/prefix")
