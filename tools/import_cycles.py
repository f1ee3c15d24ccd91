"""Import circles between zeekml's modules, and its largest modules.

Reads every module with :mod:`ast` (nothing is imported), builds the graph of
``zeekml.*`` imports, counting imports inside functions too (a lazy import that only
dodges a circle at load time is still a circle in the design), and prints each
strongly connected component of more than one module, plus the modules over
``--lines`` lines. ``tests/test_architecture.py`` asserts there are no circles.

Usage: ``python tools/import_cycles.py [--lines 500] [ROOT]``
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The zeekml modules ``name`` imports (a ``from pkg import mod`` names ``pkg.mod``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t and t != name and t.startswith("zeekml"):
                out.add(t)
    return out


def graph(root: Path) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    known = set(files)
    g = {m: imports(p, m, known) for m, p in files.items()}
    # a package's __init__ is imported by every submodule import: not an edge of design
    return {m: {t for t in deps if not _is_parent(t, m)} for m, deps in g.items()}


def _is_parent(t: str, m: str) -> bool:
    return m.startswith(t + ".")


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
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

    for v in sorted(g):
        if v not in index:
            visit(v)
    return sorted(out)


def packages(g: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between subpackages (``zeekml.sources``, ``zeekml.plugins`` ...)."""
    def top(m: str) -> str:
        return ".".join(m.split(".")[:2])

    out: dict[str, set[str]] = {}
    for m, deps in g.items():
        out.setdefault(top(m), set()).update(top(d) for d in deps if top(d) != top(m))
    return out


def module_lines(root: Path) -> dict[str, int]:
    """Lines of every module under ``root`` (docstrings and comments count: they are read too)."""
    return {module_name(p, root): len(p.read_text(encoding="utf-8").splitlines())
            for p in sorted(root.rglob("*.py"))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default=str(REPO / "zeekml"))
    ap.add_argument("--lines", type=int, default=500)
    args = ap.parse_args(argv)
    root = Path(args.root).resolve()
    g = graph(root)
    for what, comps in (("modules", cycles(g)), ("packages", cycles(packages(g)))):
        print(f"import circles between {what}: {len(comps)}")
        for c in comps:
            print("  " + " <-> ".join(c))
    big = sorted(((n, m) for m, n in module_lines(root).items()), reverse=True)
    print(f"modules over {args.lines} lines:")
    for n, m in big:
        if n > args.lines:
            print(f"  {m}: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
