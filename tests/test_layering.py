"""The architecture, asserted: so a later change cannot quietly add an upward import.

- parse/ is sans-IO: no asyncio, sockets, TLS, event loops, HTTP or clock module, and nothing
  of logpipe outside parse/.
- buffer/ knows nothing of sources, sinks, the pipeline or the control plane; sinks import
  nothing from sources, the pipeline or the control plane; sources nothing from sinks or the
  control plane.
- Only daemon/assemble.py builds components: no other module imports a source class or the
  sink factory.
- api.py imports no daemon module (it reads a Control protocol).
- No import cycle among logpipe's modules (module-level imports; a function-level import is
  how a module defers an optional dependency, and cannot form a cycle at import time).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "logpipe"

# The component modules whose classes only the assembly may import (sources/base, flow and
# net are shared helpers, not components).
COMPONENT_MODULES = ("logpipe.sources.",)
NOT_COMPONENTS = ("logpipe.sources.base", "logpipe.sources.flow", "logpipe.sources.net")


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: pathlib.Path, top_level_only: bool) -> list[tuple[str, list[str]]]:
    """(module imported, names imported) for each import in the file, resolved to absolute."""
    tree = ast.parse(path.read_text())
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [alias.name for alias in node.names]
            found.append((target, names))
            # `from . import x` / `from .pkg import mod`: the names may be modules
            found += [(f"{target}.{name}", []) for name in names]
    return found


def sources() -> list[pathlib.Path]:
    return sorted(ROOT.rglob("*.py"))


def in_package(path: pathlib.Path, package: str) -> bool:
    return module_name(path) == package or module_name(path).startswith(package + ".")


FORBIDDEN = [
    ("logpipe.parse", ("asyncio", "socket", "ssl", "uvloop", "aiohttp", "time", "selectors", "logpipe.")),
    ("logpipe.buffer", ("logpipe.sources", "logpipe.sinks", "logpipe.pipeline", "logpipe.daemon", "logpipe.api")),
    ("logpipe.sinks", ("logpipe.sources", "logpipe.pipeline", "logpipe.daemon", "logpipe.api")),
    ("logpipe.sources", ("logpipe.sinks", "logpipe.daemon", "logpipe.api")),
    ("logpipe.api", ("logpipe.daemon",)),
]


@pytest.mark.parametrize("package, forbidden", FORBIDDEN, ids=[p for p, _ in FORBIDDEN])
def test_layers_import_only_downward(package, forbidden):
    problems = []
    for path in sources():
        if not in_package(path, package):
            continue
        for target, _ in imports(path, top_level_only=False):
            if package == "logpipe.parse" and target.startswith("logpipe.parse"):
                continue
            if any(target == f.rstrip(".") or target.startswith(f if f.endswith(".") else f + ".") for f in forbidden):
                problems.append(f"{module_name(path)} imports {target}")
    assert not problems, problems


def test_only_the_assembly_builds_components():
    problems = []
    for path in sources():
        name = module_name(path)
        if name == "logpipe.daemon.assemble" or any(in_package(path, p) for p in ("logpipe.sources", "logpipe.sinks")):
            continue
        for target, names in imports(path, top_level_only=False):
            if target == "logpipe.sinks" and "build" in names:
                problems.append(f"{name} imports the sink factory")
            if target.startswith(COMPONENT_MODULES) and target not in NOT_COMPONENTS:
                classes = [n for n in names if n[:1].isupper() and not n.isupper()]
                if classes:
                    problems.append(f"{name} imports {target}.{', '.join(classes)}")
    assert not problems, problems


def test_no_import_cycles():
    graph: dict[str, set[str]] = {}
    modules = {module_name(p): p for p in sources()}
    for name, path in modules.items():
        graph[name] = {t for t, _ in imports(path, top_level_only=True) if t in modules and t != name}
    # a package importing its own submodules from __init__ is how re-exports work: not a cycle
    for name in graph:
        if modules[name].name == "__init__.py":
            graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    visiting: list[str] = []
    done: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        if node in done:
            return
        if node in visiting:
            cycles.append(visiting[visiting.index(node):] + [node])
            return
        visiting.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        visiting.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)
    assert not cycles, [" -> ".join(c) for c in cycles]
