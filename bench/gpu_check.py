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
import argparse, copy, json, shutil, sys, time
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
    from persona_vectors.models import chat_prompt_ids, generate, Sampling, padded_batch
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
    from persona_vectors.models import Sampling
    from persona_vectors.steering import Steering
    from persona_vectors.trajectories import sample_trajectories
    from persona_vectors.distillation import distill, DistillConfig
    m, tok = b16
    s = Steering(vector, layer, alpha, "response")
    trajs = sample_trajectories(m, tok, QUESTIONS, s, out/"trajectories.jsonl", n=32,
                                sampling=Sampling(max_new_tokens=16 if smoke else 48, seed=0), batch_size=16, progress=False)
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


def verdicts(r: dict) -> dict:
    "Pass/fail of each check, with its bound."
    st, ex, di = r["steering"], r["extraction"], r["distillation"]
    return {"bf16 steering effect cosine >= 0.99": st["effect_cosine"] >= 0.99,
            "bf16 persona vector cosine >= 0.99 at every layer": ex["worst_layer_cosine"] >= 0.99,
            "LoRA loss falls over 20 steps": di["last_loss"] < di["first_loss"],
            "LoRA adapters train in float32": di["adapter_dtype"] == "torch.float32"}


def markdown(r: dict) -> str:
    st, ex, di = r["steering"], r["extraction"], r["distillation"]
    peak = "—" if di["peak_bytes"] is None else f"{di['peak_bytes'] / 2**20:.0f} MiB"
    lines = [f"# GPU check ({r['device']}, {r['model']})", "", f"Run {r['started']} in {r['wall_s']:.0f} s.", "",
             "| check | result |", "|---|---|",
             f"| bf16 vs float32 steering effect | cosine {st['effect_cosine']:.4f}, largest difference {st['effect_max_abs_diff']:.3g} "
             f"(largest effect {st['effect_max_abs']:.3g}); greedy steered tokens agreeing {st['greedy_token_agreement']:.1%} of {st['greedy_tokens']} |",
             f"| bf16 vs float32 persona vector | worst layer {ex['worst_layer']}: cosine {ex['worst_layer_cosine']:.4f}; mean {ex['mean_cosine']:.4f} |",
             f"| 20-step LoRA r=8 (bf16 autocast) | loss {di['first_loss']:.4f} -> {di['last_loss']:.4f}, {di['step_s']:.3f} s/step, "
             f"peak {peak}, adapters {di['adapter_dtype']} |",
             "", "| verdict | passed |", "|---|---|"] + [f"| {k} | {'yes' if v else '**no**'} |" for k, v in r["verdicts"].items()]
    if r.get("bench"): lines += ["", f"Benchmark rows: `{r['bench']}`."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.splitlines()[0])
    ap.add_argument("--smoke-cpu", action="store_true", help="the same checks on a tiny model on this CPU (seconds)")
    ap.add_argument("--out", default=str(ROOT/"bench"/"results"), help="directory of the result files")
    ap.add_argument("--no-bench", action="store_true", help="skip the benchmark rows")
    args = ap.parse_args(argv)
    if not args.smoke_cpu and not torch.cuda.is_available():
        print("gpu-check: no CUDA device on this machine, so nothing was run (it needs one GPU; "
              "`python -m bench.gpu_check --smoke-cpu` runs the same checks on a tiny model here).")
        return 0
    from persona_vectors.records import write_json, atomic_write
    device = "cpu" if args.smoke_cpu else "cuda"
    t0, started = time.time(), time.strftime("%Y-%m-%d %H:%M:%S")
    torch.manual_seed(0)
    f32, b16 = _models(device, args.smoke_cpu)
    out = Path(args.out); work = out/".gpu_check_work"
    shutil.rmtree(work, ignore_errors=True)
    from persona_vectors.extraction import contrastive_prompts
    from persona_vectors.artifacts import load_trait
    from persona_vectors.models import generate, Sampling
    m32, tok = f32
    # contrastive answers from the float32 model ('pirate', the trait SmolLM2 shows), read by both models
    trait = load_trait("pirate")
    jobs = [(j["prompt_ids"], j["side"]) for j in contrastive_prompts(tok, trait, trait.extract_questions[:6]) if j["pair_index"] < 2]
    gens = generate(m32, tok, [p for p, _ in jobs], sampling=Sampling(max_new_tokens=16 if args.smoke_cpu else 48, seed=0), progress=False)
    answers = [(g.prompt_ids + g.response_ids, g.prompt_len) for g in gens if g.response_ids]
    sides = [side for g, (_, side) in zip(gens, jobs) if g.response_ids]
    layer = 2 if args.smoke_cpu else 15
    ex, vec = check_extraction(f32, b16, answers, sides)
    r = dict(device=torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke)", model="tiny llama" if args.smoke_cpu else "SmolLM2-135M-Instruct",
             started=started, steering=check_steering(f32, b16, vec.float(), layer, 4.0, 16 if args.smoke_cpu else 48), extraction=ex,
             distillation=check_distillation(b16, vec.float(), layer, 4.0, work, device, args.smoke_cpu))
    shutil.rmtree(work, ignore_errors=True)
    if device == "cuda" and not args.no_bench:
        from . import run as bench_run
        bench_run.main(["--only", "steering,extraction,distillation", "--out", str(out/"gpu")])
        r["bench"] = str(out/"gpu"/"latest.md")
    r["verdicts"], r["wall_s"] = verdicts(r), time.time() - t0
    name = "gpu_check_smoke" if args.smoke_cpu else "gpu_check"
    write_json(out/f"{name}.json", r); atomic_write(out/f"{name}.md", markdown(r))
    print(markdown(r))
    return 0 if all(r["verdicts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
