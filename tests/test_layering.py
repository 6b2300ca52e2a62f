"""The layering docs/architecture.md writes down, as the code keeps it: no import circles between imsim's modules,
no private name imported across modules. (The layer and third-party contracts are import-linter's, in
pyproject.toml, run by scripts/test.sh; this module checks what import-linter does not.)"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_circle_and_nothing_else():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_import_circles_between_modules():
    sys.path.insert(0, str(ROOT))
    graph = grimp.build_graph("imsim", "workers", exclude_type_checking_imports=True)
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m) if i in graph.modules} for m in graph.modules}
    assert _cycles(edges) == []


def test_no_private_name_is_imported_across_modules():
    crossings = []
    for path in sorted([*ROOT.joinpath("imsim").rglob("*.py"), *ROOT.joinpath("workers").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                crossings += [
                    f"{path.relative_to(ROOT)}:{node.lineno}: from {'.' * node.level}{node.module or ''} import {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert crossings == []


def _contracts() -> list[dict]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def _top_level_modules() -> set[str]:
    """imsim's modules and subpackages, one level down (what the layers contract names)."""
    return {
        f"imsim.{p.stem if p.is_file() else p.name}"
        for p in ROOT.joinpath("imsim").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())
    }


def _modules_below(package: str) -> set[str]:
    """The modules directly inside an imsim package (``imsim.jobs`` → ``imsim.jobs.queue`` ...)."""
    folder = ROOT.joinpath(*package.split("."))
    return {f"{package}.{p.stem}" for p in folder.glob("*.py") if p.stem != "__init__"}


# Each third-party rule: the modules allowed to import it (every other module must be named as a source).
THIRD_PARTY_HOMES = {
    "pymilvus": {"imsim.store"},
    "redis": {"imsim.jobs"},
    "celery": {"imsim.jobs.queue"},
    "boto3": {"imsim.sources.s3"},
    "fastapi": {"imsim.api"},
    "httpx": {"imsim.client.remote"},
}


def _covered(module: str, sources: set[str]) -> bool:
    return any(module == s or module.startswith(s + ".") for s in sources)


def test_every_module_has_a_layer_and_is_held_to_every_third_party_rule():
    """import-linter checks only the modules a contract names: a new module left out would escape every rule. Each
    contract is one rule (one library and what stands for it), and names as sources every module but its home."""
    contracts = _contracts()
    modules = _top_level_modules()
    layers = next(c for c in contracts if c["type"] == "layers" and "containers" not in c)["layers"]
    layered = {m.strip() for layer in layers for m in layer.split("|")}
    assert modules - layered == set(), "give each new module a layer in pyproject.toml [tool.importlinter]"
    assert layered - modules == set(), "a layer names a module that no longer exists"
    seen = set()
    for contract in contracts:
        library = contract.get("forbidden_modules", [""])[0]
        home = THIRD_PARTY_HOMES.get(library)
        if home is None:
            continue
        seen.add(library)
        sources = set(contract["source_modules"])
        # every module is a source or lies in the home; a home inside a package leaves its siblings as sources
        wanted = modules | {m for h in home if h.count(".") > 1 for m in _modules_below(h.rsplit(".", 1)[0])}
        missing = {m for m in wanted if not _covered(m, sources) and not any(_covered(m, {h}) for h in home)}
        missing -= {h.rsplit(".", 1)[0] for h in home if h.count(".") > 1}  # the package holding the home: via siblings
        assert not missing, f"{contract['name']!r} does not name {sorted(missing)} as sources"
    assert seen == set(THIRD_PARTY_HOMES), f"no contract for {sorted(set(THIRD_PARTY_HOMES) - seen)}"


def test_the_package_layers_name_every_module_of_their_package():
    for contract in _contracts():
        for container in contract.get("containers", []):
            layered = {f"{container}.{m.strip()}" for layer in contract["layers"] for m in layer.split("|")}
            assert _modules_below(container) == layered, f"{contract['name']!r}: {sorted(_modules_below(container) ^ layered)}"


def test_the_layer_picture_in_the_architecture_page_is_the_enforced_one():
    text = (ROOT / "docs" / "architecture.md").read_text()
    start = text.index("Imports point down these layers")
    block = text[text.index("```\n", start) + 4 : text.index("```", text.index("```\n", start) + 4)]
    drawn = [" | ".join(m.strip() for m in line.split("|")) for line in block.strip().splitlines()]
    layers = next(c for c in _contracts() if c["type"] == "layers" and "containers" not in c)["layers"]
    enforced = [" | ".join(m.strip().removeprefix("imsim.") for m in layer.split("|")) for layer in layers]
    assert drawn == enforced, "docs/architecture.md's layer picture differs from pyproject.toml's contract"


# The shape docs/architecture.md promises (design step three): each figure as the code has it, measured by `ast`.
MAX_TOP_LEVEL_MODULES, MAX_OBJECT_LINES, MAX_PUBLIC_METHODS, MAX_FUNCTION_LINES = 20, 300, 30, 80
# Settings composes the platform's fields by section (declarations, each section owned by its component); with its
# bases it is longer than an object of behaviour may be, and it is the one exception, said in architecture.md.
LONG_OBJECTS = {"Settings"}


def _definitions() -> tuple[dict[str, tuple[int, set[str], list[str]]], dict[str, int]]:
    classes: dict[str, tuple[int, set[str], list[str]]] = {}
    functions: dict[str, int] = {}
    for path in sorted((ROOT / "imsim").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                public = {
                    n.name
                    for n in node.body
                    if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and not n.name.startswith("_")
                }
                bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
                classes.setdefault(node.name, ((node.end_lineno or node.lineno) - node.lineno + 1, public, bases))
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                where = f"{path.relative_to(ROOT)}:{node.name}"
                functions[where] = max(functions.get(where, 0), (node.end_lineno or node.lineno) - node.lineno + 1)
    return classes, functions


def test_the_hall_is_small_objects_are_narrow_and_functions_short():
    top = [p for p in (ROOT / "imsim").iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()]
    assert len([p for p in top if p.suffix == ".py"]) <= MAX_TOP_LEVEL_MODULES, sorted(p.name for p in top)
    classes, functions = _definitions()

    def whole(name: str, seen: frozenset[str] = frozenset()) -> tuple[int, set[str]]:
        if name not in classes or name in seen:
            return 0, set()
        lines, public, bases = classes[name]
        public = set(public)
        for base in bases:
            more, methods = whole(base, seen | {name})
            lines, public = lines + more, public | methods
        return lines, public

    for name in classes:
        lines, public = whole(name)
        assert len(public) <= MAX_PUBLIC_METHODS, (name, sorted(public))
        assert name in LONG_OBJECTS or lines <= MAX_OBJECT_LINES, (name, lines)
    long = {f: n for f, n in functions.items() if n > MAX_FUNCTION_LINES}
    assert not long, long
    assert functions["imsim/api/app.py:create_app"] <= 60
