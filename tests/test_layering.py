"""The layering `dagengine/__init__.py` states, checked on the source: core <- tools.

Every module under src/dagengine is parsed with `ast`; each `import` and `from ... import`
in it (at module level, inside functions and under `if TYPE_CHECKING:` alike) is an edge to
the module files it names. The checks:

- no import circle between files;
- nothing inside the package imports the package root (`dagengine/__init__.py` gathers the
  public API from the modules; a module reaching back into it makes a circle through it);
- no core module imports a tool (simulator, gateway, cli, testing): the tools are built on
  the core, never the other way round.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
ROOT = "dagengine"
TOOLS = ("dagengine.simulator", "dagengine.gateway", "dagengine.cli", "dagengine.testing",
         "dagengine.__main__")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted((SRC / ROOT).rglob("*.py"))}


def is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def imported_modules(module: str) -> Iterator[tuple[str, int]]:
    """(module imported, line) for every import in `module` that names a module of ours."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    package = module if is_package(module) else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            submodules = [f"{target}.{alias.name}" for alias in node.names
                          if f"{target}.{alias.name}" in MODULES]
            yield from ((sub, node.lineno) for sub in submodules)
            # `from . import a` names module a only; `from .x import name` uses x itself.
            if target in MODULES and len(submodules) < len(node.names):
                yield target, node.lineno


GRAPH = {module: sorted(set(imported_modules(module))) for module in MODULES}


def is_tool(module: str) -> bool:
    return any(module == tool or module.startswith(tool + ".") for tool in TOOLS)


def where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(SRC.parent)}:{line}"


def find_circle() -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for target, _ in GRAPH[module]:
            if state.get(target) == "open":
                return [*path[path.index(target):], target]
            if target not in state and (circle := visit(target)):
                return circle
        path.pop()
        state[module] = "done"
        return None

    for module in MODULES:
        if module not in state and (circle := visit(module)):
            return circle
    return None


def test_the_checker_sees_the_imports_it_checks() -> None:
    engine_imports = {target for target, _ in GRAPH["dagengine.engine"]}
    assert "dagengine.scheduler" in engine_imports and "dagengine.errors" in engine_imports
    assert {target for target, _ in GRAPH[ROOT]} >= {"dagengine.engine", "dagengine.types"}


def test_no_import_circle_between_files() -> None:
    circle = find_circle()

    assert circle is None, (
        "import circle: " + " -> ".join(circle) + "\n" + "\n".join(
            f"  {where(a, line)} imports {b}" for a, b in pairwise(circle)
            for target, line in GRAPH[a] if target == b)
        + "\nmove what both sides need into one module, or pass it in as an argument"
    )


def test_nothing_inside_imports_the_package_root() -> None:
    upward = [f"{where(module, line)} imports the package root ({ROOT}/__init__.py)"
              for module, targets in GRAPH.items() for target, line in targets
              if target == ROOT and module != ROOT]

    assert not upward, "\n".join(upward) + (
        "\nimport the module that defines the name instead (e.g. dagengine._version)")


def test_no_core_module_imports_a_tool() -> None:
    wrong = [f"{where(module, line)} (core) imports the tool {target}"
             for module, targets in GRAPH.items() if not is_tool(module)
             for target, line in targets if is_tool(target)]

    assert not wrong, "\n".join(wrong) + (
        f"\nthe tools ({', '.join(TOOLS)}) are built on the core; the core must not need them")
