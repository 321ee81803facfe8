"On-policy objectives, own-sample gaps and the per-position diagnostics through the study runner on a tiny model."
import json
import pytest
from small_study import SMALL


@pytest.mark.slow  # about 30 s on 2 cores
def test_objectives_and_diagnostics_on_a_tiny_model(tmp_path):
    import tomllib, pandas as pd
    from persona_vectors.models import tiny_model
    from persona_vectors.pipeline import validate_config, Study
    m, t = tiny_model("llama"); m.save_pretrained(tmp_path/"model"); t.save_pretrained(tmp_path/"model")
    raw = tomllib.loads(SMALL.format(model=tmp_path/"model"))
    raw["sweeps"] = {"alphas": [0.0, 2.0], "layers": []}
    raw["stages"] = ["artifacts", "extraction", "vector", "sweeps", "distillation", "report"]
    raw["distillation"] = dict(variants=["lora4", "lora4-on-rkl", "lora4-gkd"], n_trajectories=8, max_new_tokens=6, trajectory_counts=[],
                               max_steps=2, batch_size=2, grad_accum=2, n_heldout=4, bake=True, own_samples=True, diagnostics=True)
    cfg = validate_config(raw)
    s = Study(cfg, tmp_path/"run", quiet=True, progress=False); s.run_stages()
    run = tmp_path/"run"; man = json.loads((run/"manifest.json").read_text())
    off, rkl, gkd = (man[f"distilled/{v}"]["summary"] for v in ("lora4", "lora4-on-rkl", "lora4-gkd"))
    assert man["distilled/lora4-gkd"]["inputs"]["config"]["lmbda"] == 0.5 and man["distilled/lora4-on-rkl"]["inputs"]["config"]["beta"] == 1.0
    assert off["objective"].startswith("off-policy") and rkl["objective"] == "on-policy reverse KL"
    # compute: the same steps and batch; on-policy sampling replaces trajectory sampling, so totals are comparable
    assert off["flops"]["student_sampling"] == 0 and rkl["flops"]["teacher_sampling"] == 0 and gkd["flops"]["student_sampling"] > 0
    assert all(x["train_flops"] == x["flops"]["total"] > 0 for x in (off, rkl, gkd))
    # the gap on both distributions, each with an interval; held-out on the configured 4 trajectories (not the whole batch file)
    for x in (off, rkl, gkd, man["distilled/bake"]["summary"]):
        assert x["gap_recovered_own_ci"][0] <= x["gap_recovered_own"] <= x["gap_recovered_own_ci"][1]
    # the per-position diagnostics: one file per student, its KL means reproduce the stage's held-out numbers
    diag = man["diagnostics"]["summary"]
    assert set(diag) == {"lora4", "lora4-on-rkl", "lora4-gkd", "bake"}
    df = pd.read_csv(run/"diagnostics"/"lora4.csv")
    assert df.trajectory.nunique() == 4 and abs(df.kl_student.mean() - off["kl_student"]) < 1e-6 and abs(df.kl_base.mean() - off["kl_base"]) < 1e-6
    assert 0 <= diag["lora4"]["first_token"]["share_of_gap"] <= 1
    rep = (run/"report.md").read_text()
    assert "## Objectives at equal compute" in rep and "## Where the gap lives" in rep and "## The open question" in rep
    assert (run/"figures"/"objectives.png").exists() and (run/"figures"/"gap_by_position.png").exists()
    s2 = Study(cfg, tmp_path/"run", quiet=True, progress=False); s2.run_stages(["distillation"])
    assert s2.run.ran == []
