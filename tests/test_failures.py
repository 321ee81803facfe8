"Fail fast, fail clearly, never share a run directory: bad configs stop in preflight, one run per directory, Ctrl-C resumes."
import json, math, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
from small_study import SMALL

ROOT = Path(__file__).resolve().parent.parent

# (override, text the message must hold: the key and what is wrong); each on the demo config (SmolLM2: 30 blocks)
BAD = [
    ("steering.layer=99", "steering.layer = 99: the model has 30 blocks"),
    ("steering.monitor_layer=31", "steering.monitor_layer = 31: the model has 30 blocks"),
    ("sweeps.layers=[5, 0]", "sweeps.layers[1] = 0: layers start at 1"),
    ("sweeps.layers=[40]", "sweeps.layers[0] = 40"),
    ("sweeps.alphas=[0.0, nan]", "sweeps.alphas[1] = nan"),
    ("distillation.target_modules=['q_proj', 'qkv_proj']", "distillation.target_modules: ['qkv_proj'] not in LlamaForCausalLM"),
    ("distillation.trajectory_counts=[32, 500]", "distillation.trajectory_counts[1] = 500: must be between 1 and distillation.n_trajectories = 96"),
    ("distillation.variants=['lora8', 'lorax']", "distillation.variants"),
    ("distillation.count_variant='qlora'", "distillation.count_variant: Value error, unknown distillation variant 'qlora'"),
    ("extraction.variant='mean'", "extraction.variant"),
    ("extraction.n_questions=25", "extraction.n_questions = 25: trait 'pirate' has 20"),
    ("evaluation.n_questions=30", "evaluation.n_questions = 30: trait 'pirate' has 20"),
    ("model.dtype='float16';model.device='cpu'", "model.dtype = 'float16' on the CPU"),
    ("model.dtype='bf17'", "model.dtype = 'bf17'"),
    ("model.device='tpu'", "model.device = 'tpu'"),
    ("stages=['extraction', 'sweep']", "stages: unknown stage 'sweep'"),
    ("steering.layr=3", "unknown key steering.layr"),
]


@pytest.fixture
def no_weights(monkeypatch):
    "A tripwire: loading any model weights fails the test."
    import transformers, persona_vectors.models as pm
    def boom(*a, **k): raise AssertionError("model weights were loaded")
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    monkeypatch.setattr(pm, "load_model", boom)


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
@pytest.mark.parametrize("override,expect", BAD, ids=[b[0] for b in BAD])
def test_bad_config_fails_in_preflight(override, expect, dry_run, no_weights, capsys, tmp_path):
    from persona_vectors.cli import run_study
    rc = run_study("demo", set=override, run_dir=str(tmp_path/"run"), dry_run=dry_run)
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    assert expect in err, err
    assert "Traceback" not in out + err and "| total" not in out  # one clear message; no plan printed for a config that cannot run
    assert not (tmp_path/"run").exists()  # nothing was started


def test_all_problems_at_once_and_a_good_config_passes(no_weights, capsys):
    from persona_vectors.cli import run_study
    rc = run_study("demo", set="steering.layer=99;sweeps.layers=[0];distillation.trajectory_counts=[500]", dry_run=True)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n- ") == 3, err
    assert run_study("demo", dry_run=True) == 0 and "| total" in capsys.readouterr().out


