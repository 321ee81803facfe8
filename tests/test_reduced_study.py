"""The README's claims, rerun: a reduced demo study on the packaged SmolLM2-135M-Instruct through the study runner.

The README quotes the committed demo run (nbs/demo_run, 13 min on 2 cores). This test reruns the same study, smaller
(8 of the 12 extraction questions, shorter answers, a 3-point coefficient sweep, one LoRA student on 32 trajectories, 8 steps),
in a few minutes, and asserts the qualitative claims the README makes from it, with bounds this size supports.
"""
import json, os, subprocess, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent

REDUCED = ";".join([
    "extraction.n_questions=8", "extraction.max_new_tokens=32", "extraction.methods=[]",  # vector methods: their own test
    "evaluation.n_questions=4", "evaluation.n_samples=3", "evaluation.max_new_tokens=32",
    "sweeps.alphas=[0.0, 4.0, 8.0]", "sweeps.layers=[]",
    "distillation.n_trajectories=32", "distillation.max_new_tokens=32", "distillation.trajectory_counts=[]", "distillation.max_steps=8",
    "distillation.n_heldout=12",  # the demo's learning rate (2e-3), 8 of its 12 steps
    "distillation.variants=[\"lora8\"]", "steering.alpha=4.0",  # one student; alpha fixed: the claims below are about alpha 4 and 8 (the demo chooses its alpha from a wider sweep)
])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("reduced")/"run"
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "persona_vectors.cli", "run", "demo", "--set", REDUCED, "--run-dir", str(d)],
                       cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1"), capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    print(f"reduced demo study: {time.time() - t0:.0f} s")
    return d


def summary(run, stage): return json.loads((run/"manifest.json").read_text())[stage]["summary"]


@pytest.mark.slow
def test_reduced_study_backs_the_readme(run):
    v = summary(run, "vector")
    sweep = {a: summary(run, s) for a, s in ((0, "steer/base"), (4, "steer/L15_a4"), (8, "steer/L15_a8"))}
    trait = {a: s["trait_index"]["mean"] for a, s in sweep.items()}
    logp = {a: s["logprob"]["mean"] for a, s in sweep.items()}
    lora, bake = summary(run, "distilled/lora8"), summary(run, "distilled/bake")
    print(f"held-out AUROC at layer 15: {v['auroc_at_monitor_layer']:.3f} (best {v['best_auroc']:.3f} at layer {v['best_layer']})")
    print("trait index by alpha:", {a: round(x, 1) for a, x in trait.items()}, " log-prob by alpha:", {a: round(x, 2) for a, x in logp.items()})
    print(f"lora8: gap recovered {lora['gap_recovered']:.3f}, trait {lora['trait_index']['mean']:.1f}; "
          f"bake: gap recovered {bake['gap_recovered']:.3f}, trait {bake['trait_index']['mean']:.1f}")
    # "Held-out separation of pos and neg answers along the vector (neutral read): AUROC 0.93" (demo size)
    assert v["auroc_at_monitor_layer"] >= 0.8
    # the coefficient sweep: the trait index rises with alpha while the coherence proxy falls
    assert trait[0] < trait[4] < trait[8] and logp[0] > logp[4] > logp[8]
    # a distilled LoRA recovers a share of the KL gap (0.737 at alpha 4 in nbs/precision/float32, 0.835 at the demo's alpha 2) and moves the trait most of the way
    assert lora["gap_recovered"] >= 0.5
    assert trait[0] + 0.5 * (trait[4] - trait[0]) < lora["trait_index"]["mean"]
    # the exact bake of all-position steering is close to the response-position teacher (0.811 at alpha 4, 0.850 at alpha 2), with no training
    assert 0.5 <= bake["gap_recovered"] < 1.0 and bake["trait_index"]["mean"] > trait[0] + 0.5 * (trait[4] - trait[0])
    # the report the README points to is written
    assert "## Distillation variants" in (run/"report.md").read_text()
