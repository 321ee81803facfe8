"""`make gpu-check`: the project's claims on one CUDA GPU, with only the packaged SmolLM2 (no hub), in a few minutes.

    python -m bench.gpu_check                 # on a CUDA machine: every check, results in bench/results/gpu_check.{json,md}
    python -m bench.gpu_check                 # without CUDA: says so and exits 0, running nothing
    python -m bench.gpu_check --smoke-cpu     # the same checks on a tiny model on this CPU (what the test suite runs)

Checks, each against a float32 run of the same model in the same process:

1. **bf16 steering**: the steering effect (steered minus unsteered next-token log-probs, teacher-forced, 'response'
   positions) in bf16 against float32: cosine of the effects and the largest difference; greedy steered answers:
   the share of tokens that agree.
2. **Extraction**: activation means of the same answers read by the bf16 and the float32 model (means accumulated in
   float32): the persona vector's cosine at every layer (worst layer reported).
3. **Distillation**: 20 steps of LoRA r=8 (bf16 autocast, float32 adapters) on trajectories of the steered bf16 model:
   the loss falls, the step time and `torch.cuda.max_memory_allocated`.
4. **Benchmarks**: `python -m bench.run --only steering,extraction,distillation` on CUDA (bf16), its rows copied in.
"""
from __future__ import annotations
import argparse, contextlib, copy, json, shutil, sys, time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ["What is the best way to spend a Sunday?", "How do I learn to cook?", "Tell me about the ocean.",
             "What makes a good friend?", "How should I plan a trip?", "Why do people keep journals?"]


def _models(device: str, smoke: bool):
    "The float32 and bf16 copies of the check's model (the packaged SmolLM2, or a tiny Llama with --smoke-cpu)."
    from persona_vectors.models import load_model, tiny_model
    if smoke:
        m, t = tiny_model("llama")
        m = m.to(device, torch.float32).eval()
        return (m, t), (copy.deepcopy(m).to(torch.bfloat16), t)
    return load_model(device=device, dtype="float32"), load_model(device=device, dtype="bfloat16")


def check_steering(f32, b16, vector, layer: int, alpha: float, max_new_tokens: int) -> dict:
    "bf16 against float32: the steering effect on teacher-forced log-probs, and greedy steered answers."
    from persona_vectors.models import chat_prompt_ids
    from persona_vectors.generation import generate, Sampling, padded_batch
    from persona_vectors.steering import Steering, steer
    (m32, tok), (m16, _) = f32, b16
    s = Steering(vector, layer, alpha, "response")
    prompts = [chat_prompt_ids(tok, q) for q in QUESTIONS]
    greedy = Sampling(greedy=True, max_new_tokens=max_new_tokens)
    ans = {}
    for name, m in (("f32", m32), ("b16", m16)):
        ans[name] = [g.response_ids for g in generate(m, tok, prompts, sampling=greedy, context=steer(m, s), progress=False)]
    agree = sum(a == b for x, y in zip(ans["f32"], ans["b16"]) for a, b in zip(x, y))
    total = sum(min(len(x), len(y)) for x, y in zip(ans["f32"], ans["b16"]))
    # teacher-forced effect on the float32 model's own steered answers
    seqs = [p + r for p, r in zip(prompts, ans["f32"])]
    batch = padded_batch(seqs, tok.pad_token_id, m32.device)
    plens = [len(p) for p in prompts]
    effects = {}
    for name, m in (("f32", m32), ("b16", m16)):
        with torch.no_grad():
            plain = torch.log_softmax(m(**batch).logits.float(), -1)
            with steer(m, s, prompt_lens=plens, attention_mask=batch["attention_mask"]):
                steered = torch.log_softmax(m(**batch).logits.float(), -1)
        effects[name] = (steered - plain)[batch["attention_mask"].bool()]
    a, b = effects["f32"].flatten().double(), effects["b16"].flatten().double()
    return dict(effect_cosine=float(a @ b / (a.norm() * b.norm())), effect_max_abs_diff=float((a - b).abs().max()),
                effect_max_abs=float(a.abs().max()), greedy_token_agreement=agree / max(total, 1), greedy_tokens=total)


