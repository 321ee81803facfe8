"""What only a GPU shows: bf16 steering, extraction and KL against float32, LoRA and full fine-tune steps under bf16
autocast at the reference settings, and a reduced bf16 study.

Selected by the `gpu` flag, like the notebooks' `#| gpu` cells: `make test FLAGS="slow gpu"` (PV_TEST_FLAGS) runs them
on a CUDA machine; anywhere else they skip with one reason. `PV_GPU_TEST_DEVICE=cpu` runs the same bodies on this CPU
(bf16 on a CPU works, slowly) on a tiny model, so their code is proven where there is no GPU:

    PV_TEST_FLAGS="slow gpu" PV_GPU_TEST_DEVICE=cpu python -m pytest -q tests/test_gpu.py

On CUDA they use the packaged SmolLM2-135M-Instruct (the model the study and `make gpu-check` use).
"""
import json, math, os, subprocess, sys
from pathlib import Path
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))  # bench/ is a package at the repository root

FLAGS = os.environ.get("PV_TEST_FLAGS", "slow").split()
DEV = os.environ.get("PV_GPU_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else None)
TINY = DEV is not None and not DEV.startswith("cuda")  # the CPU override: a tiny model, so the bodies run in seconds

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    "gpu" not in FLAGS or DEV is None,
    reason="GPU tests: need CUDA and the gpu flag (make test FLAGS=\"slow gpu\"); PV_GPU_TEST_DEVICE=cpu runs them on a CPU")]


@pytest.fixture(scope="module")
def models():
    "The float32 and bf16 copies of the model on DEV, and its tokenizer."
    import copy
    from persona_vectors.models import load_model, tiny_model
    if TINY:
        m, tok = tiny_model("llama"); m = m.to(DEV, torch.float32).eval()
    else: m, tok = load_model(device=DEV, dtype="float32")
    return m, copy.deepcopy(m).to(torch.bfloat16), tok


@pytest.fixture(scope="module")
def answers(models):
    "Contrastive 'pirate' answers of the float32 model (token ids), and their sides."
    from persona_vectors.extraction import contrastive_prompts
    from persona_vectors.artifacts import load_trait
    from persona_vectors.generation import generate, Sampling
    m32, _, tok = models
    trait = load_trait("pirate")
    jobs = [(j["prompt_ids"], j["side"]) for j in contrastive_prompts(tok, trait, trait.extract_questions[:6]) if j["pair_index"] < 2]
    gens = generate(m32, tok, [p for p, _ in jobs], sampling=Sampling(max_new_tokens=16 if TINY else 32, seed=0), progress=False)
    keep = [(g, s) for g, (_, s) in zip(gens, jobs) if g.response_ids]
    return [(g.prompt_ids + g.response_ids, g.prompt_len) for g, _ in keep], [s for _, s in keep]


@pytest.fixture(scope="module")
def vector(models, answers):
    "The persona vector from the float32 read (layer index as transformers' hidden_states)."
    from bench.gpu_check import check_extraction
    m32, m16, tok = models
    ex, vec = check_extraction((m32, tok), (m16, tok), *answers)
    return ex, vec.float()


LAYER = 2 if TINY else 15


def test_bf16_extraction_matches_float32(vector):
    "Activation means of the same answers read in bf16 (accumulated in float32): the persona vector at every layer."
    ex, vec = vector
    print(f"bf16 vs float32 persona vector: worst layer {ex['worst_layer']} cosine {ex['worst_layer_cosine']:.5f}")
    assert ex["worst_layer_cosine"] >= 0.99


def test_bf16_steering_matches_float32(models, vector):
    "The steering effect on teacher-forced log-probs in bf16 against float32, and the steered hidden state is the unsteered one plus alpha v."
    from bench.gpu_check import check_steering
    from persona_vectors.models import chat_prompt_ids
    from persona_vectors.generation import padded_batch
    from persona_vectors.steering import Steering, steer
    m32, m16, tok = models
    _, vec = vector
    st = check_steering((m32, tok), (m16, tok), vec, LAYER, 4.0, 16)
    print(f"steering effect cosine {st['effect_cosine']:.5f}, greedy agreement {st['greedy_token_agreement']:.3f}")
    assert st["effect_cosine"] >= 0.99 and st["effect_max_abs_diff"] > 0  # bf16 really ran
    # the convention in bf16: hidden_states[l] steered = unsteered + alpha * v[l] at every position ('all')
    batch = padded_batch([chat_prompt_ids(tok, "Tell me about the sea.")], tok.pad_token_id, m16.device)
    with torch.no_grad():
        plain = m16(**batch, output_hidden_states=True).hidden_states[LAYER].float()
        with steer(m16, Steering(vec, LAYER, 4.0, "all")):
            steered = m16(**batch, output_hidden_states=True).hidden_states[LAYER].float()
    d = (steered - plain)[0]
    want = (4.0 * vec[LAYER]).to(d)
    assert torch.nn.functional.cosine_similarity(d, want.expand_as(d), dim=-1).min() > 0.99


