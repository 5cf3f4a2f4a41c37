"Package-level promises: importing the kit loads neither torch nor jax; dependencies point one way; modules stay small."
import ast, subprocess, sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "sma_kit"
BACKEND_FREE = ["sma_kit", "sma_kit.config", "sma_kit.data", "sma_kit.filters", "sma_kit.tokenizer", "sma_kit.corpus",
                "sma_kit.checkpoint", "sma_kit.eval", "sma_kit.code_eval", "sma_kit.generate", "sma_kit.qa_eval",
                "sma_kit.manager", "sma_kit.cli", "sma_kit.project_cli", "sma_kit.widgets", "sma_kit.jobs", "sma_kit.backend",
                "sma_kit.hub", "sma_kit.job_report", "sma_kit.kaggle", "sma_kit.kaggle_setup", "sma_kit.chat",
                "sma_kit.sandbox", "sma_kit.harness", "sma_kit.split", "sma_kit.retrieval", "sma_kit.rag", "sma_kit.mlm", "sma_kit.encoder"]

# Debts a change under way may allow-list (a cycle, a long module); empty on main, and each test fails once an entry is no longer needed.
KNOWN_CYCLES = []
KNOWN_LONG = set()
MAX_LINES = 450


def test_backend_free_imports():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in BACKEND_FREE) +
            "bad = sorted(m for m in ('torch', 'jax', 'flax', 'torch_xla') if m in sys.modules)\n"
            "print(','.join(bad))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "", f"importing the kit loaded {p.stdout.strip()}"


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def kit_imports(path: Path) -> set[str]:
    "The sma_kit modules `path` imports anywhere in its body (module level and inside functions)."
    me, is_pkg = module_name(path), path.name == "__init__.py"
    base = me.split(".") if is_pkg else me.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level: mod = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else: mod = node.module or ""
            names = [mod] + [f"{mod}.{a.name}" for a in node.names]   # `from . import x` / `from sma_kit.torch import train`
        elif isinstance(node, ast.Import): names = [a.name for a in node.names]
        else: continue
        out |= {n for n in names if n.split(".")[0] == "sma_kit"}
    return out


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for m, p in files.items():
        deps = set()
        for n in kit_imports(p):
            while n and n not in files: n = n.rpartition(".")[0]      # `from sma_kit.x import name` -> sma_kit.x
            if n and n != m: deps.add(n)
        graph[m] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    "Every strongly connected component with more than one module (Tarjan), each sorted."
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index: visit(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(sorted(comp))
    for v in sorted(graph):
        if v not in index: visit(v)
    return sorted(out)


def test_cycle_finder_finds_cycles(tmp_path):
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    pkg = tmp_path / "sma_kit"; (pkg / "torch").mkdir(parents=True)
    (pkg / "torch" / "__init__.py").write_text("")
    (pkg / "torch" / "xla.py").write_text("def f():\n    from .train import g\n")
    (pkg / "torch" / "train.py").write_text("from sma_kit.torch import xla\n")
    global PKG
    old, PKG = PKG, pkg
    try: assert cycles(import_graph()) == [["sma_kit.torch.train", "sma_kit.torch.xla"]]
    finally: PKG = old


def test_no_import_cycles():
    found = cycles(import_graph())
    new = [c for c in found if c not in KNOWN_CYCLES]
    assert not new, f"import cycles among sma_kit modules: {new}"
    assert not [c for c in KNOWN_CYCLES if c not in found], "a known cycle is gone: remove it from KNOWN_CYCLES"


def test_modules_stay_small():
    sizes = {str(p.relative_to(PKG.parent)): len(p.read_text().splitlines()) for p in PKG.rglob("*.py") if p.name != "_modidx.py"}
    long = {p for p, n in sizes.items() if n > MAX_LINES}
    assert long <= KNOWN_LONG, f"modules over {MAX_LINES} lines: {sorted((p, sizes[p]) for p in long - KNOWN_LONG)}"
    assert long == KNOWN_LONG, f"no longer over {MAX_LINES} lines, remove from KNOWN_LONG: {sorted(KNOWN_LONG - long)}"
