"""The shape of the package: no import cycles (lazy imports inside functions included).

A cycle hidden behind an import inside a function still ties two modules
together: neither can be understood, tested or moved without the other. The
graph is built from the source with ``ast``, so it sees every import, not
only those that ran. Importing ``a.b.c`` runs ``a/b/__init__`` first, so a
package's ``__init__`` that imports its own submodules is part of the graph
like any other module: ``detect -> extractors -> mail -> detect`` is a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "background_tasks"


def module_name(path: Path, root: Path = PROJECT_ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = current.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _ancestors(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def import_graph(root: Path = PROJECT_ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package modules importing it runs.

    ``from a import b`` counts ``a.b`` when that is a module. Importing a module also runs the
    ``__init__`` of every package above it that the importer is not itself inside (its own
    packages ran before it did), so those count too.
    """
    files = {module_name(p, root): p for p in (root / package).rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        own = _ancestors(name)
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, path.name == "__init__.py", node)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names]
            for target in targets:
                # the nearest module of the package that the import names
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if not target.startswith(package):
                    continue
                runs = {target} | {p for p in _ancestors(target) if p in files and p not in own}
                graph[name].update(runs - {name})
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_package_has_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles (break them by passing what is needed in):\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_a_package_importing_its_own_submodules_is_part_of_a_cycle(tmp_path: Path) -> None:
    # the shape the old graph missed: the registry's __init__ imports mail, mail imports detect,
    # and detect imports the registry (by its name, or through a module inside it)
    registry = {
        "pkg/__init__.py": "",
        "pkg/extractors/__init__.py": "from pkg.extractors.base import Base\nfrom pkg.extractors.mail import Mail\n",
        "pkg/extractors/base.py": "class Base: ...\n",
        "pkg/extractors/mail.py": "from pkg.extractors.base import Base\nfrom pkg import detect\n",
    }
    by_name = tmp_path / "by_name"
    _write(by_name, {**registry, "pkg/detect.py": "def kind():\n    from pkg.extractors import Base\n"})
    assert find_cycles(import_graph(by_name, "pkg")) == [["pkg.detect", "pkg.extractors", "pkg.extractors.mail"]]
    through_module = tmp_path / "through_module"
    _write(through_module, {**registry, "pkg/detect.py": "from pkg.extractors.base import Base\n"})
    assert find_cycles(import_graph(through_module, "pkg")) == [["pkg.detect", "pkg.extractors", "pkg.extractors.mail"]]


def test_modules_inside_a_package_may_import_each_other(tmp_path: Path) -> None:
    # the package's __init__ ran before any of its modules, so importing a sibling is no cycle
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/extractors/__init__.py": "from pkg.extractors.mail import Mail\n",
            "pkg/extractors/base.py": "class Base: ...\n",
            "pkg/extractors/mail.py": "from pkg.extractors.base import Base\nfrom . import base\n",
            "pkg/detect.py": "from pkg.extractors.base import Base\n",
        },
    )
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.detect"] == {"pkg.extractors", "pkg.extractors.base"}
    assert graph["pkg.extractors.mail"] == {"pkg.extractors.base"}
    assert find_cycles(graph) == []