def check_extraction(f32, b16, answers: list[tuple[list[int], int]], sides: list[str]) -> dict:
    "Persona vectors from the same answers read in bf16 and in float32: cosine per layer."
    from persona_vectors.extraction import activation_means, persona_vector
    vec = {}
    for name, (m, tok) in (("f32", f32), ("b16", b16)):
        means = activation_means(m, answers, batch_size=8, pad_id=tok.pad_token_id, progress=False)["response_avg"]
        pos = torch.tensor([s == "pos" for s in sides])
        vec[name] = persona_vector(means[pos], means[~pos]).double()
    cos = torch.nn.functional.cosine_similarity(vec["f32"][1:], vec["b16"][1:], dim=-1)
    return dict(worst_layer_cosine=float(cos.min()), worst_layer=int(cos.argmin()) + 1, mean_cosine=float(cos.mean()),
                means_dtype=str(vec["b16"].dtype)), vec["f32"]


def check_distillation(b16, vector, layer: int, alpha: float, out: Path, device: str, smoke: bool) -> dict:
    "20 LoRA steps on the steered bf16 model's trajectories: loss, step time, peak memory."
    from persona_vectors.generation import Sampling
    from persona_vectors.steering import Steering
    from persona_vectors.trajectories import sample_trajectories
    from persona_vectors.distillation import distill, DistillConfig
    m, tok = b16
    m = copy.deepcopy(m)  # LoRA wraps its model in place: the check's bf16 model stays plain for the checks after it
    s = Steering(vector, layer, alpha, "response")
    trajs = sample_trajectories(m, tok, QUESTIONS, s, out/"trajectories.jsonl", n=32,
                                sampling=Sampling(max_new_tokens=16 if smoke else 48, seed=0), batch_size=16, progress=False)
    trajs = [t for t in trajs if t["response_ids"]]  # a teacher that ends at once leaves nothing to distill
    if device.startswith("cuda"): torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated() if device.startswith("cuda") else 0
    t0 = time.time()
    res = distill(m, tok, trajs, s, out/"distill", DistillConfig(method="lora", r=8, max_steps=20, batch_size=4, grad_accum=1,
                  learning_rate=5e-4, logging_steps=1, save_steps=100, bf16=True), save=False, progress=False)
    dt = time.time() - t0
    peak = (torch.cuda.max_memory_allocated() - start) if device.startswith("cuda") else None
    loss = [l for _, l in res.summary["loss"]]
    return dict(steps=res.summary["steps"], first_loss=loss[0], last_loss=loss[-1], step_s=dt / max(res.summary["steps"], 1),
                peak_bytes=peak, adapter_dtype=str(next(p for n, p in res.model.named_parameters() if "lora_" in n).dtype))


# ------------------------------------------------------------------------------------------------ the bf16 gap, attributed
@contextlib.contextmanager
def _full_reductions():
    "cuBLAS bf16 matmuls with float32 reductions (torch lets them reduce in bf16 by default); nothing changes on a CPU."
    m = torch.backends.cuda.matmul
    old = m.allow_bf16_reduced_precision_reduction
    m.allow_bf16_reduced_precision_reduction = False
    try: yield
    finally: m.allow_bf16_reduced_precision_reduction = old


def _logps(model, ds, settings, batch_size: int, head_f32: bool = False) -> torch.Tensor:
    "float32 log-probs [positions, vocab] at the response positions of `ds`, in dataset order, batches in a fixed order (the same padding for every model)."
    from persona_vectors.trajectories import DistillCollator, forward_hidden, output_head, unwrap
    from persona_vectors.models import base_model
    dev = next(model.parameters()).device
    col, out = DistillCollator(0), []
    lin = base_model(unwrap(model)).get_output_embeddings()
    head = (lambda h: torch.nn.functional.linear(h.float(), lin.weight.float(), None if lin.bias is None else lin.bias.float())) \
        if head_f32 else output_head(model)
    with torch.no_grad():
        for start in range(0, len(ds), batch_size):
            batch = {k: v.to(dev) for k, v in col([ds[i] for i in range(start, min(start + batch_size, len(ds)))]).items()}
            h = forward_hidden(model, batch, settings)
            out.append(torch.log_softmax(head(h[batch["loss_mask"]]).float(), -1))
    return torch.cat(out)


