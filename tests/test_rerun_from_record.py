"""A run reruns from its own record: `persona-vectors run <run dir or its config.json> --run-dir NEW` gives the same tables.

A committed run (nbs/demo_run) holds its resolved config, not the TOML file it started from; handed back to the runner on
another machine, the config alone must reproduce it. Here a small study on a tiny model runs, only its config.json is
carried to a fresh folder (as a committed run travels), and the rerun from that record matches stage by stage.
"""
import json, os, shutil, subprocess, sys
from pathlib import Path
from small_study import SMALL

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TQDM_DISABLE="1")
# the small study and two steps of a LoRA student (trajectories, training with activation checkpointing, its evaluation)
CONFIG = SMALL.replace('"sweeps", "report"]', '"sweeps", "distillation", "report"]') + '''[distillation]
variants = ["lora4"]
n_trajectories = 8
max_new_tokens = 8
trajectory_counts = []
max_steps = 2
batch_size = 2
grad_accum = 1
n_heldout = 2
bake = false
gradient_checkpointing = true
'''


def cli(*args):
    p = subprocess.run([sys.executable, "-m", "persona_vectors.cli", *map(str, args)], cwd=ROOT, env=ENV, capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def outputs(run):
    "Each stage's key and the SHA-256 of every file it wrote (a training summary's wall-clock seconds and the report aside)."
    def content(stage, f, o):
        if not f.endswith("distill.json"): return o["sha256"]
        return {k: v for k, v in json.loads((run/stage/f).read_text()).items() if not k.endswith("seconds")}
    m = json.loads((run/"manifest.json").read_text())
    return {s: (e["key"], {f: content(s, f, o) for f, o in e["outputs"].items()}) for s, e in m.items() if s != "report"}


def test_a_run_reruns_from_its_recorded_config(tmp_path):
    from persona_vectors.models import tiny_model
    m, t = tiny_model("llama"); m.save_pretrained(tmp_path/"model"); t.save_pretrained(tmp_path/"model")
    (tmp_path/"small.toml").write_text(CONFIG.format(model=tmp_path/"model"))
    first = tmp_path/"first"
    cli("run", tmp_path/"small.toml", "--run-dir", first)
    record = tmp_path/"elsewhere"/"committed"; record.mkdir(parents=True)
    shutil.copy(first/"config.json", record/"config.json")  # all a committed run needs to be rerun
    again = tmp_path/"again"
    cli("run", record, "--run-dir", again)  # the run directory
    assert (again/"config.json").read_text() == (first/"config.json").read_text()
    assert "distilled/lora4" in outputs(first) and outputs(again) == outputs(first)  # every stage: same key, same files byte for byte
    tables = sorted(p.name for p in (first/"tables").iterdir())
    assert "distillation.csv" in tables and tables == sorted(p.name for p in (again/"tables").iterdir())
    for name in tables: assert (again/"tables"/name).read_bytes() == (first/"tables"/name).read_bytes(), name
    # or its config.json: the same config, so every stage of the rerun is up to date and none runs again
    p = cli("run", record/"config.json", "--run-dir", again)
    ran = [l for l in p.stdout.splitlines() if l.startswith("[") and "up to date" not in l and not l.startswith(("[model]", "[study]", "[report]"))]
    assert not ran and outputs(again) == outputs(first), ran
    # the committed demo run's record is a config the runner takes (its plan, nothing loaded)
    p = cli("run", ROOT/"nbs"/"demo_run", "--dry-run")
    assert "vector" in p.stdout and "distilled/lora8" in p.stdout, p.stdout[-2000:]