def test_bf16_kl_against_float32(models, vector):
    "KL(steered || unsteered) on the response tokens from bf16 logits is float32 and within 5% of the float32 models' KL."
    from persona_vectors.models import chat_prompt_ids
    from persona_vectors.generation import generate, Sampling, padded_batch
    from persona_vectors.steering import Steering, steer
    from persona_vectors.kl_losses import kl_on_response, kl_on_response_from_hidden
    from persona_vectors.trajectories import output_head
    m32, m16, tok = models
    _, vec = vector
    s = Steering(vec, LAYER, 4.0, "response")
    prompts = [chat_prompt_ids(tok, q) for q in ("Describe your morning.", "What is a good book?", "How do boats float?")]
    gens = generate(m32, tok, prompts, sampling=Sampling(max_new_tokens=16, seed=0), context=steer(m32, s), progress=False)
    batch = padded_batch([g.prompt_ids + g.response_ids for g in gens], tok.pad_token_id, m32.device)
    T = batch["input_ids"].shape[1]
    plens = [T - len(g.prompt_ids + g.response_ids) + g.prompt_len for g in gens]  # left padding: where each response starts
    mask = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
    for i, p in enumerate(plens): mask[i, p - 1:T - 1] = True  # positions whose outputs predict response tokens
    kl = {}
    for name, m in (("f32", m32), ("b16", m16)):
        with torch.no_grad():
            out = m(**batch, output_hidden_states=True)
            with steer(m, s, prompt_lens=[len(g.prompt_ids) for g in gens], attention_mask=batch["attention_mask"]):
                tout = m(**batch, output_hidden_states=True)
        kl[name] = kl_on_response(out.logits, tout.logits, mask)
        hid = kl_on_response_from_hidden(out.hidden_states[-1], tout.hidden_states[-1], mask, output_head(m))
        assert kl[name].dtype == torch.float32 and hid.dtype == torch.float32
        assert math.isclose(hid.item(), kl[name].item(), rel_tol=1e-3, abs_tol=1e-6)  # the chunked head gives the same KL
    print(f"KL(teacher || base) per token: float32 {kl['f32'].item():.5f}, bf16 {kl['b16'].item():.5f}")
    assert kl["f32"] > 0 and abs(kl["b16"] - kl["f32"]) <= 0.05 * kl["f32"]


def _trajectories(models, vector, tmp_path, n=16):
    from persona_vectors.generation import Sampling
    from persona_vectors.steering import Steering
    from persona_vectors.trajectories import sample_trajectories
    from persona_vectors.artifacts import load_trait
    m32, _, tok = models
    s = Steering(vector[1], LAYER, 2.0, "response")
    trajs = sample_trajectories(m32, tok, load_trait("pirate").extract_questions, s, tmp_path/"traj.jsonl", n=n,
                                sampling=Sampling(max_new_tokens=16, seed=0), batch_size=8, progress=False)
    return s, [t for t in trajs if t["response_ids"]]  # a teacher that ends at once leaves nothing to distill