def _kl(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    "KL(p || q) per row from float32 log-probs, summed in float64."
    return (lp.exp() * (lp - lq)).double().sum(-1)


def check_bf16_gap(f32, vector, layer: int, alpha: float, out: Path, smoke: bool) -> dict:
    """Where float32 and bf16 part in gap recovered, on the SAME trajectories (sampled by the float32 teacher).

    Three students with one LoRA recipe (the demo's lora8: r 8, alpha 16, every projection, lr 2e-3, batch 4 x 2, the same
    seed and data order), trained (a) in float32, (b) on the bf16 base under bf16 autocast (what a bf16 study does), (c) on the
    float32 base under bf16 autocast; each scored with teacher, base and student all in float32, all in bf16 (as a bf16 study
    scores), and in bf16 with each variation that could matter: the output head in float32, cuBLAS reductions in float32, the
    adapters left in float32. Every KL comes from float32 log-probs of one fixed batching, summed in float64."""
    from persona_vectors.generation import Sampling
    from persona_vectors.steering import Steering
    from persona_vectors.artifacts import load_trait
    from persona_vectors.trajectories import sample_trajectories, TrajectoryDataset
    from persona_vectors.distillation import distill, DistillConfig, lora_student
    from persona_vectors.distill_eval import distillation_kl
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    m32, tok = f32
    b16 = copy.deepcopy(m32).to(torch.bfloat16)
    st = Steering(vector, layer, alpha, "response")
    trait = load_trait("pirate")
    n_train, n_held, new = (16, 8, 12) if smoke else (80, 24, 48)
    samp = Sampling(max_new_tokens=new, seed=0)
    t0 = time.time()
    nonempty = lambda ts: [t for t in ts if t["response_ids"]]  # a teacher that ends at once leaves nothing to distill or score
    train = nonempty(sample_trajectories(m32, tok, trait.extract_questions, st, out/"train.jsonl", n=n_train, sampling=samp, batch_size=16, progress=False))
    held = nonempty(sample_trajectories(m32, tok, trait.eval_questions, st, out/"heldout.jsonl", n=n_held, sampling=samp, batch_size=8, progress=False))
    t_sample = time.time() - t0
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    recipe = dict(method="lora", r=8, lora_alpha=16, target_modules=targets, max_steps=20, batch_size=4, grad_accum=2,
                  learning_rate=2e-3, seed=0, logging_steps=1, save_steps=1000)
    students, losses, t_train = {}, {}, {}
    for name, base, bf16 in (("f32", m32, False), ("bf16", b16, True), ("f32+autocast", m32, True)):
        t1 = time.time()
        res = distill(copy.deepcopy(base), tok, train, st, out/name, DistillConfig(**recipe, bf16=bf16), save=False, progress=False)
        t_train[name] = time.time() - t1
        students[name] = {k: v.detach().float().clone() for k, v in get_peft_model_state_dict(res.model).items()}
        losses[name] = [l for _, l in res.summary["loss"]]
        del res
    def student_on(name, base, cast=None):
        "The student's trained adapters on a fresh copy of `base` (cast: the whole model to that dtype, as a bf16 study evaluates)."
        s = lora_student(copy.deepcopy(base), r=8, lora_alpha=16, target_modules=targets, seed=0)
        set_peft_model_state_dict(s, students[name])
        return (s.to(cast) if cast is not None else s).eval()
    ds = TrajectoryDataset(held, tok, m32, skip_empty=True)
    bs = 8
    lp = {}
    t2 = time.time()
    lp["T32"], lp["B32"] = _logps(m32, ds, [st], bs), _logps(m32, ds, [], bs)
    lp["T16"], lp["B16"] = _logps(b16, ds, [st], bs), _logps(b16, ds, [], bs)
    lp["T16 head32"], lp["B16 head32"] = _logps(b16, ds, [st], bs, True), _logps(b16, ds, [], bs, True)
    lp["T16 batch1"] = _logps(b16, ds, [st], 1)
    with _full_reductions(): lp["T16 fullred"], lp["B16 fullred"] = _logps(b16, ds, [st], bs), _logps(b16, ds, [], bs)
    lib = {}
    for name in students:
        s32 = student_on(name, m32); lp[f"{name}@32"] = _logps(s32, ds, [], bs)
        lib[f"{name}@32"] = distillation_kl(s32, held, st, tokenizer=tok, progress=False)["gap_recovered"]; del s32
        s16 = student_on(name, b16, torch.bfloat16); lp[f"{name}@16"] = _logps(s16, ds, [], bs)
        lp[f"{name}@16 head32"] = _logps(s16, ds, [], bs, True)
        with _full_reductions(): lp[f"{name}@16 fullred"] = _logps(s16, ds, [], bs)
        lib[f"{name}@16"] = distillation_kl(s16, held, st, tokenizer=tok, progress=False)["gap_recovered"]; del s16
        s16a = student_on(name, b16); lp[f"{name}@16 adapters32"] = _logps(s16a, ds, [], bs); del s16a
    t_score = time.time() - t2
    KL = lambda p, q: float(_kl(lp[p], lp[q]).mean())
    gap = lambda t, b, s: 1 - KL(t, s) / KL(t, b)
    g = {}
    for name in students:
        g[name] = {"all float32": gap("T32", "B32", f"{name}@32"),
                   "all bf16 (as a bf16 study scores)": gap("T16", "B16", f"{name}@16"),
                   "bf16, output head in float32": gap("T16 head32", "B16 head32", f"{name}@16 head32"),
                   "bf16, float32 cuBLAS reductions": gap("T16 fullred", "B16 fullred", f"{name}@16 fullred"),
                   "bf16, adapters kept float32": gap("T16", "B16", f"{name}@16 adapters32"),
                   "teacher and base float32, student bf16": gap("T32", "B32", f"{name}@16"),
                   "teacher and base bf16, student float32": gap("T16", "B16", f"{name}@32")}
    ref, bf = g["f32"]["all float32"], g["bf16"]["all bf16 (as a bf16 study scores)"]
    floor = {"KL(T32 || T16): the bf16 teacher against the float32 one": KL("T32", "T16"),
             "KL(B32 || B16): the bf16 base against the float32 one": KL("B32", "B16"),
             "KL(T16 || T16 batch 1): the bf16 teacher recomputed unpadded": KL("T16", "T16 batch1"),
             "KL(T16 || T16 head32): bf16 logits rounding": KL("T16 head32", "T16"),
             **{f"KL({n}@32 || {n}@16): the {n} student scored in bf16": KL(f"{n}@32", f"{n}@16") for n in students}}
    kl_tb = KL("T32", "B32")
    return dict(
        gap=g, reference_gap_f32=ref, bf16_study_gap=bf, difference=bf - ref,
        attribution={"training precision (bf16 student vs f32 student, both scored in float32)": g["bf16"]["all float32"] - ref,
                     "scoring precision (bf16 student scored in bf16 vs float32)": bf - g["bf16"]["all float32"],
                     "autocast alone (f32 base under autocast vs f32, scored in float32)": g["f32+autocast"]["all float32"] - ref,
                     "scoring a float32 student in bf16": g["f32"]["all bf16 (as a bf16 study scores)"] - ref},
        kl={"T32||B32": kl_tb, "T16||B16": KL("T16", "B16"), **{f"T32||{n}@32": KL("T32", f"{n}@32") for n in students},
            **{f"T16||{n}@16": KL("T16", f"{n}@16") for n in students}},
        noise_floor=floor, noise_floor_share_of_gap={k: v / kl_tb for k, v in floor.items()},
        library_gap=lib, library_matches={k: abs(lib[k] - (g[k.split("@")[0]]["all float32"] if k.endswith("@32") else
                                                       g[k.split("@")[0]]["all bf16 (as a bf16 study scores)"])) for k in lib},
        losses={k: [v[0], v[-1]] for k, v in losses.items()}, n_train=len(train), n_heldout=len(ds), n_tokens=int(lp["T32"].shape[0]),
        layer=layer, alpha=alpha, seconds=dict(sampling=t_sample, training=t_train, scoring=t_score))


# ------------------------------------------------------------------------------------------------------------ the demo
# a reduced demo for --smoke-cpu: the same runner, config and stages on the tiny model (seconds, not minutes)
SMOKE_DEMO = ";".join([
    "steering.layer=2", "steering.alpha=2.0", "sweeps.alphas=[0.0, 2.0]", "sweeps.layers=[]",
    "extraction.n_questions=4", "extraction.max_new_tokens=8", "extraction.batch_size=8", "extraction.methods=[]",
    "evaluation.n_questions=2", "evaluation.n_samples=2", "evaluation.max_new_tokens=8",
    "distillation.variants=[\"lora4\"]", "distillation.n_trajectories=8", "distillation.max_new_tokens=6",
    "distillation.trajectory_counts=[]", "distillation.max_steps=2", "distillation.batch_size=2", "distillation.grad_accum=2",
    "distillation.n_heldout=4"])


def _demo_rows(run: Path) -> dict:
    "The headline numbers of a demo run directory: operating point, AUROC, each variant's trait index / log-prob / gap, stage times."
    man = json.loads((run/"manifest.json").read_text())
    done = {k: v for k, v in man.items() if v.get("status") == "done"}
    op = done.get("operating_point/alpha", {}).get("summary", {})
    L, A = op.get("layer"), op.get("alpha")
    if A is None:
        cfg = json.loads((run/"config.json").read_text())["steering"]; L, A = cfg["layer"], cfg["alpha"]
    r = dict(layer=L, alpha=A, auroc=done.get("vector", {}).get("summary", {}).get("auroc_at_monitor_layer"), variants={})
    names = [("base", "steer/base"), ("teacher", f"steer/L{L}_a{format(A, 'g')}")] + \
            [(k.split("/", 1)[1], k) for k in done if k.startswith("distilled/")]
    for label, key in names:
        s = done.get(key, {}).get("summary")
        if s: r["variants"][label] = dict(trait=s["trait_index"]["mean"], logprob=s["logprob"]["mean"], gap=s.get("gap_recovered"),
                                          gap_ci=s.get("gap_recovered_ci"))
    groups = {}
    for k, v in done.items(): groups[k.split("/")[0]] = groups.get(k.split("/")[0], 0) + (v.get("seconds") or 0)
    r["seconds"] = dict(groups, total=sum(groups.values()))
    return r


def compare_demo(mine: dict, ref: dict, device: str) -> str:
    "Markdown: this demo run beside the committed one (nbs/demo_run, float32 on 2 CPU cores)."
    f = lambda x, d: "—" if x is None else f"{x:.{d}f}"
    lines = [f"| | committed nbs/demo_run (float32, CPU) | this run ({device}) | difference |", "|---|---|---|---|",
             f"| operating point | layer {ref['layer']}, alpha {ref['alpha']} | layer {mine['layer']}, alpha {mine['alpha']} | |",
             f"| held-out AUROC | {f(ref['auroc'], 3)} | {f(mine['auroc'], 3)} | "
             f"{f(None if None in (ref['auroc'], mine['auroc']) else mine['auroc'] - ref['auroc'], 3)} |"]
    for v in dict.fromkeys(list(ref["variants"]) + list(mine["variants"])):
        a, b = ref["variants"].get(v, {}), mine["variants"].get(v, {})
        for key, label, d in (("trait", "trait index", 1), ("logprob", "log-prob", 2), ("gap", "gap recovered", 3)):
            x, y = a.get(key), b.get(key)
            if x is None and y is None: continue
            lines.append(f"| {v}: {label} | {f(x, d)} | {f(y, d)} | {f(None if None in (x, y) else y - x, d)} |")
    for k in dict.fromkeys(list(ref["seconds"]) + list(mine["seconds"])):
        lines.append(f"| seconds: {k} | {f(ref['seconds'].get(k), 1)} | {f(mine['seconds'].get(k), 1)} | |")
    return "\n".join(lines)


def check_demo(run_dir: Path, smoke: bool, timeout: int, model_dir: Path | None = None) -> dict:
    "The demo study through the CLI (`persona-vectors run demo`) into its own run directory, and its headline beside nbs/demo_run."
    import os, subprocess
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "persona_vectors.cli", "run", "demo", "--run-dir", str(run_dir)]
    if smoke: cmd += ["--set", f"model.name={model_dir};" + SMOKE_DEMO]
    t0 = time.time()
    p = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1"), capture_output=True, text=True,
                       timeout=timeout)
    wall = time.time() - t0
    if p.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` exited {p.returncode} after {wall:.0f} s:\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    mine, ref = _demo_rows(run_dir), _demo_rows(ROOT/"nbs"/"demo_run")
    return dict(run_dir=str(run_dir), command=" ".join(cmd[1:]), wall_s=wall, run=mine, committed=ref)


# ------------------------------------------------------------------------------------------------------------ report
def verdicts(r: dict) -> dict:
    "Pass/fail of each check, with its bound (a check that raised fails its verdicts)."
    ok = lambda k: r.get(k, {}).get("ok", False)
    st, ex, di, gp = (r.get(k, {}) for k in ("steering", "extraction", "distillation", "bf16_gap"))
    v = {"bf16 steering effect cosine >= 0.99": ok("steering") and st["effect_cosine"] >= 0.99,
         "bf16 persona vector cosine >= 0.99 at every layer": ok("extraction") and ex["worst_layer_cosine"] >= 0.99,
         "LoRA loss falls over 20 steps": ok("distillation") and di["last_loss"] < di["first_loss"],
         "LoRA adapters train in float32": ok("distillation") and di["adapter_dtype"] == "torch.float32",
         "bf16 gap check ran; the library's distillation_kl gives its float32 gaps (|diff| < 1e-4)":
             ok("bf16_gap") and all(d < 1e-4 for k, d in gp["library_matches"].items() if k.endswith("@32")),
         "bf16 study's gap recovered within 0.02 of float32 (same trajectories)": ok("bf16_gap") and abs(gp["difference"]) <= 0.02}
    if "demo" in r: v["demo study ran to its report"] = ok("demo")
    if "bench" in r: v["benchmark rows written"] = ok("bench")
    return v


def markdown(r: dict) -> str:
    lines = [f"# GPU check ({r['device']}, {r['model']})", "", f"Run {r['started']} in {r.get('wall_s', 0):.0f} s. "
             f"torch {r['versions'].get('torch')}, transformers {r['versions'].get('transformers')}, peft {r['versions'].get('peft')}.", "",
             "| check | result |", "|---|---|"]
    st, ex, di = (r.get(k, {}) for k in ("steering", "extraction", "distillation"))
    if st.get("ok"):
        lines.append(f"| bf16 vs float32 steering effect | cosine {st['effect_cosine']:.4f}, largest difference {st['effect_max_abs_diff']:.3g} "
                     f"(largest effect {st['effect_max_abs']:.3g}); greedy steered tokens agreeing {st['greedy_token_agreement']:.1%} of {st['greedy_tokens']} |")
    if ex.get("ok"):
        lines.append(f"| bf16 vs float32 persona vector | worst layer {ex['worst_layer']}: cosine {ex['worst_layer_cosine']:.4f}; mean {ex['mean_cosine']:.4f} |")
    if di.get("ok"):
        peak = "—" if di["peak_bytes"] is None else f"{di['peak_bytes'] / 2**20:.0f} MiB"
        lines.append(f"| 20-step LoRA r=8 (bf16 autocast) | loss {di['first_loss']:.4f} -> {di['last_loss']:.4f}, {di['step_s']:.3f} s/step, "
                     f"peak {peak}, adapters {di['adapter_dtype']} |")
    for k in CHECKS:
        if k in r and not r[k].get("ok"):
            lines.append(f"| {k} | **failed** after {r[k].get('seconds', 0):.0f} s: `{r[k]['error'].strip().splitlines()[-1][:300]}` (traceback in the json) |")
    gp = r.get("bf16_gap", {})
    if gp.get("ok"):
        lines += ["", f"## The bf16 gap, attributed (layer {gp['layer']}, alpha {gp['alpha']}; {gp['n_train']} training and "
                  f"{gp['n_heldout']} held-out trajectories from the float32 teacher, {gp['n_tokens']} scored tokens)", "",
                  f"Gap recovered, float32 student scored in float32: **{gp['reference_gap_f32']:.3f}**; bf16 student (bf16 base, "
                  f"autocast) scored in bf16, as a bf16 study does: **{gp['bf16_study_gap']:.3f}** (difference {gp['difference']:+.3f}).", "",
                  "| scoring | " + " | ".join(f"student trained {n}" for n in gp["gap"]) + " |", "|---|" + "---|" * len(gp["gap"])]
        for s in next(iter(gp["gap"].values())):
            lines.append(f"| {s} | " + " | ".join(f"{gp['gap'][n][s]:.4f}" for n in gp["gap"]) + " |")
        lines += ["", "| attribution | gap recovered |", "|---|---|"] + [f"| {k} | {v:+.4f} |" for k, v in gp["attribution"].items()]
        lines += ["", f"| noise floor (nats per token) | KL | share of KL(T32 ‖ B32) = {gp['kl']['T32||B32']:.4f} |", "|---|---|---|"] + \
                 [f"| {k} | {v:.3g} | {gp['noise_floor_share_of_gap'][k]:.2%} |" for k, v in gp["noise_floor"].items()]
        lines += ["", "Training loss (first -> last): " + "; ".join(f"{k} {a:.4f} -> {b:.4f}" for k, (a, b) in gp["losses"].items()) +
                  f". The library's `distillation_kl` on the same students: " +
                  ", ".join(f"{k} {v:.4f}" for k, v in gp["library_gap"].items()) + "."]
    dm = r.get("demo", {})
    if dm.get("ok"):
        lines += ["", f"## The demo study on this machine (`{dm['command']}`, {dm['wall_s']:.0f} s)", "",
                  compare_demo(dm["run"], dm["committed"], r["device"])]
    if r.get("bench", {}).get("ok"): lines += ["", f"Benchmark rows: `{r['bench']['file']}`."]
    lines += ["", "| verdict | passed |", "|---|---|"] + [f"| {k} | {'yes' if v else '**no**'} |" for k, v in r["verdicts"].items()]
    return "\n".join(lines) + "\n"


CHECKS = ("extraction", "steering", "distillation", "bf16_gap", "demo", "bench")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.splitlines()[0])
    ap.add_argument("--smoke-cpu", action="store_true", help="the same checks on a tiny model on this CPU (seconds)")
    ap.add_argument("--out", default=str(ROOT/"bench"/"results"), help="directory of the result files")
    ap.add_argument("--no-bench", action="store_true", help="skip the benchmark rows")
    ap.add_argument("--no-demo", action="store_true", help="skip the demo study")
    ap.add_argument("--demo-dir", default=None, help="run directory of the demo study (default runs/gpu_demo; with --smoke-cpu, under --out)")
    ap.add_argument("--only", default=None, help=f"comma-separated checks to run, of {','.join(CHECKS)} (extraction always runs: the others use its vector)")
    args = ap.parse_args(argv)
    if not args.smoke_cpu and not torch.cuda.is_available():
        print("gpu-check: no CUDA device on this machine, so nothing was run (it needs one GPU; "
              "`python -m bench.gpu_check --smoke-cpu` runs the same checks on a tiny model here).")
        return 0
    import os, platform, traceback
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the packaged model only: nothing to fetch
    from persona_vectors.records import write_json, atomic_write
    only = set(CHECKS) if args.only is None else {"extraction", *args.only.split(",")}
    if args.no_bench: only.discard("bench")
    if args.no_demo: only.discard("demo")
    device = "cpu" if args.smoke_cpu else "cuda"
    t0, started = time.time(), time.strftime("%Y-%m-%d %H:%M:%S")
    out = Path(args.out); work = out/".gpu_check_work"
    shutil.rmtree(work, ignore_errors=True); work.mkdir(parents=True)
    name = "gpu_check_smoke" if args.smoke_cpu else "gpu_check"
    import transformers
    try: import peft; pv = peft.__version__
    except Exception: pv = None
    r = dict(device=torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke)",
             model="tiny llama" if args.smoke_cpu else "SmolLM2-135M-Instruct", started=started,
             versions=dict(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda,
                           transformers=transformers.__version__, peft=pv))
    def save():
        r["verdicts"], r["wall_s"] = verdicts(r), time.time() - t0
        write_json(out/f"{name}.json", r); atomic_write(out/f"{name}.md", markdown(r))
    def check(key, fn):
        "Run one check; record its result or its traceback, and the results so far, whatever happens."
        t1 = time.time()
        print(f"gpu-check: {key} ...", flush=True)
        try: r[key] = dict(fn(), ok=True)
        except Exception:
            r[key] = dict(ok=False, error=traceback.format_exc())
            print(r[key]["error"], file=sys.stderr, flush=True)
        r[key]["seconds"] = time.time() - t1
        print(f"gpu-check: {key} {'ok' if r[key]['ok'] else 'FAILED'} in {r[key]['seconds']:.0f} s", flush=True)
        if device == "cuda": torch.cuda.empty_cache()
        save()
    torch.manual_seed(0)
    state = {}
    layer = 2 if args.smoke_cpu else 15
    def setup_and_extract():
        from persona_vectors.extraction import contrastive_prompts
        from persona_vectors.artifacts import load_trait
        from persona_vectors.generation import generate, Sampling
        state["f32"], state["b16"] = _models(device, args.smoke_cpu)
        m32, tok = state["f32"]
        # contrastive answers from the float32 model ('pirate', the trait SmolLM2 shows), read by both models
        trait = load_trait("pirate")
        jobs = [(j["prompt_ids"], j["side"]) for j in contrastive_prompts(tok, trait, trait.extract_questions[:6]) if j["pair_index"] < 2]
        gens = generate(m32, tok, [p for p, _ in jobs], sampling=Sampling(max_new_tokens=16 if args.smoke_cpu else 48, seed=0), progress=False)
        answers = [(g.prompt_ids + g.response_ids, g.prompt_len) for g in gens if g.response_ids]
        sides = [side for g, (_, side) in zip(gens, jobs) if g.response_ids]
        ex, vec = check_extraction(state["f32"], state["b16"], answers, sides)
        state["vec"] = vec.float()
        return ex
    check("extraction", setup_and_extract)
    if "vec" in state:
        f32, b16, vec = state["f32"], state["b16"], state["vec"]
        if "steering" in only: check("steering", lambda: check_steering(f32, b16, vec, layer, 4.0, 16 if args.smoke_cpu else 48))
        if "distillation" in only: check("distillation", lambda: check_distillation(b16, vec, layer, 4.0, work/"distill", device, args.smoke_cpu))
        if "bf16_gap" in only: check("bf16_gap", lambda: check_bf16_gap(f32, vec, layer, 2.0, work/"gap", args.smoke_cpu))
    state.clear()
    if device == "cuda": torch.cuda.empty_cache()
    if device == "cuda" and "bench" in only:
        def bench():
            from . import run as bench_run
            rc = bench_run.main(["--only", "steering,extraction,distillation", "--out", str(out/"gpu")])
            return dict(file=str(out/"gpu"/"latest.md"), rc=rc)
        check("bench", bench)
    if "demo" in only:
        def demo():
            model_dir = None
            if args.smoke_cpu:
                from persona_vectors.models import tiny_model
                m, t = tiny_model("llama"); model_dir = work/"tiny_model"; m.save_pretrained(model_dir); t.save_pretrained(model_dir)
            d = Path(args.demo_dir) if args.demo_dir else (work/"demo" if args.smoke_cpu else ROOT/"runs"/"gpu_demo")
            return check_demo(d, args.smoke_cpu, timeout=300 if args.smoke_cpu else 420, model_dir=model_dir)
        check("demo", demo)
    shutil.rmtree(work, ignore_errors=True)
    save()
    print(markdown(r))
    failed = [k for k in CHECKS if k in r and not r[k]["ok"]]
    if failed: print(f"gpu-check: {len(failed)} check(s) failed: {', '.join(failed)} (tracebacks in {out/name}.json)", file=sys.stderr)
    return 0 if all(r["verdicts"].values()) and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
