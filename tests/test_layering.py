"""Imports point one way, form no cycles, and stay out of other packages' private modules.

Read from the source with ``ast`` (nothing is imported), counting imports inside functions
too: a lazy import still ties two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["imagesets", "experiments", "meta_features", "recommender"]  # each may import only earlier ones
RANK = {p: i for i, p in enumerate(ORDER)}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in ORDER:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _is_package(mod: str) -> bool:
    return MODULES[mod].name == "__init__.py"


def _imports(mod: str) -> list[tuple[str, int, list[str]]]:
    """(imported module, line, names taken from it) for each import of a catscans module."""
    tree = ast.parse(MODULES[mod].read_text(encoding="utf-8"), filename=str(MODULES[mod]))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = mod.split(".") if _is_package(mod) else mod.split(".")[:-1]
                here = here[: len(here) - (node.level - 1)]
                base = ".".join(here + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                # ``from pkg import module`` imports the module; ``from pkg import name`` the package
                found.append((sub, node.lineno, []) if sub in MODULES else (base, node.lineno, [a.name]))
    return [(m, line, names) for m, line, names in found if m.split(".")[0] in RANK]


EDGES = {mod: _imports(mod) for mod in MODULES}


def _where(mod: str, line: int) -> str:
    return f"{MODULES[mod].relative_to(ROOT)}:{line}"


def test_modules_found():
    assert {"imagesets", "meta_features", "experiments", "recommender", "recommender.cli"} <= set(MODULES)


def test_packages_import_only_lower_ones():
    bad = [f"{_where(m, line)}: {m} imports {t}"
           for m, edges in EDGES.items() for t, line, _ in edges
           if RANK[t.split(".")[0]] > RANK[m.split(".")[0]]]
    assert not bad, "imports against the order " + " < ".join(ORDER) + ":\n" + "\n".join(bad)


def test_no_private_modules_of_other_packages():
    bad = []
    for m, edges in EDGES.items():
        for t, line, names in edges:
            if t.split(".")[0] == m.split(".")[0]:
                continue
            private = [p for p in t.split(".")[1:] if p.startswith("_")] + [n for n in names if n.startswith("_")]
            if private:
                bad.append(f"{_where(m, line)}: {m} imports {t} {names or ''}".rstrip())
    assert not bad, "import the package's public names instead:\n" + "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_between_modules():
    graph = {m: {t for t, _, _ in edges if t in MODULES and t != m} for m, edges in EDGES.items()}
    assert not _cycles(graph), "import cycles: " + "; ".join(" <-> ".join(c) for c in _cycles(graph))


def _unit(mod: str) -> str:
    """A sub-package stands for all its modules; a top-level package's own modules stand alone."""
    parts = mod.split(".")
    if len(parts) <= 2 and not (len(parts) == 2 and _is_package(mod)):
        return mod
    return ".".join(parts[:2])


def test_no_import_cycles_between_subpackages():
    graph: dict[str, set[str]] = {}
    for m, edges in EDGES.items():
        for t, _, _ in edges:
            if t in MODULES and _unit(t) != _unit(m):
                graph.setdefault(_unit(m), set()).add(_unit(t))
    assert not _cycles(graph), "sub-package cycles: " + "; ".join(" <-> ".join(c) for c in _cycles(graph))


def test_checker_sees_what_it_should():
    """The checks would fire: a known lazy import and a relative one resolve as expected."""
    assert any(t == "recommender.kb.attach" for t, _, _ in EDGES["recommender.kb"])  # inside __getattr__
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _unit("recommender.model.meta_dataset") == "recommender.model"
    assert _unit("recommender.model") == "recommender.model"
    assert _unit("recommender.recommend") == "recommender.recommend"
    assert _unit("recommender") == "recommender"
