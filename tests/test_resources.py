"The resource plan from the shell: `run reference --dry-run` prints memory and time per stage and named GPU, flags what does not fit, refuses an unreadable model; the plan against the committed measurements."
import json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GPUS = ("A100-80GB", "H100-80GB", "H200-141GB")


def cli(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    return subprocess.run([sys.executable, "-m", "persona_vectors.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def resource_rows(out: str) -> tuple[list[str], dict]:
    "The header and the stage rows of the resource table in a dry run's output."
    lines = out.split("Resources per stage", 1)[1].splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("| stage | tokens | FLOPs"))
    head = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for l in lines[start + 2:]:
        if not l.startswith("|"): break
        cells = [c.strip() for c in l.strip("|").split("|")]
        rows[cells[0]] = dict(zip(head, cells))
    return head, rows


def test_reference_dry_run_prints_memory_and_time_per_gpu():
    p = cli("run", "reference", "--dry-run")
    assert p.returncode == 0, p.stderr
    head, rows = resource_rows(p.stdout)
    assert [f"{g}: peak, time" for g in GPUS] + ["this CPU: peak, time"] == head[3:]
    stages = ["extraction", "vector", "sweeps", "trajectories", "distilled/lora8", "distilled/lora16", "distilled/lora32",
              "distilled/full", "distilled/bake", "counts (4 runs)"]  # the count 1000 is distilled/lora8 itself
    assert list(rows) == stages + ["total"], list(rows)
    for s in stages:
        for g in GPUS:
            cell = rows[s][f"{g}: peak, time"]
            assert "GiB" in cell and any(u in cell for u in (" s", " min", " h", " d")), (s, g, cell)
            # the reference config fits one H200; on an 80 GB GPU only the full fine-tune (float32 master weights) does not
            assert ("does not fit" in cell) == (s == "distilled/full" and g != "H200-141GB"), (s, g, cell)
    # Qwen2.5-7B in bf16 (14.2 GiB) needs more than the weights everywhere; the full fine-tune is the largest stage
    peak = {s: float(rows[s]["H100-80GB: peak, time"].split(" GiB")[0]) for s in stages}
    assert all(v > 14.2 for v in peak.values()) and max(peak, key=peak.get) == "distilled/full", peak
    assert 78.6 < peak["distilled/full"] < 0.9 * 139, peak  # over the H100's usable 78.6 GiB, within the H200's with the margin
    assert "distilled/full on H100-80GB (does not fit" in p.stdout and "ZeRO-3 over 2 GPUs" in p.stdout
    # a 7B model does not fit this 2-core machine's RAM for training: flagged, with what would make it fit
    assert "does not fit" in rows["distilled/full"]["this CPU: peak, time"]
    assert "distilled/full on this CPU (does not fit" in p.stdout


def test_as_the_pipeline_ran_it_full_fine_tune_is_flagged_with_a_fix():
    "The settings before the reference config chose its own: AdamW (float32 master weights), no checkpointing, 2 x 4 micro-batches."
    p = cli("run", "reference", "--dry-run", "--set",
            "distillation.full_optimizer='adamw_torch_fused';distillation.gradient_checkpointing=false;distillation.batch_size=2;distillation.grad_accum=4")
    assert p.returncode == 0, p.stderr
    _, rows = resource_rows(p.stdout)
    full = rows["distilled/full"]
    assert "does not fit" in full["A100-80GB: peak, time"] and "does not fit" in full["H100-80GB: peak, time"], full
    assert "does not fit" in full["H200-141GB: peak, time"] or "tight" in full["H200-141GB: peak, time"], full
    peak = float(full["H100-80GB: peak, time"].split(" GiB")[0])
    assert 125 < peak < 145, peak  # float32 masters 28.4 + gradients 28.4 + AdamW 56.7 + the study's bf16 model 14.2 GiB + activations
    fixes = [l for l in p.stdout.splitlines() if l.startswith("- distilled/full on H100-80GB")]
    assert len(fixes) == 1 and "fits with" in fixes[0] and "8-bit AdamW" in fixes[0], fixes
    assert any(l.startswith("- distilled/full on H200-141GB (tight") for l in p.stdout.splitlines()), p.stdout


def test_unreadable_model_is_a_clear_error(tmp_path):
    p = cli("run", "reference", "--dry-run", "--set", "model.name='/nonexistent'", "--run-dir", str(tmp_path/"run"))
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "cannot read the config of model '/nonexistent'" in p.stderr and "local directory /nonexistent: does not exist" in p.stderr, p.stderr
    assert "shipped with persona_vectors" in p.stderr and "Traceback" not in p.stderr
    assert "Resources per stage" not in p.stdout and not (tmp_path/"run").exists()  # nothing started, nothing written


def test_demo_dry_run_plans_this_cpu():
    p = cli("run", "demo", "--dry-run")
    assert p.returncode == 0, p.stderr
    head, rows = resource_rows(p.stdout)
    assert "this CPU: peak, time" in head and "distilled/lora8" in rows
    assert all("does not fit" not in c for r in rows.values() for c in r.values())  # the demo is sized for this machine


def test_committed_measurements_within_bounds():
    "Predicted vs measured on the packaged SmolLM2 (bench/results/resources.json), predictions recomputed with the current code."
    from persona_vectors.resource_plan import compare_measured
    res = json.loads((ROOT/"bench"/"results"/"resources.json").read_text())
    assert res["model"].startswith("SmolLM2") and not res["quick"]
    cmp = compare_measured(res)
    print(cmp.to_string())
    assert {"lora", "full"} <= {r["method"] for r in res["rows"]}
    assert ((cmp.memory_ratio - 1).abs() <= 0.25).all(), cmp
    assert ((cmp.time_ratio >= 0.5) & (cmp.time_ratio <= 2.0)).all(), cmp
