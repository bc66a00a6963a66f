"""Another commit's parser in this process, for before/after figures measured in one run.

``import_from_ref("main")`` extracts that commit's ``logpipe/`` package (``git archive``) into
a temporary directory and imports ``logpipe.parse.syslog`` from it under the usual names,
then puts this tree's modules back: the old module keeps its own body.py, timestamps.py
and framing.py (its functions hold their own globals), so nothing of this tree leaks into
the "before" figures and nothing of the old tree into the "after" ones.
"""

from __future__ import annotations

import importlib
import io
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _is_logpipe(name: str) -> bool:
    return name == "logpipe" or name.startswith("logpipe.")


def import_from_ref(ref: str, module: str = "logpipe.parse.syslog") -> types.ModuleType:
    """``module`` as it is at git ``ref`` of this repository (a branch, tag or commit)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "logpipe"],
                             check=True, capture_output=True).stdout
    root = tempfile.mkdtemp(prefix="logpipe-" + ref.replace("/", "_") + "-")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    saved = {name: mod for name, mod in sys.modules.items() if _is_logpipe(name)}
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, root)
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(root)
        for name in [name for name in sys.modules if _is_logpipe(name)]:
            del sys.modules[name]
        sys.modules.update(saved)


def describe(ref: str) -> str:
    """``ref`` and the commit it names, for a table's heading."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", ref],
                            check=True, capture_output=True, text=True).stdout.strip()
    return f"{ref} ({commit})"
