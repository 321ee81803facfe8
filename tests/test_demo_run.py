"The committed demo run (nbs/demo_run) is what its report, the README and the home page show: no stale copies."
import json, re, shutil
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT/"nbs"/"demo_run"


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    "A copy of the committed run without its report, tables and figures, rebuilt by write_report (once for the tests below)."
    from persona_vectors.analysis import write_report
    copy = tmp_path_factory.mktemp("rebuilt")/"demo_run"
    shutil.copytree(DEMO, copy, ignore=shutil.ignore_patterns("tables", "figures", "report.md", "report.html"))
    write_report(copy)
    return copy


def test_tables_and_report_are_rebuilt_identically(rebuilt):
    "Rebuilding the report from the committed manifest and records gives the committed tables and report.md, byte for byte."
    copy = rebuilt
    committed = sorted(p.relative_to(DEMO).as_posix() for p in (DEMO/"tables").iterdir())
    rebuilt = sorted(p.relative_to(copy).as_posix() for p in (copy/"tables").iterdir())
    assert committed == rebuilt, (committed, rebuilt)
    for rel in committed:
        assert (copy/rel).read_text() == (DEMO/rel).read_text(), f"nbs/demo_run/{rel} is stale: rebuild it with write_report"
    assert (copy/"report.md").read_text() == (DEMO/"report.md").read_text(), "nbs/demo_run/report.md is stale"
    for p in (copy/"figures").glob("*.png"):  # every figure the report draws is committed, as PNG and as PDF
        for ext in (".png", ".pdf"):
            assert (DEMO/"figures"/p.with_suffix(ext).name).exists(), f"nbs/demo_run/figures/{p.with_suffix(ext).name} is missing"


def test_report_page_is_rebuilt_identically(rebuilt):
    """report.html is what write_report writes from the committed files, its inline figures aside: their SVG is
    matplotlib's drawing (another matplotlib version draws other bytes), so they are checked to be there, one per figure."""
    copy = rebuilt
    svg = lambda page: re.sub(r"<svg\b.*?</svg>", "<svg/>", page, flags=re.S)
    committed, rebuilt = (DEMO/"report.html").read_text(), (copy/"report.html").read_text()
    assert svg(committed) == svg(rebuilt), "nbs/demo_run/report.html is stale: rebuild it with write_report"
    figs = re.findall(r"\(figures/(.+?)\.png\)", (DEMO/"report.md").read_text())
    assert figs and re.findall(r'<figure id="fig-([^"]+)"><svg ', committed) == figs


def test_a_pdf_for_every_figure():
    "Every figure of the committed run has its PDF (for papers) beside its PNG, and the page links it."
    page = (DEMO/"report.html").read_text()
    pngs = sorted((DEMO/"figures").glob("*.png"))
    assert len(pngs) >= 5
    for png in pngs:
        pdf = png.with_suffix(".pdf")
        assert pdf.exists() and pdf.read_bytes().startswith(b"%PDF-"), f"nbs/demo_run/figures/{pdf.name} is missing"
        assert f'<a href="figures/{pdf.name}">PDF</a>' in page


def test_readme_and_home_page_show_the_committed_run():
    "The headline block in README.md and in nbs/index.ipynb's saved output is `headline(nbs/demo_run)` as it is now."
    from persona_vectors.analysis import headline
    h = headline(DEMO)
    assert h in (ROOT/"README.md").read_text(), "README.md's demo-run numbers differ from nbs/demo_run: re-execute index.ipynb"
    nb = json.loads((ROOT/"nbs"/"index.ipynb").read_text())
    outs = ["".join(o.get("data", {}).get("text/markdown", "")) for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert any(h in o for o in outs), "nbs/index.ipynb's saved headline differs from nbs/demo_run"
    # the numbers the README's prose quotes are in the manifest
    m = json.loads((DEMO/"manifest.json").read_text())
    assert f"AUROC {m['vector']['summary']['auroc_at_monitor_layer']:.2f}" in h


COMMITTED_SECTIONS = {  # each committed run beside the demo: the report sections its tables come from
    "gap_run": ["## Objectives at equal compute", "## Where the gap lives", "## The open question"],
    "monitor_run": ["## Monitoring and prevention", "the fine-tuning shift as the paper measures it"],
    "shape_run": ["## Students that carry the offset", "## Ranks at their chosen learning rates", "## Step budgets",
                  "## Trajectory counts, with intervals", "## Where the gap lives"],
    "shift_run": ["## Monitoring and prevention", "over the 7 data-only fine-tunes"],
}


@pytest.mark.parametrize("run", sorted(COMMITTED_SECTIONS))
def test_committed_run_report_is_rebuilt_identically(tmp_path, run):
    "A committed run (nbs/<run>) rebuilds from its records (manifest, answers, diagnostics) to its committed report and every table."
    from persona_vectors.analysis import write_report
    src = ROOT/"nbs"/run
    copy = tmp_path/run
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("tables", "figures", "report.md", "report.html"))
    write_report(copy)
    assert (copy/"report.md").read_text() == (src/"report.md").read_text(), f"nbs/{run}/report.md is stale: rebuild it"
    for t in sorted((src/"tables").iterdir()): assert (copy/"tables"/t.name).read_bytes() == t.read_bytes(), t.name
    rep = (src/"report.md").read_text()
    for s in COMMITTED_SECTIONS[run]: assert s in rep, (run, s)


