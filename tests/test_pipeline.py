"The study end to end on a tiny model: killed at random points and rerun, it gives the tables of an uninterrupted run."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
from small_study import SMALL

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
        ids = [json.dumps({k: r.get(k) for k in ("question", "pair_index", "side", "sample_index", "label", "question_index", "index", "step")},
                          sort_keys=True) for r in rows]
        assert len(ids) == len(set(ids)), f"duplicated records in {p}"


def test_config_errors(tmp_path):
    from persona_vectors.pipeline import load_config, ConfigError, preflight
    (tmp_path/"c.toml").write_text('[steering]\nlayr = 3\n[evaluation]\nn_samples = "ten"\n')
    with pytest.raises(ConfigError) as e: load_config(tmp_path/"c.toml")
    assert "unknown key steering.layr" in str(e.value) and "evaluation.n_samples" in str(e.value)
    # a judge that does not answer is found before any model is loaded (no `torch` model is touched here)
    cfg = load_config("demo", ["judge.kind=openai", "judge.base_url=http://127.0.0.1:9/v1"])
    assert any("does not answer" in p for p in preflight(cfg)[0])
    out = subprocess.run([sys.executable, "-m", "persona_vectors.cli", "run", "demo", "--set", "judge.kind=openai;judge.base_url=http://127.0.0.1:9/v1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "does not answer" in out.stderr and "loaded" not in out.stdout + out.stderr


def test_reference_dry_run():
    out = subprocess.run([sys.executable, "-m", "persona_vectors.cli", "run", "reference", "--dry-run"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "judge_calls" in out.stdout and "| total" in out.stdout
    print(out.stdout)
    rows = {}
    for line in out.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[2].isdigit(): rows[cells[0]] = (int(cells[2]), int(cells[3]))
    # counted by hand from configs/reference.toml and the built-in 'evil' trait (20 extraction questions, 5 pairs):
    # extraction 20 x 5 pairs x 2 sides x 10 samples; every answer is judged twice (trait, coherence)
    # sweeps: alphas 0 (the base), 0.5, 1, 1.5, 2, 2.5, 3 at layer 16, plus layers 4, 8, 12, 20, 24 at alpha 2 (16 is shared):
    #         12 settings x 20 questions x 10 samples
    # trajectories: 1000 + 100 held out, not judged
    # distillation: lora8, lora16, lora32, full, the bake, and 4 of the 5 trajectory counts (1000 is distilled/lora8
    #               itself) = 9 students x 200 answers
    expect = {"extraction": (2000, 4000), "sweeps": (2400, 4800), "trajectories": (1100, 0), "distillation": (1800, 3600)}
    expect["total"] = tuple(map(sum, zip(*expect.values())))
    assert rows == expect, rows
    assert expect["total"] == (7300, 12400)


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




@pytest.mark.slow  # about 40 s on 2 cores: five small studies on a tiny model
def test_reruns_exactly_what_is_missing_changed_or_depends_on_a_change(config, tmp_path):
    "Deleting or editing a finished stage's output reruns that stage (and its dependents if its files changed); nothing else."
    from persona_vectors.pipeline import validate_config, Study
    import tomllib
    raw = tomllib.loads(SMALL.format(model=config.parent/"model"))
    stages = ["artifacts", "extraction", "vector", "sweeps"]
    def run(**over):
        cfg = dict(raw); cfg.update({k: {**raw.get(k, {}), **v} for k, v in over.items()})
        s = Study(validate_config(cfg), tmp_path/"run", quiet=True, progress=False)
        s.run_stages(stages)
        return s.run.ran
    sweep = ["steer/base", "steer/L2_a2", "steer/L3_a2"]
    assert run() == ["artifacts", "extraction", "vector"] + sweep
    assert run() == []                                                       # a finished run loads and runs nothing
    # the case: the vector file is gone; the vector stage reruns and writes it again
    vec = tmp_path/"run"/"vector"/"persona.safetensors"
    before = vec.read_bytes(); vec.unlink()
    ran = run()
    assert ran[0] == "vector" and vec.read_bytes() == before                # same inputs, same bytes...
    assert ran == ["vector"]                                                  # ... so no dependent reruns
    # an output edited by hand is noticed: its stage is cleared and rerun, and gives the original file back
    ans = tmp_path/"run"/"steer"/"L2_a2"/"answers.jsonl"
    good = ans.read_text(); ans.write_text(good.replace('"', "'", 1))      # same size, other contents
    assert run() == ["steer/L2_a2"] and ans.read_text() == good
    # a vector stage whose files come out different (the monitor reads another layer) reruns every evaluation after it
    assert run(steering={"monitor_layer": 3}) == ["vector"] + sweep
    # adding a coefficient runs only the new setting
    assert run(steering={"monitor_layer": 3}, sweeps={"alphas": [0.0, 2.0, 4.0]}) == ["steer/L2_a4"]
    # a changed evaluation input reruns every evaluation, nothing upstream
    assert sorted(run(steering={"monitor_layer": 3}, sweeps={"alphas": [0.0, 2.0, 4.0]}, evaluation={"n_samples": 3})) == sorted(sweep + ["steer/L2_a4"])
    log = (tmp_path/"run"/"log.txt").read_text()
    assert "outputs missing (persona.safetensors missing)" in log and "outputs changed (answers.jsonl changed)" in log


@pytest.mark.slow  # about 20 s on 2 cores: a small study on a tiny model
def test_auto_operating_point(config, tmp_path):
    "steering.layer = alpha = 'auto': the layer, then the coefficient, chosen from the sweeps by the stated rule; later stages use them."
    from persona_vectors.pipeline import validate_config, Study, UserError
    import tomllib
    raw = tomllib.loads(SMALL.format(model=config.parent/"model"))
    raw["extraction"].update(n_questions=4, n_per_question=1); raw["evaluation"].update(n_questions=2, n_samples=3)
    raw.update(steering={"layer": "auto", "alpha": "auto", "max_logprob_drop": 0.02},
               sweeps={"alphas": [0.0, 2.0, 4.0], "layers": [1, 3], "layer_alpha": 64.0},
               distillation=dict(variants=[], trajectory_counts=[], n_trajectories=4, n_heldout=2, max_new_tokens=4))
    stages = ["artifacts", "extraction", "vector", "sweeps"]
    # a budget no swept setting meets (alpha 64 turns a tiny model's answers to noise) stops the study, naming the budget
    # and the most coherent candidate
    with pytest.raises(UserError, match=r"steering.layer = 'auto': no swept setting stays within the coherence budget \(strongest mean "
                                        r"trait index with mean log-prob at most 0.02 nats below .* The most coherent, layer \d alpha 64, has a "
                                        r"log-prob drop of"):
        Study(validate_config(raw), tmp_path/"run", quiet=True, progress=False).run_stages(stages)
    man = manifest(tmp_path/"run")
    mean = lambda l, a, m: man["steer/base" if a == 0 else f"steer/L{l}_a{a:g}"]["summary"][m]["mean"]
    drop = lambda l, a: mean(l, 0, "logprob") - mean(l, a, "logprob")
    assert min(drop(l, 64.0) for l in (1, 3)) > 0.02
    # the same sweeps with a budget that fits: the rule, recomputed here from the evaluations' summaries, gives the choice
    raw.update(steering={**raw["steering"], "max_logprob_drop": 1.0}, sweeps={**raw["sweeps"], "layer_alpha": 2.0})
    s = Study(validate_config(raw), tmp_path/"run", quiet=True, progress=False)
    s.run_stages(stages)
    man = manifest(tmp_path/"run")
    def rule(settings): return max([x for x in settings if drop(*x) <= 1.0], key=lambda x: mean(*x, "trait_index"))
    L, _ = rule([(l, 2.0) for l in (1, 3)])
    _, A = rule([(L, a) for a in (2.0, 4.0)])
    print({f"L{l}_a{a:g}": (round(mean(l, a, "trait_index"), 1), round(drop(l, a), 2)) for l, a in [(1, 2.0), (3, 2.0), (L, 4.0)]}, "-> chosen", (L, A))
    assert s.point() == (L, A) and man["operating_point/layer"]["summary"]["layer"] == L and man["operating_point/alpha"]["summary"]["alpha"] == A
    assert [c["within_budget"] for c in man["operating_point/alpha"]["summary"]["candidates"]] == [drop(L, a) <= 1.0 for a in (2.0, 4.0)]
    # the monitor reads the best held-out layer (layer 'auto', no monitor_layer); the steered teacher is the chosen point
    sep = json.loads((tmp_path/"run"/"vector"/"separation.json").read_text())
    assert man["vector"]["summary"]["monitor_layer"] == int(max(sep, key=sep.get))
    s.trajectories(); s.report()
    man = manifest(tmp_path/"run")
    assert (man["trajectories"]["inputs"]["layer"], man["trajectories"]["inputs"]["alpha"]) == (L, A)
    rep = (tmp_path/"run"/"report.md").read_text()
    assert "## Operating point: layer" in rep and "## Operating point: alpha" in rep and f"chosen: **layer {L}, alpha {A:g}**" in rep
