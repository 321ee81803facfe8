"Students with a steering bias, the learning-rate sweep, step budgets and trajectory counts through the study runner on a tiny model."
import json
import pytest
from small_study import SMALL


def _run(tmp_path, stages):
    import tomllib
    from persona_vectors.models import tiny_model
    from persona_vectors.pipeline import validate_config, Study
    m, t = tiny_model("llama"); m.save_pretrained(tmp_path/"model"); t.save_pretrained(tmp_path/"model")
    raw = tomllib.loads(SMALL.format(model=tmp_path/"model"))
    raw["sweeps"] = {"alphas": [0.0, 2.0], "layers": []}
    raw["stages"] = stages
    raw["distillation"] = dict(variants=["lora4", "lora4+bias", "lora4+bakebias", "lora4+bake"], n_trajectories=8, max_new_tokens=6,
                               trajectory_counts=[4, 8], count_variant=["lora4+bias", "lora4"], count_steps=1, max_steps=2, batch_size=2, grad_accum=2,
                               n_heldout=4, bake=True, own_samples=True, diagnostics=True, learning_rate=1e-3, bias_learning_rate=0.05,
                               lr_sweep={"lora4": [1e-3, 4e-3], "lora2": [1e-3]}, step_budgets=[1, 3], budget_variants=["lora4+bias"])
    cfg = validate_config(raw)
    s = Study(cfg, tmp_path/"run", quiet=True, progress=False); s.run_stages()
    return cfg, tmp_path/"run", json.loads((tmp_path/"run"/"manifest.json").read_text())


@pytest.mark.slow  # about 90 s on 2 cores
def test_shapes_on_a_tiny_model(tmp_path):
    from persona_vectors.pipeline import Study
    cfg, run, man = _run(tmp_path, ["artifacts", "extraction", "vector", "sweeps", "distillation", "report"])
    # the biased students: the bias and its learning rate in the stage's inputs and summary; the frozen bake has no rate of its own
    for v, bias in (("lora4+bias", "zero"), ("lora4+bakebias", "bake"), ("lora4+bake", "bake-frozen")):
        assert man[f"distilled/{v}"]["inputs"]["config"]["bias"] == bias and man[f"distilled/{v}"]["summary"]["bias"] == bias
    assert man["distilled/lora4+bias"]["summary"]["bias_learning_rate"] == 0.05 and man["distilled/lora4+bake"]["summary"]["bias_learning_rate"] is None is man["distilled/lora4+bakebias"]["summary"]["bias_learning_rate"]
    assert "bias" not in man["distilled/lora4"]["inputs"]["config"]  # a plain student's key is what it was before biases existed
    assert json.loads((run/"distilled"/"lora4+bias"/"train"/"adapter"/"student_bias.json").read_text())["trained"] is True
    # the sweep: lora4 at its own rate is the study's lora4 (not trained twice); the other rates are stages of their own
    assert "distilled/lora4@0.001" not in man and man["distilled/lora4@0.004"]["summary"]["learning_rate"] == 0.004
    assert man["distilled/lora2@0.001"]["status"] == "done"
    # step budgets: one run to the largest, each budget evaluated, its compute growing with the steps
    b = man["budget/lora4+bias"]["summary"]["budgets"]
    assert [r["steps"] for r in b] == [1, 3] and b[0]["train_flops"] < b[1]["train_flops"]
    assert all(r["gap_recovered_ci"][0] <= r["gap_recovered"] <= r["gap_recovered_ci"][1] for r in b)
    # counts: the count variant at count_steps (so the count equal to n_trajectories is trained again)
    assert man["counts/8"]["summary"]["steps"] == 1 and man["counts/4"]["summary"]["n_trajectories"] == 4
    # a second count variant: its own stages beside the first's, a curve of its own in the tables
    assert [man[f"counts/lora4/{n}"]["inputs"]["variant"] for n in (4, 8)] == ["lora4", "lora4"] and man["counts/4"]["inputs"]["variant"] == "lora4+bias"
    # diagnostics load the biased students with their bias
    assert set(man["diagnostics"]["summary"]) == {"lora4", "lora4+bias", "lora4+bakebias", "lora4+bake", "bake"}
    s2 = Study(cfg, run, quiet=True, progress=False); s2.run_stages(["distillation"])
    assert s2.run.ran == []
    # the report: a section per shape, its tables rebuilt from the records
    from persona_vectors.analysis import RunView
    from persona_vectors.distillation_shapes import offset_table, rank_table, budget_table, count_table
    rep = (run/"report.md").read_text()
    for title in ("## Students that carry the offset", "## Ranks at their chosen learning rates", "## Step budgets", "## Trajectory counts, with intervals"):
        assert title in rep, title
    rv = RunView(run)
    rt = rank_table(rv)
    assert sorted(zip(rt.variant, rt.learning_rate)) == [("lora2", 0.001), ("lora4", 0.001), ("lora4", 0.004)] and rt.chosen.sum() == 2
    assert rt.loc[rt.chosen & (rt.variant == "lora4"), "gap_recovered"].item() == max(man["distilled/lora4"]["summary"]["gap_recovered"], man["distilled/lora4@0.004"]["summary"]["gap_recovered"])
    assert "The seed's ordering" in rep and len(budget_table(rv)) == 2 and list(zip(count_table(rv).variant, count_table(rv).n_trajectories)) == [("lora4+bias", 4), ("lora4+bias", 8), ("lora4", 4), ("lora4", 8)]
    assert set(offset_table(rv).variant) == {"lora4", "lora4+bias", "lora4+bakebias", "lora4+bake", "bake"}
    assert (run/"figures"/"shapes.png").exists() and (run/"tables"/"ranks.csv").exists()
    from persona_vectors.analysis import counts_table
    ct = counts_table(rv)
    assert ct.variant.tolist() == ["lora4+bias"] * 2 + ["lora4"] * 2 and ct.gap_recovered.tolist() == count_table(rv).gap_recovered.tolist()
    assert "- **lora4**:" in rep and "- **lora4+bias**:" in rep  # each curve's verdict
    from persona_vectors.resource_plan import study_stages
    from persona_vectors.resources import model_shape
    rows = {r["stage"]: r for r in study_stages(cfg, model_shape(cfg.model.name), 4, 4)}
    assert rows["counts (2 runs)"]["what"].startswith("lora4+bias,") and rows["counts/lora4 (2 runs)"]["runs"] == 2  # the plan counts both curves