@pytest.mark.slow
def test_readme_quick_start_runs_on_the_committed_vector():
    "The committed run holds its persona vector (the file its manifest lists), and the README's quick start steers with it."
    import hashlib
    vec = DEMO/"vector"/"persona.safetensors"
    assert vec.exists(), "nbs/demo_run/vector/persona.safetensors is missing: refresh the run with refresh_demo_run (15_analysis), which copies it"
    listed = json.loads((DEMO/"manifest.json").read_text())["vector"]["outputs"]["persona.safetensors"]
    assert hashlib.sha256(vec.read_bytes()).hexdigest() == listed["sha256"], "nbs/demo_run/vector/persona.safetensors is not the file its manifest lists"
    code = re.search(r"## Quick start in Python\n\n```python\n(.*?)```", (ROOT/"README.md").read_text(), re.S)[1]
    assert "runs/demo/vector/persona.safetensors" in code, code
    said = []
    exec(compile(code.replace("runs/demo/vector/persona.safetensors", str(vec)), "README.md quick start", "exec"),
         {"print": lambda *a, **k: said.append(" ".join(map(str, a)))})
    assert len(said) == 2 and all(s.strip() for s in said), said  # the plain answer, then the steered one
    assert said[0] != said[1], said  # greedy decoding: the steering changed the answer
    print(*said, sep="\n---\n")


@pytest.mark.slow  # about 30 s: 64 answers of SmolLM2
@pytest.mark.parametrize("run,setting", [("demo_run", "steer/L15_a2"), ("gap_run", "steer/base")])
def test_committed_answers_regenerate_with_this_code(run, setting, tmp_path):
    "A committed run's evaluation answers come out of today's code with the same ids: the copy is not stale (generation, sampler, steering)."
    from persona_vectors.config import load_config
    from persona_vectors.pipeline import Study
    from persona_vectors.artifacts import load_trait
    from persona_vectors.steering import evaluate, Steering
    src = ROOT/"nbs"/run
    shutil.copytree(src/"vector", tmp_path/"run"/"vector")
    s = Study(load_config(str(src)), tmp_path/"run", quiet=True, progress=False)
    ev, st = s.cfg.evaluation, s.cfg.steering
    old = [json.loads(l) for l in (src/setting/"answers.jsonl").read_text().splitlines()]
    settings = [Steering(s.steering_vector(), **{k: old[0]["steering"][0][k] for k in ("layer", "alpha", "positions")})] if old[0]["steering"] else []
    m, t = s.model()
    evaluate(m, t, load_trait(s.cfg.trait.name).eval_questions[:ev.n_questions], n=ev.n_samples, sampling=s.sampling(ev, 1),
             settings=settings, monitor=None, label=setting, store=tmp_path/"new", batch_size=s.generate_batch(ev), progress=False)
    key = lambda r: (r["question_index"], r["sample_index"])
    new = {key(r): r["response_ids"] for r in map(json.loads, (tmp_path/"new"/"answers.jsonl").read_text().splitlines())}
    differ = [key(r) for r in old if new.get(key(r)) != r["response_ids"]]
    assert len(new) == len(old) and not differ, f"{run}/{setting}: {len(differ)} of {len(old)} answers differ from the committed ids: refresh the run"
