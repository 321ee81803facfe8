"""The study with several processes (issue 10): `accelerate launch` / `torchrun` with gloo on CPU give the run directory of one process.

A float64 tiny model makes "the same" exact: every answer, trajectory, score and table byte for byte, the students to
float64 rounding. A run killed part-way under two processes resumes under one (and the other way round) without a
duplicated record."""
import json, os, subprocess, sys, time
from pathlib import Path
import pytest
import torch

from persona_vectors.parallel import launch_command

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

CONFIG = '''name = "par"
[model]
name = "{model}"
dtype = "float64"
[trait]
name = "pirate"
[extraction]
n_questions = 6
n_per_question = 1
max_new_tokens = 8
batch_size = 4
[steering]
layer = 2
alpha = 2.0
[evaluation]
n_questions = 3
n_samples = 3
max_new_tokens = 8
batch_size = 4
[sweeps]
alphas = [0.0, 2.0]
layers = [3]
[distillation]
variants = ["lora4"]
n_trajectories = 10
max_new_tokens = 8
trajectory_counts = []
max_steps = 4
batch_size = 2
grad_accum = 2
n_heldout = 3
lora_dropout = 0.0
'''

ENV = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1", HF_HUB_OFFLINE="1")


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    from persona_vectors.models import tiny_model
    d = tmp_path_factory.mktemp("par")
    m, t = tiny_model("llama", dtype=torch.float64); m.save_pretrained(d/"model"); t.save_pretrained(d/"model")
    (d/"par.toml").write_text(CONFIG.format(model=d/"model"))
    return d/"par.toml"


def run(config, run_dir, n, launcher="torchrun", extra=(), **kw):
    args = ["-m", "persona_vectors.cli", "run", str(config), "--run-dir", str(run_dir), *extra]
    cmd = [sys.executable] + args if n == 1 else launch_command(n, args, launcher)
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, **kw)


def files(run_dir):
    "Every result file of a run, by relative path (training checkpoints, locks, logs and timings aside)."
    skip = ("checkpoints", "log.txt", ".lock", "manifest.json", "report.md", "report.html", "judge_cache")  # the reports show stage times
    return {str(p.relative_to(run_dir)): p for p in sorted(run_dir.rglob("*")) if p.is_file()
            and not any(s in str(p.relative_to(run_dir)) for s in skip) and not p.name.startswith(".")}


def differing(a, b):
    fa, fb = files(a), files(b)
    assert fa.keys() == fb.keys(), sorted(set(fa) ^ set(fb))
    return [k for k in fa if fa[k].read_bytes() != fb[k].read_bytes()]


@pytest.fixture(scope="module")
def one(config, tmp_path_factory):
    d = tmp_path_factory.mktemp("one")/"run"
    p = run(config, d, 1); assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return d


def test_two_processes_write_the_run_of_one(config, one, tmp_path):
    t0 = time.time()
    p = run(config, tmp_path/"run", 2, "accelerate"); assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    diff = differing(one, tmp_path/"run")
    tables = [k for k in files(one) if k.startswith("tables/")]
    print(f"2 processes (accelerate launch, gloo) in {time.time()-t0:.0f}s: {len(files(one))} files, {len(tables)} tables; "
          f"differing: {diff}")
    assert len(tables) >= 3
    # the student's weights come out of an all-reduce (a sum in another order): equal to rounding, compared below
    assert [k for k in diff if "adapter_model" not in k and "train/distill.json" not in k] == []
    from safetensors.torch import load_file
    a = load_file(one/"distilled/lora4/train/adapter/adapter_model.safetensors")
    b = load_file(tmp_path/"run/distilled/lora4/train/adapter/adapter_model.safetensors")
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"largest adapter difference, 2 processes vs 1: {worst:.2e}")
    assert worst <= 1e-10
    log = (tmp_path/"run/log.txt").read_text()
    assert log.count("[vector] done") == 1  # one process logs


def test_killed_run_resumes_with_more_processes_than_work(config, one, tmp_path):
    "Killed part-way through an evaluation under 2 processes, resumed under 4 (more than the answers left to do): no duplicate, same files."
    d = tmp_path/"run"
    p = run(config, d, 2, extra=["--stages", "artifacts,extraction,vector,sweeps"]); assert p.returncode == 0, p.stderr[-3000:]
    # what a kill leaves: the first two answers of the base evaluation, a torn third line, the stage marked running
    ans = d/"steer/base/answers.jsonl"; keep = ans.read_text().splitlines()[:2]
    ans.write_text("\n".join(keep) + "\n{\"label\": \"ba"); (d/"steer/base/scores.jsonl").unlink()
    m = json.loads((d/"manifest.json").read_text()); m["steer/base"]["status"] = "running"; (d/"manifest.json").write_text(json.dumps(m))
    p = run(config, d, 4, extra=["--stages", "sweeps", "--set", "distillation.batch_size=4"]); assert p.returncode == 0, p.stderr[-3000:]
    assert "[steer/base] resuming" in (d/"log.txt").read_text()
    lines = ans.read_text().splitlines()
    assert len(lines) == len({(json.loads(l)["question_index"], json.loads(l)["sample_index"]) for l in lines}) == 9
    for k in [k for k in files(one) if k.startswith(("steer/", "vector/", "extraction/"))]:
        assert (one/k).read_bytes() == (d/k).read_bytes(), k


JUDGE_JOB = """
import json, sys, torch
from persona_vectors.models import load_model
from persona_vectors.judge import LocalJudge
from persona_vectors.parallel import is_main
m, t = load_model(sys.argv[1], dtype="float64")
items = [(f"question {i}", "answer " * (i % 5 + 1)) for i in range(7)]
scores = LocalJudge(m, t).score(items, "Rate {question} / {answer} from 0 to 100.")
if is_main(): print(json.dumps([[s.score, s.reason, s.mass] for s in scores]))
"""


def test_local_judge_scores_sharded(config, tmp_path):
    "Local-judge scoring sharded over 2 processes: every score and numeric mass as one process gives them."
    (tmp_path/"job.py").write_text(JUDGE_JOB)
    model = str(config.parent/"model")
    p = subprocess.run(launch_command(2, [str(tmp_path/"job.py"), model]), env=ENV, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    sharded = json.loads(p.stdout.strip().splitlines()[-1])
    from persona_vectors.models import load_model
    from persona_vectors.judge import LocalJudge
    m, t = load_model(model, dtype="float64")  # the reference: one process, this one
    items = [(f"question {i}", "answer " * (i % 5 + 1)) for i in range(7)]
    outs = [[[s.score, s.reason, s.mass] for s in LocalJudge(m, t).score(items, "Rate {question} / {answer} from 0 to 100.")], sharded]
    assert len(outs[0]) == 7 and outs[0] == outs[1]


def test_batch_that_does_not_split_is_refused_before_any_work(config, tmp_path):
    "What a 3-process launch's main process sees (RANK 0 of WORLD_SIZE 3): refused before any process group or model."
    p = subprocess.run([sys.executable, "-m", "persona_vectors.cli", "run", str(config), "--run-dir", str(tmp_path/"run")],
                       cwd=ROOT, env=dict(ENV, RANK="0", WORLD_SIZE="3", LOCAL_RANK="0"), capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert "distillation.batch_size = 2 does not split over 3 processes" in p.stderr, p.stderr[-2000:]
    assert not (tmp_path/"run"/"extraction").exists()
