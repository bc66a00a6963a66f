"""The Makefile on fresh machines: a Python without ensurepip (Debian without python3-venv)
fails with a clear message and leaves no half-built .venv; a half-built one left by an
older run is replaced; `make clean` never deletes data/ (disk buffers, dead letters)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed (.ci/run installs it)")


def make(workdir: Path, *args: str, python: str = sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-C", str(workdir), f"PYTHON={python}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def checkout(tmp_path) -> Path:
    for name in ("Makefile", "pyproject.toml", "constraints.txt"):
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def python_without_ensurepip(tmp_path: Path) -> str:
    """The real interpreter acting as Debian's python3 without python3-venv: ``import
    ensurepip`` fails, and ``-m venv DIR`` leaves DIR with a python but no pip, and fails."""
    shadow = tmp_path / "shadow" / "ensurepip"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("ensurepip is not installed")\n')
    wrapper = tmp_path / "python-no-venv"
    wrapper.write_text(f"""#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  shift 2
  "{sys.executable}" -m venv --without-pip "$@"
  echo "The virtual environment was not created successfully because ensurepip is not available." >&2
  exit 1
fi
PYTHONPATH="{shadow.parent}" exec "{sys.executable}" "$@"
""")
    wrapper.chmod(0o755)
    return str(wrapper)


def test_a_python_without_ensurepip_fails_clearly_and_leaves_no_venv(checkout, tmp_path):
    python = python_without_ensurepip(tmp_path)
    for attempt in (1, 2):  # the second make must fail the same way, not on a half-built .venv
        result = make(checkout, "venv", python=python)
        assert result.returncode != 0, attempt
        assert "apt-get install python3-venv" in result.stderr, (attempt, result.stderr)
        assert not (checkout / ".venv").exists(), attempt


def test_a_half_built_venv_without_pip_is_replaced(checkout):
    half = checkout / ".venv" / "bin"
    half.mkdir(parents=True)
    os.symlink(sys.executable, half / "python")  # what `python3 -m venv` leaves when ensurepip fails
    result = make(checkout, ".venv/bin/pip")
    assert result.returncode == 0, result.stderr
    assert (half / "pip").exists()


def test_clean_removes_the_venv_but_never_the_disk_buffers(checkout):
    (checkout / ".venv" / "bin").mkdir(parents=True)
    segment = checkout / "data" / "buffer" / "vl" / "00000001.seg"
    segment.parent.mkdir(parents=True)
    segment.write_bytes(b"undelivered events")
    result = make(checkout, "clean")
    assert result.returncode == 0, result.stderr
    assert not (checkout / ".venv").exists()
    assert segment.read_bytes() == b"undelivered events"


def test_make_installs_exactly_the_pinned_test_dependencies():
    pinned = {line.split("==")[0].lower() for line in (REPO / "constraints.txt").read_text().splitlines()
              if line and not line.startswith("#")}
    assert {"pytest", "hypothesis", "ruff", "mypy", "nats-py"} <= pinned
    assert "-c $(CONSTRAINTS)" in (REPO / "Makefile").read_text()
