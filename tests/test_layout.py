"""The code's layout, as the README's Layout section states it: imports run one way (the
commands and the daemon, then the server, then the engine, then its parts, then the leaves),
and only the store package imports a database driver. Read from the source with `ast`, so a
new module must be given its layer here before the test passes."""

from __future__ import annotations

import ast
from pathlib import Path

import automationd

PACKAGE = Path(automationd.__file__).parent

# Top-level modules and packages of automationd, highest layer first. A module may import
# from its own layer and the layers below it, never from one above.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"__main__", "cli", "daemon", "client", "receive", "backup", "watch"}),
    frozenset({"server", "connections", "openapi", "explain"}),
    frozenset({"engine"}),
    frozenset(
        {
            "intake",
            "runner",
            "progress",
            "reload",
            "triggers",
            "matching",
            "prefect_source",
            "prefect_events",
            "cooldowns",
            "destinations",
            "deadlines",
            "journal",
        }
    ),
    frozenset(
        {
            "__init__",
            "rules",
            "events",
            "wire",
            "templating",
            "actions",
            "store",
            "audit",
            "trail",
            "metrics",
            "systemd",
            "secrets",
            "yamldoc",
            "jmescompile",
            "globs",
            "backoff",
            "durations",
            "jsontext",
        }
    ),
)

DRIVERS = frozenset({"sqlite3", "psycopg", "psycopg2", "asyncpg", "psycopg_pool"})


def is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").exists() or (PACKAGE / name / "__init__.py").exists()


def top_name(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported(path: Path) -> set[str]:
    """Every module name `path` imports, at any depth (function-level imports count, those
    only for type checking do not)."""
    names: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    for block in ast.walk(tree):
        if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING":
            block.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "automationd":  # `from automationd import cli`, not `__version__`
                names.update(
                    f"automationd.{alias.name}" for alias in node.names if is_module(alias.name)
                )
    return names


def layer_of(name: str) -> int:
    for index, layer in enumerate(LAYERS):
        if name in layer:
            return index
    raise AssertionError(f"automationd.{name} has no layer in tests/test_layout.py")


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    for path in sources():
        layer_of(top_name(path))


def test_imports_run_one_way() -> None:
    upward = []
    for path in sources():
        here = top_name(path)
        for name in imported(path):
            parts = name.split(".")
            if parts[0] != "automationd" or len(parts) < 2:
                continue
            if layer_of(parts[1]) < layer_of(here):
                upward.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert upward == []


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_imports_one_that_imports_it_back() -> None:
    """Inside a layer too (rules and actions are both leaves: the actions read the rules'
    model, the rules' checks read the actions' registry), no chain of imports comes back.
    A package's `__init__` counts as a module of its own, so a package may import its
    submodules, or they its `__init__`, but not both."""
    graph: dict[str, set[str]] = {}
    for path in sources():
        here = module_name(path)
        graph[here] = set()
        for name in imported(path):
            if name.split(".")[0] == "automationd":
                graph[here].add(name)
    cycles = []
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for after in sorted(graph.get(node, ())):
            if state.get(after) == "open":
                cycles.append(" -> ".join([*trail[trail.index(after) :], after]))
            elif after not in state:
                visit(after, [*trail, after])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert cycles == []


def test_only_the_store_imports_a_database_driver() -> None:
    found = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in sources()
        for name in imported(path)
        if name.split(".")[0] in DRIVERS and top_name(path) != "store"
    ]
    assert found == []
    in_store = {
        name.split(".")[0] for path in (PACKAGE / "store").rglob("*.py") for name in imported(path)
    }
    assert "sqlite3" in in_store  # the check reads imports at all
