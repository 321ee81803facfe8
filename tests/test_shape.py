"The package's shape (issue [3/5]): imports read from the source point down; no cycle; no library module imports a study module."
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1]/"persona_vectors"

# The library knows nothing of studies; the study layer (config, run directory, stage groups, report, plan, CLI) sits on it.
LIBRARY = {"records", "parallel", "models", "generation", "artifacts", "judge", "extraction", "steering", "trajectories", "kl_losses",
           "distillation", "distill_eval", "monitoring", "interop", "resources"}
STUDY = {"config", "checks", "run_directory", "pipeline", "analysis", "monitoring_study", "vector_methods_study", "distillation_shapes", "resource_plan", "cli"}


def imports() -> dict[str, set[str]]:
    "module -> the package modules it imports anywhere in its source (top level or inside a function), read with `ast`."
    mods = {p.stem: p for p in PKG.glob("*.py") if not p.stem.startswith("_")}
    out = {}
    for m, p in mods.items():
        found = set()
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, ast.ImportFrom):
                parts = (node.module or "").split(".")
                if node.level == 1: names = [parts[0]] if parts[0] else [a.name for a in node.names]
                elif parts[0] == "persona_vectors": names = [parts[1]] if len(parts) > 1 else [a.name for a in node.names]
                else: continue
            elif isinstance(node, ast.Import):
                names = [a.name.split(".")[1] for a in node.names if a.name.startswith("persona_vectors.")]
            else: continue
            found |= {n for n in names if n in mods and n != m}
        out[m] = found
    return out


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    "One import cycle as a list of modules (first == last), or None."
    state, stack = {}, []
    def visit(m):
        state[m] = "open"; stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open": return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)): return c
        state[m] = "done"; stack.pop()
    for m in sorted(graph):
        if m not in state and (c := visit(m)): return c
    return None


def test_every_module_has_a_layer():
    g = imports()
    test_ = set(g) - LIBRARY - STUDY
    assert not test_, f"modules in no layer: {sorted(test_)}: add each to LIBRARY or STUDY in tests/test_shape.py"
    assert not (LIBRARY & STUDY)


def test_no_import_cycle():
    c = cycle(imports())
    assert c is None, "import cycle: " + " -> ".join(c)


def test_library_imports_no_study_module():
    bad = [f"{m} -> {n}" for m, ns in sorted(imports().items()) if m in LIBRARY for n in sorted(ns) if n in STUDY]
    assert not bad, "library modules import study modules: " + ", ".join(bad)


def test_the_checks_catch_what_they_claim():
    "The two checks on made-up graphs: a cycle is found and named; a clean graph passes."
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    g = imports()
    assert "pipeline" in g["analysis"] and "models" in g["steering"]  # the reader sees both import forms


def notebook_of() -> dict[str, str]:
    "module -> the notebook that exports it (its `#| default_exp`)."
    out = {}
    for nb in (PKG.parent/"nbs").glob("*.ipynb"):
        for line in nb.read_text().splitlines():
            if "#| default_exp " in line: out[line.split("#| default_exp ")[1].split("\\n")[0].strip('", ')] = nb.stem; break
    return out


def test_notebooks_are_numbered_in_the_order_data_flows():
    "Every import points at a module whose notebook comes earlier: the sidebar reads from the base up."
    nbs = notebook_of()
    assert set(imports()) <= set(nbs), f"modules without a notebook: {sorted(set(imports()) - set(nbs))}"
    bad = [f"{m} ({nbs[m]}) -> {n} ({nbs[n]})" for m, ns in sorted(imports().items()) for n in sorted(ns) if nbs[n] >= nbs[m]]
    assert not bad, "imports that point at a later notebook: " + ", ".join(bad)


def undocumented(mod) -> list[str]:
    "The house style's gaps in one module: exported functions and classes without a one-line docstring, or with a parameter without a docment."
    import inspect
    from fastcore.docments import docments
    gaps = []
    for name in getattr(mod, "__all__", []):
        o = getattr(mod, name)
        if not (inspect.isfunction(o) or inspect.isclass(o)) or o.__module__ != mod.__name__: continue
        doc = inspect.getdoc(o) if inspect.isfunction(o) else o.__dict__.get("__doc__")
        if not doc or "\n" in doc.strip(): gaps.append(f"{name}: {'no' if not doc else 'a multi-line'} docstring"); continue
        f = o if inspect.isfunction(o) else o.__dict__.get("__init__")  # a dataclass's generated __init__ has no source: its fields carry the docments
        if not inspect.isfunction(f): continue
        try: dm = docments(f, full=True, args_kwargs=True)
        except OSError: continue  # generated code
        miss = [p for p, v in dm.items() if p not in ("return", "self", "cls") and not v["docment"]]
        if miss: gaps.append(f"{name}: no docment on {', '.join(miss)}")
    return gaps


def test_every_exported_function_has_a_docstring_and_docments():
    "Each exported function or class has a one-line docstring and a docment (the comment after it) on each parameter: what the docs pages show."
    import importlib
    gaps = {m: g for m in sorted(LIBRARY | STUDY) if (g := undocumented(importlib.import_module(f"persona_vectors.{m}")))}
    assert not gaps, gaps


def test_the_docment_check_catches_what_it_claims(tmp_path, monkeypatch):
    "A made-up module: a missing docment, a missing docstring and a multi-line one are each named; a documented function is not."
    (tmp_path/"made_up_style.py").write_text(
        '__all__ = ["good", "bare", "nodoc", "long"]\n'
        'def good(a: int, # an a\n         **kw, # passed on\n        ):\n    "Fine."\n'
        'def bare(a: int, b=2):\n    "No docments."\n'
        'def nodoc(a, # an a\n         ): pass\n'
        'def long(a, # an a\n        ):\n    """Two\n    lines."""\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    gaps = undocumented(importlib.import_module("made_up_style"))
    assert gaps == ["bare: no docment on a, b", "nodoc: no docstring", "long: a multi-line docstring"], gaps