def test_lora_steps_under_autocast_reference_settings(models, vector, tmp_path):
    "LoRA r=8 on the bf16 base, bf16 autocast, gradient checkpointing: the loss is finite and falls, adapters stay float32 and move."
    import copy
    from persona_vectors.distillation import distill, DistillConfig
    _, m16, tok = models
    s, trajs = _trajectories(models, vector, tmp_path)
    if DEV.startswith("cuda"): torch.cuda.reset_peak_memory_stats()
    res = distill(copy.deepcopy(m16), tok, trajs, s, tmp_path/"lora", DistillConfig(method="lora", r=8, max_steps=6, batch_size=4,
                  grad_accum=1, learning_rate=2e-3, logging_steps=1, bf16=True, gradient_checkpointing=True), save=False, progress=False)
    loss = [l for _, l in res.summary["loss"]]
    lora = {n: p for n, p in res.model.named_parameters() if "lora_B" in n}
    print(f"LoRA loss {loss[0]:.4f} -> {loss[-1]:.4f}" + (f", peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if DEV.startswith("cuda") else ""))
    assert res.summary["steps"] == 6 and all(math.isfinite(l) for l in loss) and loss[-1] < loss[0]
    assert all(p.dtype == torch.float32 for p in lora.values()) and any(p.abs().max() > 0 for p in lora.values())  # B starts at 0
    assert next(p for n, p in res.model.named_parameters() if "lora_" not in n).dtype == torch.bfloat16  # the frozen base stays bf16


def _full_steps(models, vector, tmp_path, optim=None):
    "A few full fine-tune steps as a bf16 study takes them: float32 master weights, bf16 autocast, gradient checkpointing."
    import copy
    from persona_vectors.distillation import distill, DistillConfig
    m32, _, tok = models
    s, trajs = _trajectories(models, vector, tmp_path)
    student, before = copy.deepcopy(m32), {n: p.detach().clone() for n, p in m32.named_parameters()}
    res = distill(student, tok, trajs, s, tmp_path/"full", DistillConfig(method="full", max_steps=4, batch_size=4, grad_accum=1,
                  learning_rate=1e-4, logging_steps=1, bf16=True, gradient_checkpointing=True,
                  training_args={"optim": optim} if optim else {}), save=False, progress=False, teacher_model=m32)
    loss = [l for _, l in res.summary["loss"]]
    moved = sum(not torch.equal(p.detach(), before[n]) for n, p in res.model.named_parameters())
    print(f"full fine-tune ({optim or 'adamw'}) loss {loss[0]:.4f} -> {loss[-1]:.4f}, {moved} tensors moved")
    assert res.summary["steps"] == 4 and all(math.isfinite(l) for l in loss)
    assert all(p.dtype == torch.float32 for p in res.model.parameters()) and moved > 0.9 * len(before)
    assert all(torch.equal(p, before[n]) for n, p in m32.named_parameters())  # the teacher's weights are untouched


def test_full_steps_under_autocast(models, vector, tmp_path):
    _full_steps(models, vector, tmp_path)


def test_full_steps_paged_8bit_adamw(models, vector, tmp_path):
    "The reference full fine-tune's optimizer: paged 8-bit AdamW from bitsandbytes (CUDA only)."
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed: the 8-bit AdamW step is not checked")
    if not DEV.startswith("cuda"): pytest.skip("paged 8-bit AdamW needs CUDA (bitsandbytes' paged optimizers)")
    _full_steps(models, vector, tmp_path, optim="paged_adamw_8bit")


def test_reduced_study_in_bf16(tmp_path):
    "A reduced study through the CLI in bf16 on DEV: every stage to the report; the distilled student recovers part of the gap."
    if TINY:
        from persona_vectors.models import tiny_model
        from bench.gpu_check import SMOKE_DEMO
        m, t = tiny_model("llama"); m.save_pretrained(tmp_path/"model"); t.save_pretrained(tmp_path/"model")
        sets = f"model.name={tmp_path/'model'};" + SMOKE_DEMO
    else:
        sets = ";".join(["extraction.n_questions=4", "extraction.max_new_tokens=24", "extraction.methods=[]",
                         "evaluation.n_questions=2", "evaluation.n_samples=4", "evaluation.max_new_tokens=24",
                         "sweeps.alphas=[0.0, 4.0]", "sweeps.layers=[]", "steering.alpha=4.0", "distillation.variants=[\"lora8\"]",
                         "distillation.n_trajectories=32", "distillation.max_new_tokens=24", "distillation.trajectory_counts=[]",
                         "distillation.max_steps=8", "distillation.n_heldout=8"])
    sets += f";model.dtype=\"bfloat16\";model.device=\"{DEV}\""
    run = tmp_path/"run"
    p = subprocess.run([sys.executable, "-m", "persona_vectors.cli", "run", "demo", "--set", sets, "--run-dir", str(run)], cwd=ROOT,
                       env=dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1"), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    man = json.loads((run/"manifest.json").read_text())
    assert json.loads((run/"config.json").read_text())["model"]["dtype"] == "bfloat16"
    student = next(v["summary"] for k, v in man.items() if k.startswith("distilled/lora"))
    bake = man["distilled/bake"]["summary"]
    print(f"bf16 reduced study: student gap recovered {student['gap_recovered']:.3f}, bake {bake['gap_recovered']:.3f}; "
          f"{sum(v.get('seconds') or 0 for v in man.values()):.0f} s of stages")
    assert math.isfinite(student["gap_recovered"]) and (run/"report.md").exists()
    if not TINY: assert student["gap_recovered"] >= 0.5 and 0.5 <= bake["gap_recovered"] < 1.0
