"The vector-method stages (09_interop) end to end on a tiny model through the study runner: files, sidecars, the report section."
import json
from pathlib import Path
import pytest
from small_study import SMALL


@pytest.mark.slow  # about 20 s on 2 cores
def test_vector_method_stages_on_a_tiny_model(tmp_path):
    import tomllib, torch, pandas as pd
    from persona_vectors.models import tiny_model
    from persona_vectors.pipeline import validate_config, Study, plan
    from persona_vectors.extraction import load_vector
    m, t = tiny_model("llama"); m.save_pretrained(tmp_path/"model"); t.save_pretrained(tmp_path/"model")
    raw = tomllib.loads(SMALL.format(model=tmp_path/"model"))
    raw["extraction"].update(methods=["pca_diff", "probe"])
    raw["stages"] = ["artifacts", "extraction", "vector", "sweeps", "vector_methods", "report"]
    cfg = validate_config(raw)
    assert "vector methods" in plan(cfg).stage.tolist()
    s = Study(cfg, tmp_path/"run", quiet=True, progress=False); s.run_stages()
    run = tmp_path/"run"; man = json.loads((run/"manifest.json").read_text())
    assert sorted(k for k in man if k.startswith("vector_methods")) == ["vector_methods", "vector_methods/pca_diff", "vector_methods/probe"]
    # each method's vector in the project's format, the method in the sidecar, at the mean difference's norm
    vs = {k: load_vector(run/"vector_methods"/f"{k}.safetensors") for k in ("mean_diff", "pca_diff", "probe")}
    assert all(meta["method"] == k and list(v) == ["response_avg"] for k, (v, meta) in vs.items())
    md = vs["mean_diff"][0]["response_avg"]
    for k in ("pca_diff", "probe"):
        assert torch.allclose(vs[k][0]["response_avg"].norm(dim=-1), md.norm(dim=-1), rtol=1e-5)
    # the mean difference is `extract`'s (05_extraction) on the answers that have a partner (an empty answer drops its pair)
    from persona_vectors.extraction import extract
    from persona_vectors.interop import contrastive_pairs
    recs = s.extraction_answers(); pairs = contrastive_pairs(recs)
    assert man["vector_methods"]["summary"]["n_pairs"] == len(pairs) >= 10
    assert (md - extract(s.model()[0], [recs[i] for p in pairs for i in p], progress=False)["response_avg"]).abs().max() < 1e-6
    sep = pd.read_csv(run/"vector_methods"/"separation.csv")
    assert sep.auroc.between(0, 1).all() and set(sep.method) == {"mean_diff", "pca_diff", "probe"} and set(sep.layer) == set(range(1, 5))
    assert (sep[sep.method == "mean_diff"].cos_mean_diff - 1).abs().max() < 1e-6
    # steering at the study's setting with each method's vector: its own evaluation, labelled with the method
    ans = [json.loads(l) for l in (run/"vector_methods"/"probe"/"answers.jsonl").read_text().splitlines()]
    assert len(ans) == 4 and {a["label"] for a in ans} == {"probe_L2_a2"}
    assert man["vector_methods/probe"]["inputs"]["layer"] == 2 and man["vector_methods/probe"]["summary"]["n_answers"] == 4
    rep = (run/"report.md").read_text()
    assert "## Vector methods" in rep and "| probe" in rep and (run/"figures"/"vector_methods.png").stat().st_size > 1000
    tab = pd.read_csv(run/"tables"/"vector_methods.csv")
    assert tab.method.tolist() == ["mean_diff", "pca_diff", "probe"]
    assert tab.trait_index_mean.iloc[0] == man["steer/L2_a2"]["summary"]["trait_index"]["mean"]  # the sweep's own evaluation
    # a rerun is a no-op
    s2 = Study(cfg, tmp_path/"run", quiet=True, progress=False); s2.run_stages(["vector_methods"])
    assert s2.run.ran == []