def cli(*args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "persona_vectors.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, **kw)


def test_the_issue_case_from_the_shell(tmp_path):
    "`--set steering.layer=99` stops at once in the real run and the dry run, with exit code 2, no traceback, nothing loaded."
    for extra in ([], ["--dry-run"]):
        t0 = time.time()
        p = cli("run", "demo", "--set", "steering.layer=99", "--run-dir", str(tmp_path/"r"), *extra)
        print(f"{extra or 'run'}: exit {p.returncode} in {time.time() - t0:.1f}s: {p.stderr.strip()}")
        assert p.returncode == 2 and "steering.layer = 99: the model has 30 blocks" in p.stderr
        assert "Traceback" not in p.stdout + p.stderr and "loaded" not in p.stdout + p.stderr
    p = cli("run", "demo", "--set", "steering.layer=99", "--run-dir", str(tmp_path/"r"), "--debug")
    assert p.returncode == 2 and "steering.layer = 99" in p.stderr  # preflight problems are a list, not an exception: no traceback
    p = cli("run", "nope", "--debug")
    assert p.returncode == 2 and "Traceback" in p.stderr and "no config 'nope'" in p.stderr  # --debug shows a user error's traceback
    p = cli("run", "nope")
    assert p.returncode == 2 and "Traceback" not in p.stderr and "no config 'nope'" in p.stderr




@pytest.fixture(scope="module")
def small(tmp_path_factory):
    "A small study config on a tiny model, and the tables of an uninterrupted run of it."
    from persona_vectors.models import tiny_model
    d = tmp_path_factory.mktemp("small")
    m, t = tiny_model("llama"); m.save_pretrained(d/"model"); t.save_pretrained(d/"model")
    (d/"small.toml").write_text(SMALL.format(model=d/"model"))
    p = cli("run", str(d/"small.toml"), "--run-dir", str(d/"clean"))
    assert p.returncode == 0, p.stdout + p.stderr
    return d/"small.toml", d/"clean"


def start(config, run_dir):
    env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1", HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-m", "persona_vectors.cli", "run", str(config), "--run-dir", str(run_dir)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(cond, proc, timeout=120):
    t0 = time.time()
    while not cond():
        assert proc.poll() is None, f"the run ended before the condition held:\n{proc.communicate()[1][-3000:]}"
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.02)


def answers_written(run_dir):
    p = run_dir/"extraction"/"answers.jsonl"
    return p.exists() and p.stat().st_size > 0


def manifest_status(run_dir, stage):
    return json.loads((run_dir/"manifest.json").read_text())[stage]["status"]


def same_tables(a, b):
    for t in ("coefficient_sweep", "layer_sweep"):
        assert (a/"tables"/f"{t}.csv").read_text() == (b/"tables"/f"{t}.csv").read_text(), t


def test_one_run_per_directory(small, tmp_path):
    config, clean = small
    run = tmp_path/"run"
    first = start(config, run)
    try:
        wait_for(lambda: answers_written(run), first)
        first.send_signal(signal.SIGSTOP)  # hold it mid-extraction, whatever the machine's speed
        t0 = time.time()
        second = cli("run", str(config), "--run-dir", str(run))
        print(f"second run: exit {second.returncode} after {time.time() - t0:.1f}s: {second.stderr.strip()}")
        assert second.returncode == 2 and f"is in use by process {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGKILL); first.wait()
    assert manifest_status(run, "extraction") == "running"  # it was killed mid-stage
    third = cli("run", str(config), "--run-dir", str(run))  # the OS released the killed run's lock: this one takes it and resumes
    assert third.returncode == 0, third.stdout + third.stderr
    assert "[extraction] resuming" in (run/"log.txt").read_text()
    same_tables(clean, run)


def test_ctrl_c_stops_at_a_record_and_resumes(small, tmp_path):
    config, clean = small
    run = tmp_path/"run"
    p = start(config, run)
    wait_for(lambda: answers_written(run), p)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    print(err.strip()[-600:])
    assert p.returncode == 130, err
    assert "interrupted in stage 'extraction'" in err and "Rerun the same command to resume" in err
    assert f"--run-dir {run}" in err and "Traceback" not in err
    raw = (run/"extraction"/"answers.jsonl").read_bytes()
    assert raw.endswith(b"\n") and all(json.loads(l) for l in raw.splitlines())  # whole records only
    n = len(raw.splitlines())
    assert 0 < n < 200, n  # it stopped mid-stage (200 answers in all)
    again = cli("run", str(config), "--run-dir", str(run))
    assert again.returncode == 0, again.stdout + again.stderr
    same_tables(clean, run)
