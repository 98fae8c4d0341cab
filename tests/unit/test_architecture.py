"""The import contract, read from the source (AST), so that the layering cannot erode unnoticed:

- layers point one way: kecl → updater → encoder / retrieval / knowledge, and those three never
  import each other (components meet only in updater/ and kecl/);
- outside a package, only the names in its ``__init__``'s ``__all__`` are used (its modules are private);
- no product module imports a CLI module;
- no import cycles between the modules of a package (module-level imports);
- an import inside a function says why it is deferred (``# deferred: …``): only to keep a heavy
  dependency off a path that does not need it, never to dodge a cycle.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("encoder", "knowledge", "retrieval", "updater", "kecl")
# What each package may import from the others (their public names only).
ALLOWED = {
    "encoder": set(),
    "knowledge": set(),
    "retrieval": set(),
    "updater": {"encoder", "knowledge", "retrieval"},
    "kecl": {"encoder", "knowledge", "retrieval", "updater"},
    "benchmarks": set(PRODUCT),
}
CLI_MODULES = ("kecl.cli", "kecl.commands")


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    module: str  # absolute module imported from
    names: tuple[str, ...]  # names taken from it ("" for a plain ``import module``)
    in_function: bool
    type_checking: bool
    comment: str  # the source of its run of consecutive imports and the line above it


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files(*packages: str) -> Iterator[Path]:
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations/versions" not in path.as_posix():
                yield path


def imports_of(path: Path) -> Iterator[Import]:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    tree = ast.parse(text)
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]

    def block_start(node: ast.AST) -> dict[int, int]:
        """For each import statement in a body: the first line of its run of consecutive imports
        (a comment above the run covers all of it)."""
        starts: dict[int, int] = {}
        for field in ("body", "orelse", "finalbody"):
            first = None
            stmts = getattr(node, field, None)
            for stmt in stmts if isinstance(stmts, list) else []:
                if isinstance(stmt, ast.Import | ast.ImportFrom):
                    first = first or stmt.lineno
                    starts[id(stmt)] = first
                else:
                    first = None
        return starts

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> Iterator[Import]:
        starts = block_start(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                yield from visit(child, in_function, True)
                continue
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import | ast.ImportFrom):
                first = starts.get(id(child), child.lineno)
                comment = "\n".join(lines[max(first - 2, 0) : child.end_lineno])
                if isinstance(child, ast.Import):
                    for alias in child.names:
                        yield Import(path, child.lineno, alias.name, ("",), in_function, type_checking, comment)
                else:
                    base = child.module or ""
                    if child.level:
                        anchor = package.split(".")
                        anchor = anchor[: len(anchor) - child.level + 1]
                        base = ".".join([*anchor, base] if base else anchor)
                    names = tuple(a.name for a in child.names)
                    yield Import(path, child.lineno, base, names, in_function, type_checking, comment)
            yield from visit(child, inner, type_checking)

    yield from visit(tree, False, False)


def top(module: str) -> str:
    return module.split(".", 1)[0]


def where(imp: Import) -> str:
    return f"{imp.path.relative_to(ROOT)}:{imp.line}"


def test_layers_point_one_way() -> None:
    bad = []
    for path in source_files(*PRODUCT, "benchmarks"):
        owner = top(module_name(path))
        for imp in imports_of(path):
            target = top(imp.module)
            if target in ALLOWED and target != owner and target not in ALLOWED[owner]:
                bad.append(f"{where(imp)}: {owner} imports {imp.module}")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


@pytest.mark.parametrize("package", PRODUCT)
def test_other_packages_use_only_public_names(package: str) -> None:
    public = set(importlib.import_module(package).__all__)
    bad = []
    for path in source_files(*PRODUCT, "benchmarks"):
        if top(module_name(path)) == package:
            continue
        for imp in imports_of(path):
            if imp.module == package:
                hidden = [n for n in imp.names if n and n != "*" and n not in public]
                if hidden:
                    bad.append(f"{where(imp)}: {', '.join(hidden)} not in {package}.__all__")
            elif top(imp.module) == package and package != "kecl":
                bad.append(f"{where(imp)}: reaches into the private module {imp.module}")
    assert not bad, "\n".join(bad)


def test_every_public_name_exists() -> None:
    for package in PRODUCT:
        module = importlib.import_module(package)
        for name in getattr(module, "__all__", []):
            assert hasattr(module, name), f"{package}.__all__ names {name}, which it does not define"


def test_no_product_module_imports_the_cli() -> None:
    bad = []
    for path in source_files(*PRODUCT):
        if module_name(path).startswith(CLI_MODULES):
            continue
        bad += [where(imp) for imp in imports_of(path) if imp.module.startswith(CLI_MODULES)]
    assert not bad, "product modules importing a CLI module: " + ", ".join(bad)


def test_no_import_cycles_within_a_package() -> None:
    graph: dict[str, set[str]] = {}
    for path in source_files(*PRODUCT):
        here = module_name(path)
        deps = graph.setdefault(here, set())
        for imp in imports_of(path):
            if imp.in_function or imp.type_checking or top(imp.module) != top(here):
                continue
            for name in imp.names:
                candidate = f"{imp.module}.{name}" if name else imp.module
                target = candidate if (ROOT / Path(*candidate.split("."))).with_suffix(".py").exists() else imp.module
                if target != here and not here.startswith(target + "."):
                    deps.add(target)
    cycles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, route = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    cycles.append(" → ".join([*route, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*route, nxt]))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))


def test_imports_inside_functions_say_why_they_are_deferred() -> None:
    bad = [
        f"{where(imp)}: {imp.module}"
        for path in source_files(*PRODUCT)
        for imp in imports_of(path)
        if imp.in_function and "deferred" not in imp.comment
    ]
    assert not bad, "function-level imports without a '# deferred: why' comment:\n" + "\n".join(bad)
