"The committed demo run (nbs/demo_run) is what its report, the README and the home page show: no stale copies."
import json, shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT/"nbs"/"demo_run"


def test_tables_and_report_are_rebuilt_identically(tmp_path):
    "Rebuilding the report from the committed manifest and records gives the committed tables and report.md, byte for byte."
    from persona_vectors.analysis import write_report
    copy = tmp_path/"demo_run"
    shutil.copytree(DEMO, copy, ignore=shutil.ignore_patterns("tables", "figures", "report.md"))
    write_report(copy)
    committed = sorted(p.relative_to(DEMO).as_posix() for p in (DEMO/"tables").iterdir())
    rebuilt = sorted(p.relative_to(copy).as_posix() for p in (copy/"tables").iterdir())
    assert committed == rebuilt, (committed, rebuilt)
    for rel in committed:
        assert (copy/rel).read_text() == (DEMO/rel).read_text(), f"nbs/demo_run/{rel} is stale: rebuild it with write_report"
    assert (copy/"report.md").read_text() == (DEMO/"report.md").read_text(), "nbs/demo_run/report.md is stale"
    for p in (copy/"figures").glob("*.png"):  # every figure the report draws is committed
        assert (DEMO/"figures"/p.name).exists(), f"nbs/demo_run/figures/{p.name} is missing"


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
