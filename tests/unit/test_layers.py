"""The house's layers, pinned: no import cycles, the "never" arrows, no module over 450 lines.

Layers, top to bottom: cli -> stages -> targets -> pieces (cluster, aws, spot, plan, observe,
datajob, iac) -> base (state, ui, errors, labid, procs, context, checks, ...). Every import is read
with ``ast``: module level, inside functions, and under ``if TYPE_CHECKING:`` (type-only imports
cannot make a runtime cycle, so they are left out of the cycle search, but they still obey the
layer rules).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PKG = SRC / "raylab"

MAX_LINES = 450  # every module, no exceptions: a longer one is split

PIECES = ("cluster", "aws", "spot", "plan", "observe", "datajob", "iac", "room", "rehearsal")


def layer(module: str) -> str:
    """The layer a module of raylab belongs to (anything not in a named package is base)."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    if top == "cli" or module == "raylab.__main__":
        return "cli"
    if top == "stages":
        return "stages"
    if top == "targets":
        return "targets"
    if top in PIECES:
        return "pieces"
    return "base"


# (importer layer, imported layer, why), from house.json's "never" list, plus base's own rule that it
# knows nothing above it.
NEVER = (
    ("targets", "stages", "targets sit below stages"),
    ("targets", "cli", "targets sit below the CLI"),
    ("pieces", "targets", "pieces know no target"),
    ("pieces", "stages", "pieces know no stage"),
    ("pieces", "cli", "no piece knows the CLI"),
    ("base", "targets", "the base knows nothing above it"),
    ("base", "stages", "the base knows nothing above it"),
    ("base", "cli", "the base knows nothing above it"),
    ("base", "pieces", "the base knows nothing above it"),
)

# Type-only imports that cross a "never" arrow on purpose, each with its reason.
# None today: the target's contract (``raylab.target``) lives in the base, its implementations above.
TYPE_ONLY_ALLOWED: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    line: int
    type_only: bool
    package_of: str | None = None  # set on the edge to a package Python runs on the way to this module


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest known module a dotted name starts with (``a.b.func`` -> ``a.b``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Edge]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    edges: list[Edge] = []

    def visit(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_only)
            return
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from pkg import sub` imports the submodule when there is one, else a name of pkg.
            targets = [f"{prefix}.{a.name}" for a in node.names]
        for t in targets:
            if not t.startswith("raylab"):
                continue
            dst = _resolve(t, modules)
            if dst and dst != module:
                edges.append(Edge(module, dst, node.lineno, type_only))  # type: ignore[attr-defined]  # Import/ImportFrom have lineno
                # Python runs every package on the way down (`raylab.targets.local.render` runs
                # `targets/local/__init__.py` first), except the importer's own packages, which are
                # already loaded by the time it runs.
                own = module.split(".")
                parts = dst.split(".")
                for i in range(2, len(parts)):
                    pkg = ".".join(parts[:i])
                    if parts[:i] != own[:i] and pkg in modules:
                        edges.append(Edge(module, pkg, node.lineno, type_only, dst))  # type: ignore[attr-defined]  # as above
        for child in ast.iter_child_nodes(node):
            visit(child, type_only)

    visit(tree, False)
    return edges


def graph() -> list[Edge]:
    modules = all_modules()
    return [e for m, p in modules.items() for e in imports_of(m, p, modules)]


def cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), over runtime imports."""
    succ: dict[str, set[str]] = {}
    for e in edges:
        if not e.type_only:
            succ.setdefault(e.src, set()).add(e.dst)
            succ.setdefault(e.dst, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(succ[v]):
            if w not in index:
                strong(w)
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

    for v in sorted(succ):
        if v not in index:
            strong(v)
    return out


def violations(edges: list[Edge]) -> list[str]:
    found = []
    for e in edges:
        if e.package_of:  # same layer as the module named, whose own edge is checked
            continue
        for a, b, why in NEVER:
            if layer(e.src) == a and layer(e.dst) == b:
                if e.type_only and (e.src, e.dst) in TYPE_ONLY_ALLOWED:
                    continue
                kind = "type-only import" if e.type_only else "import"
                found.append(f"{e.src}:{e.line} {kind} of {e.dst} ({a} -> {b}: {why})")
    return sorted(set(found))


def line_count(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_the_walker_sees_function_level_and_type_only_imports():
    edges = graph()
    ctx_edges = {(e.dst, e.type_only) for e in edges if e.src == "raylab.cli.main"}
    assert ctx_edges, "the walker found no imports in cli/main.py"
    assert any(e.type_only for e in edges), "no `if TYPE_CHECKING:` import was seen"
    # function-level: stages/registry.find imports errors inside the function
    assert any(e.src == "raylab.stages.registry" and e.dst == "raylab.errors" for e in edges)


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_layer_rules_hold():
    found = violations(graph())
    assert not found, "layer rules broken:\n" + "\n".join(found)


def test_type_only_exceptions_are_still_needed():
    edges = {(e.src, e.dst) for e in graph() if e.type_only}
    stale = [k for k in TYPE_ONLY_ALLOWED if k not in edges]
    assert not stale, f"drop these from TYPE_ONLY_ALLOWED, the import is gone: {stale}"


def test_no_module_over_the_line_limit():
    too_big = [f"{mod}: {n} lines > {MAX_LINES}" for mod, path in all_modules().items()
               if (n := line_count(path)) > MAX_LINES]
    assert not too_big, "modules too long (split them):\n" + "\n".join(too_big)


def test_every_type_ignore_names_its_code_and_says_why():
    import re

    ok = re.compile(r"# type: ignore\[[-a-z, ]+\]  # \S")
    bare = [f"{mod}:{n}" for mod, path in all_modules().items()
            for n, line in enumerate(path.read_text().splitlines(), 1)
            if "# type: ignore" in line and not ok.search(line)]
    assert not bare, "write `# type: ignore[code]  # reason` on:\n" + "\n".join(bare)


if __name__ == "__main__":  # a report: python tests/unit/test_layers.py
    g = graph()
    cs = cycles(g)
    print(f"{len(cs)} cycle(s)")
    for c in cs:
        print(f"  {len(c)}: " + " ".join(c))
    vs = violations(g)
    print(f"{len(vs)} layer violation(s)")
    for v in vs:
        print("  " + v)
    for mod, path in all_modules().items():
        if line_count(path) > MAX_LINES:
            print(f"  over {MAX_LINES}: {mod} {line_count(path)}")
