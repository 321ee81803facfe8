"The benchmarks' one command in quick mode: it runs every section, writes both result files, and every row is complete."
import json, math, os, subprocess, sys, time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = {"steering", "extraction", "distillation", "judge", "study"}


@pytest.mark.slow  # about 40-70 s on 2 shared CPU cores
def test_bench_quick(tmp_path):
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                       env=dict(os.environ, HF_HUB_OFFLINE="1"), capture_output=True, text=True, timeout=600)
    secs = time.time() - t0
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    res = json.loads((tmp_path/"quick.json").read_text())
    md = (tmp_path/"quick.md").read_text()
    assert not (tmp_path/"latest.json").exists()  # quick results never replace the committed full-run results
    # the machine is recorded
    m = res["machine"]
    assert m["cpu"] and m["cores"] >= 1 and m["torch"] == torch.__version__ and m["device"] in ("cpu", "cuda")
    assert res["quick"] is True and res["matmul"]["flops_per_s"] > 0
    assert m["cpu"] in md and "| benchmark |" in md
    # every section ran, and every row has a ratio and a goal or a note
    assert SECTIONS <= {r["section"] for r in res["rows"]}
    for r in res["rows"]:
        assert r["status"] in ("ok", "missing"), r  # 'error' rows mean a benchmark raised
        assert r["goal"] or r["note"], r
        if r["status"] == "ok":
            assert isinstance(r["ratio"], (int, float)) and math.isfinite(r["ratio"]) and r["ratio"] >= 0, r
            if r["goal"]: assert isinstance(r["met"], bool), r
        else:
            assert r["section"] == "study" and "missing" in r["note"], r  # only the demo run may be absent
        assert r["name"] in md and r["name"] in p.stdout
    names = {r["name"] for r in res["rows"]}
    assert "steered_generation_tokens_per_s" in names
    assert any(n.startswith("kl_loss_peak_memory") for n in names) and any(n.startswith("lora_step") for n in names)
    # the benchmarks that compare results checked them (they assert inside; the recorded differences are small)
    ext = next(r for r in res["rows"] if r["name"].endswith("_time") and r["section"] == "extraction")
    assert ext["details"]["max_abs_diff"] <= 1e-3 * ext["details"]["max_abs_value"]
    assert secs < 120, f"quick mode took {secs:.0f} s"
