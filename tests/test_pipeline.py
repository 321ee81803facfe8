"The study end to end on a tiny model: killed at random points and rerun, it gives the tables of an uninterrupted run."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent

CONFIG = '''name = "tiny"
[model]
name = "{model}"
[trait]
name = "pirate"
[extraction]
n_questions = 10
n_per_question = 2
max_new_tokens = 12
batch_size = 8
[steering]
layer = 2
alpha = 2.0
[evaluation]
n_questions = 4
n_samples = 8
max_new_tokens = 12
batch_size = 8
[sweeps]
alphas = [0.0, 2.0, 4.0]
layers = [1, 2]
[distillation]
variants = ["lora4"]
n_trajectories = 16
max_new_tokens = 12
trajectory_counts = [8]
count_variant = "lora4"
max_steps = 30
batch_size = 2
grad_accum = 2
n_heldout = 4
'''


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    from persona_vectors.models import tiny_model
    d = tmp_path_factory.mktemp("study")
    m, t = tiny_model("llama"); m.save_pretrained(d/"model"); t.save_pretrained(d/"model")
    (d/"tiny.toml").write_text(CONFIG.format(model=d/"model"))
    return d/"tiny.toml"


def start(config, run_dir):
    env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1", HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-m", "persona_vectors.cli", "run", str(config), "--run-dir", str(run_dir)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def manifest(run_dir):
    try: return json.loads((run_dir/"manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError): return {}


def kill_when(proc, cond, timeout=300):
    "SIGKILL the process as soon as `cond()` holds; return True if it was killed mid-run."
    t0 = time.time()
    while proc.poll() is None and time.time() - t0 < timeout:
        if cond():
            proc.send_signal(signal.SIGKILL); proc.wait(); return True
        time.sleep(0.02)
    return False


def lines(p): return len(p.read_text().splitlines()) if p.exists() else 0


def keys_unique(run_dir):
    "Every JSONL record log of the run has no duplicated record."
    for p in run_dir.rglob("*.jsonl"):
        rows = [json.loads(l) for l in p.read_text().splitlines()]
        ids = [json.dumps({k: r.get(k) for k in ("question", "pair_index", "side", "sample_index", "label", "question_index", "index")},
                          sort_keys=True) for r in rows]
        assert len(ids) == len(set(ids)), f"duplicated records in {p}"


def test_config_errors(tmp_path):
    from persona_vectors.pipeline import load_config, ConfigError, preflight
    (tmp_path/"c.toml").write_text('[steering]\nlayr = 3\n[evaluation]\nn_samples = "ten"\n')
    with pytest.raises(ConfigError) as e: load_config(tmp_path/"c.toml")
    assert "unknown key steering.layr" in str(e.value) and "evaluation.n_samples" in str(e.value)
    # a judge that does not answer is found before any model is loaded (no `torch` model is touched here)
    cfg = load_config("demo", ["judge.kind=openai", "judge.base_url=http://127.0.0.1:9/v1"])
    assert any("does not answer" in p for p in preflight(cfg))
    out = subprocess.run([sys.executable, "-m", "persona_vectors.cli", "run", "demo", "--set", "judge.kind=openai;judge.base_url=http://127.0.0.1:9/v1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "does not answer" in out.stderr and "loaded" not in out.stdout + out.stderr


def test_reference_dry_run():
    out = subprocess.run([sys.executable, "-m", "persona_vectors.cli", "run", "reference", "--dry-run"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "judge_calls" in out.stdout and "| total" in out.stdout
    print(out.stdout)


@pytest.mark.slow
def test_killed_study_resumes_to_the_same_tables(config, tmp_path):
    clean = tmp_path/"clean"
    p = start(config, clean); out = p.communicate(timeout=600)[0]
    assert p.returncode == 0, out
    killed = tmp_path/"killed"
    # kill 1: during extraction, after its first chunk of answers is written
    assert kill_when(start(config, killed), lambda: manifest(killed).get("extraction", {}).get("status") == "running"
                     and lines(killed/"extraction"/"answers.jsonl") > 0), "extraction finished before it could be killed"
    # kill 2: during a sweep, inside one steering setting
    assert kill_when(start(config, killed), lambda: any(k.startswith("steer/L") and v["status"] == "running" and lines(killed/k/"answers.jsonl") > 0
                                                        for k, v in manifest(killed).items())), "sweeps finished before they could be killed"
    # kill 3: during training, after a checkpoint
    assert kill_when(start(config, killed), lambda: any((killed/"distilled"/"lora4"/"train"/"checkpoints").glob("checkpoint-*"))
                     and manifest(killed).get("distilled/lora4", {}).get("status") == "running"), "training finished before it could be killed"
    p = start(config, killed); out = p.communicate(timeout=600)[0]
    assert p.returncode == 0, out
    keys_unique(killed)
    for table in ("coefficient_sweep", "layer_sweep", "distillation", "trajectory_counts"):
        a, b = (clean/"tables"/f"{table}.csv").read_text(), (killed/"tables"/f"{table}.csv").read_text()
        assert a == b, f"{table} differs after kills:\n{a}\n{b}"
    for stage in ("extraction/answers.jsonl", "steer/L2_a2/answers.jsonl", "trajectories/train.jsonl"):
        assert (clean/stage).read_text().count("\n") == (killed/stage).read_text().count("\n")
    print((killed/"report.md").read_text()[:2000])
