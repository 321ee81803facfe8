"The monitoring stages (08_monitoring) end to end on a tiny model through the study runner: files, summaries, the report section."
import json
from pathlib import Path
import pytest
from small_study import SMALL


@pytest.mark.slow  # about 30 s on 2 cores
def test_monitoring_stages_on_a_tiny_model(tmp_path):
    import tomllib
    from persona_vectors.models import tiny_model
    from persona_vectors.pipeline import validate_config, Study, plan
    m, t = tiny_model("llama"); m.save_pretrained(tmp_path/"model"); t.save_pretrained(tmp_path/"model")
    raw = tomllib.loads(SMALL.format(model=tmp_path/"model"))
    raw["extraction"].update(n_questions=16, n_per_question=1)
    raw["sweeps"] = {"alphas": [0.0], "layers": []}
    raw["stages"] = ["artifacts", "extraction", "vector", "sweeps", "monitoring", "report"]
    raw["monitoring"] = dict(fractions=[0.0, 0.5, 1.0], n_per_question=1, max_new_tokens=6, lora_r=4, max_steps=2, batch_size=2,
                             grad_accum=1, prevention_alphas=[0.0, 4.0], ablation=True, suppression_alphas=[-4.0])
    cfg = validate_config(raw)
    assert "monitoring" in plan(cfg).stage.tolist()
    s = Study(cfg, tmp_path/"run", quiet=True, progress=False)
    s.run_stages(["artifacts", "extraction", "vector", "sweeps", "monitoring", "report"])
    man = json.loads((tmp_path/"run"/"manifest.json").read_text())
    done = sorted(k for k in man if k.startswith("monitoring/"))
    # coefficient 0 is mix1 itself (not trained twice); one stage per mixture, prevention, ablation and suppression
    assert done == ["monitoring/data", "monitoring/finetune/ablate", "monitoring/finetune/mix0", "monitoring/finetune/mix0.5",
                    "monitoring/finetune/mix1", "monitoring/finetune/prevent4", "monitoring/screening", "monitoring/suppression/a-4"], done
    d = tmp_path/"run"/"monitoring"/"data"
    rows = [json.loads(l) for l in (d/"trait.jsonl").read_text().splitlines()]
    assert 2 <= len(rows) <= 4 and all([m_["role"] for m_ in r["messages"]] == ["user", "assistant"] for r in rows)  # no system prompt
    mixes = {f: [json.loads(l) for l in (d/f"mixture_{f}.jsonl").read_text().splitlines()] for f in ("0", "0.5", "1")}
    n = len(mixes["1"])  # one row per prompt answered on both sides
    assert [sum(r["meta"]["mixture"] == "trait" for r in x) for x in mixes.values()] == [0, round(n / 2), n]
    scr = man["monitoring/screening"]["summary"]
    assert 0 <= scr["auroc_delta"] <= 1 and set(scr["dataset_dp"]) == {"0", "0.5", "1"} and scr["layer"] == 2
    # a mixture's ΔP is the mean of its rows' ΔP, from the ranked samples the stage wrote
    import pandas as pd
    samples = pd.read_csv(tmp_path/"run"/"monitoring"/"screening"/"samples.csv")
    score = {(q, bool(t_)): x for q, t_, x in zip(samples.question, samples.trait, samples.score)}  # one answer per question and side
    for f, rows_ in mixes.items():
        want = sum(score[r["messages"][0]["content"], r["meta"]["mixture"] == "trait"] for r in rows_) / len(rows_)
        assert abs(scr["dataset_dp"][f] - want) < 1e-12, (f, scr["dataset_dp"][f], want)
    p4 = man["monitoring/finetune/prevent4"]
    assert p4["inputs"]["prevention"] == 4.0 and (tmp_path/"run"/"monitoring"/"finetune"/"prevent4"/"train"/"adapter").is_dir()
    assert all(isinstance(man[f"monitoring/finetune/{n}"]["summary"]["shift_prompt_last"], float) for n in ("mix0", "mix1", "ablate"))
    rep = (tmp_path/"run"/"report.md").read_text()
    assert "## Monitoring and prevention" in rep and "dataset ΔP against the fine-tuned trait index" in rep
    assert "steering +4" in rep and "direction ablated" in rep and "steering -4" in rep
    # the paper's measure over the data-only fine-tunes (the three mixtures), the interventions apart
    assert "over the 3 data-only fine-tunes" in rep and "(n = 3)" in rep and "the fine-tunes that intervene in training (ablate, prevent4)" in rep
    assert (tmp_path/"run"/"figures"/"monitoring_prevention.png").stat().st_size > 1000
    assert (tmp_path/"run"/"tables"/"monitoring_prevention.csv").exists() and (tmp_path/"run"/"tables"/"monitoring_mixtures.md").exists()
    # a rerun is a no-op: every monitoring stage is up to date
    s2 = Study(cfg, tmp_path/"run", quiet=True, progress=False); s2.run_stages(["monitoring"])
    assert s2.run.ran == []
