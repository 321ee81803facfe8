"""`python -m bench.gpu_scale`: the reference study's work on one GPU, measured through the project's own functions
beside transformers' own `generate` and beside the resource plan's prediction for exactly that work.

    python -m bench.gpu_scale                    # one CUDA GPU: a random-weight Qwen2.5-7B-Instruct shape in bf16 (~3 min on an H200)
    python -m bench.gpu_scale --smoke-cpu        # the same code on a tiny model of the same family on this CPU (seconds)

The model is built from the config shipped in `persona_vectors/model_configs` with random weights (no hub): its
speed and memory are those of the real model; its answers are noise, and no answer ends early (the end token is set
to an id the model cannot write), so every decode runs exactly `--new` steps. What it measures, each row written to
bench/results/gpu_scale.{json,md} as soon as it is done (a failing row records its error and the rest go on):

1. **decode** at batch 64, `--new` new tokens after `--prompt`-token prompts: the project's `generate` greedy,
   sampled (temperature 1, top-p 0.95) and sampled + steered ('response' positions, layer 16, alpha 2), and
   transformers' own `model.generate(do_sample=True, top_p=0.95, top_k=0)` in the same process, in interleaved
   repeats (median); ms per decoding step, and the ratios the issue asks for (ours / transformers', steered / plain).
2. **auto batch**: `batch_size='auto'` (the largest batch the plan's memory terms fit on the free memory): its batch,
   ms/step, tokens/s against batch 64, and peak memory against `resources.generation_memory`.
3. **no host sync**: one steered sampled generation under `torch.cuda.set_sync_debug_mode('error')`, except at the
   loop's own looks (every `sync_every` steps), which are counted.
4. **reads**: `extraction.activation_means` over 64 answers of 550 tokens at batch 32.
5. **training**: one LoRA r=8 and one full fine-tune step at the reference settings (batch 8 x 1, gradient
   checkpointing, bf16 autocast; the full step with float32 master weights and paged 8-bit AdamW when bitsandbytes
   is there), median step time after the first and `torch.cuda.max_memory_allocated`.
6. **the plan at measured rates**: the reference study's resource plan on an H200 with the decode step floor
   measured in 1 (the time a decoding step cannot go under: kernel launches and Python, not arithmetic), and the
   total it predicts.
"""
from __future__ import annotations
import argparse, copy, json, shutil, statistics, sys, tempfile, time, traceback
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT/"bench"/"results"


class IdsTokenizer:
    "The few tokenizer attributes `generate` uses, for a random-weight model with no tokenizer: ids in, ids out."
    def __init__(self, vocab: int, pad: int = 0):
        self.pad_token_id, self.eos_token_id, self.vocab = pad, vocab + 7, vocab  # an end id the model cannot write
        self.pad_token, self.eos_token, self.bos_token, self.padding_side = "<pad>", "<end>", None, "left"
    def decode(self, ids, skip_special_tokens=True): return ""
    def get_vocab(self): return {}
    def convert_tokens_to_ids(self, t): return None
    def __len__(self): return self.vocab


def build(smoke: bool, device: str):
    "A random-weight model of Qwen2.5-7B-Instruct's shape (or a tiny one of the same family) on `device`."
    from transformers import AutoConfig, AutoModelForCausalLM
    d = json.loads((ROOT/"persona_vectors"/"model_configs"/"Qwen2.5-7B-Instruct.json").read_text())
    mt = d.pop("model_type")
    if smoke: d.update(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, vocab_size=2048)
    conf = AutoConfig.for_model(mt, **d)
    dtype = torch.float32 if smoke else torch.bfloat16
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(conf, dtype=dtype, attn_implementation="sdpa")
    model.eval()
    model.generation_config.eos_token_id = None
    model.use_kernels = False
    return model, IdsTokenizer(conf.vocab_size), conf


def sync(device):
    if str(device).startswith("cuda"): torch.cuda.synchronize()


def timed(fn, device) -> float:
    sync(device); t = time.perf_counter(); fn(); sync(device); return time.perf_counter() - t


def prompts(n: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(10, vocab - 10, (length - (i % 4),), generator=g).tolist() for i in range(n)]


def steering_of(model, layer: int = 16):
    from persona_vectors.steering import Steering
    from persona_vectors.models import decoder_layers, hidden_size
    L = len(decoder_layers(model))
    layer = min(layer, L)
    v = torch.randn(L + 1, hidden_size(model), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return Steering(v / v.norm(dim=-1, keepdim=True) * 8.0, layer=layer, alpha=2.0, positions="response")


def decode_rows(model, tok, device, batch: int, prompt: int, new: int, repeats: int) -> dict:
    "ms per decoding step of our greedy / sampled / steered generate and of transformers' sampled generate."
    from persona_vectors.generation import generate, Sampling, left_pad
    from persona_vectors.steering import steer
    ps = prompts(batch, prompt, tok.vocab)
    s_sampled, s_greedy = Sampling(max_new_tokens=new, top_p=0.95, seed=0), Sampling(max_new_tokens=new, greedy=True)
    steering = steering_of(model)
    ids, mask = left_pad(ps, tok.pad_token_id, device)
    def hf():
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_p=0.95, top_k=0, temperature=1.0,
                                 max_new_tokens=new, min_new_tokens=new, pad_token_id=tok.pad_token_id, eos_token_id=None)
        assert out.shape[1] == ids.shape[1] + new
    runs = {"ours greedy": lambda: generate(model, tok, ps, sampling=s_greedy, batch_size=batch, progress=False),
            "ours sampled": lambda: generate(model, tok, ps, sampling=s_sampled, batch_size=batch, progress=False),
            "ours sampled steered": lambda: generate(model, tok, ps, sampling=s_sampled, batch_size=batch, progress=False,
                                                     context=steer(model, steering)),
            "ours compiled sampled": lambda: generate(model, tok, ps, sampling=s_sampled, batch_size=batch, progress=False, compile=True),
            "ours compiled sampled steered": lambda: generate(model, tok, ps, sampling=s_sampled, batch_size=batch, progress=False,
                                                              context=steer(model, steering), compile=True),
            "transformers sampled": hf}
    for f in runs.values(): f()  # warm-up (the compiled arms compile here)
    times = {k: [] for k in runs}
    order = list(runs)
    for r in range(repeats):
        for k in (order if r % 2 == 0 else order[::-1]): times[k].append(timed(runs[k], device))
    ms = {k: 1000 * statistics.median(v) / new for k, v in times.items()}
    return dict(batch=batch, prompt=prompt, new=new, repeats=repeats, ms_per_step=ms,
                ratio_sampled_vs_transformers=ms["ours sampled"] / ms["transformers sampled"],
                ratio_steered_vs_sampled=ms["ours sampled steered"] / ms["ours sampled"],
                ratio_greedy_vs_transformers=ms["ours greedy"] / ms["transformers sampled"],
                ratio_compiled_vs_eager_sampled=ms["ours compiled sampled"] / ms["ours sampled"],
                ratio_compiled_steered_vs_transformers=ms["ours compiled sampled steered"] / ms["transformers sampled"])


def auto_row(model, tok, device, prompt: int, new: int, ms64: float | None) -> dict:
    "The auto batch: its size, ms/step, tokens/s, peak memory against the plan's generation memory."
    from persona_vectors.generation import generate, Sampling, auto_batch_size
    from persona_vectors import resources as R
    b = auto_batch_size(model, prompt, new)
    ps = prompts(b, prompt, tok.vocab, seed=2)
    s = Sampling(max_new_tokens=new, top_p=0.95)
    if str(device).startswith("cuda"): torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    st = {}
    t = timed(lambda: generate(model, tok, ps, sampling=s, batch_size="auto", progress=False, stats=st), device)
    row = dict(batch=b, used_batch=st.get("batch_size"), oom_halvings=st.get("oom_halvings"), seconds=t, ms_per_step=1000 * t / new,
               tokens_per_s=b * new / t)
    if ms64: row["tokens_per_s_vs_batch64"] = row["tokens_per_s"] / (64 * 1000 / ms64)
    if str(device).startswith("cuda"):
        shape = R.shape_from_config(model.config, "random 7B shape")
        pred = R.generation_memory(shape, R.Generation(answers=b, batch=b, prompt=prompt, new=new, weight_bytes=2))
        row.update(peak_bytes=torch.cuda.max_memory_allocated(), plan_peak_bytes=pred["peak"],
                   peak_vs_plan=torch.cuda.max_memory_allocated() / pred["peak"], total_memory=torch.cuda.get_device_properties(0).total_memory)
    return row


def sync_row(model, tok, device, new: int) -> dict:
    "A steered sampled generation under set_sync_debug_mode('error'): the decoding steps never wait for the host."
    from persona_vectors import generation as M
    from persona_vectors.steering import steer
    if not str(device).startswith("cuda"): return dict(skipped="no CUDA: set_sync_debug_mode needs a GPU")
    ps = prompts(16, 40, tok.vocab, seed=3)
    M.generate(model, tok, ps, sampling=M.Sampling(max_new_tokens=new), batch_size=16, progress=False)  # warm caches
    st, control = {}, None
    torch.cuda.set_sync_debug_mode("error")
    try:
        try: torch.ones(1, device=device).item(); control = "not raised"
        except RuntimeError: control = "raised"  # the mode is on: a plain .item() is refused
        M.generate(model, tok, ps, sampling=M.Sampling(max_new_tokens=new), batch_size=16, progress=False, sync_every=8,
                   context=steer(model, steering_of(model)), stats=st)
    finally: torch.cuda.set_sync_debug_mode(0)
    return dict(ok=True, control_item=control, forwards=st["forwards"], host_looks=st["syncs"], new=new, sync_every=8)


def noise_row(device) -> dict:
    "The same seeds give the same noise and the same ids on the CPU and on the GPU (integer arithmetic is exact)."
    from persona_vectors.generation import counter_uniform, next_tokens, Sampling
    if not str(device).startswith("cuda"): return dict(skipped="no CUDA")
    seeds, steps = torch.arange(64) * 1_000_003 + 17, torch.arange(64) % 7
    u_cpu, u_gpu = counter_uniform(seeds, steps, 152064), counter_uniform(seeds.cuda(), steps.cuda(), 152064).cpu()
    logits = torch.randn(64, 152064, generator=torch.Generator().manual_seed(0)) * 6
    ids = {d: next_tokens(logits.to(d), Sampling(top_p=0.95), seeds.to(d), steps.to(d), sparse=False).cpu() for d in ("cpu", "cuda")}
    return dict(noise_equal=bool(torch.equal(u_cpu, u_gpu)), ids_equal=bool(torch.equal(ids["cpu"], ids["cuda"])),
                max_abs_diff=float((u_cpu - u_gpu).abs().max()))


def read_row(model, tok, device) -> dict:
    "activation_means over 64 answers of 550 tokens at batch 32, against the plan."
    from persona_vectors.extraction import activation_means
    from persona_vectors import resources as R
    seqs = [(p, 50) for p in prompts(64, 550, tok.vocab, seed=4)]
    activation_means(model, seqs[:8], batch_size=8, pad_id=0, progress=False)
    t = timed(lambda: activation_means(model, seqs, batch_size=32, pad_id=0, progress=False), device)
    row = dict(answers=64, tokens=550, batch=32, seconds=t)
    if str(device).startswith("cuda"):
        shape = R.shape_from_config(model.config, "random 7B shape")
        row["plan_s"] = R.generation_time(shape, R.Generation(64, 32, 50, 500, generate=False, read=True), R.ACCELERATORS["H200-141GB"], "bfloat16")
    return row


def train_row(model, tok, device, method: str, steps: int = 3) -> dict:
    "One LoRA r=8 or full fine-tune step at the reference settings: median step time after the first, peak memory."
    from transformers import TrainerCallback
    from persona_vectors import distillation as D, resources as R
    cuda = str(device).startswith("cuda")
    optim = {}
    if method == "full":
        try: import bitsandbytes  # noqa: F401
        except ImportError:
            if cuda: return dict(skipped="bitsandbytes is not installed: the reference full fine-tune uses paged 8-bit AdamW")
        else: optim = dict(optim="paged_adamw_8bit")
    class Times(TrainerCallback):
        def __init__(self): self.t, self._t = [], None
        def on_step_begin(self, *a, **k): sync(device); self._t = time.perf_counter()
        def on_step_end(self, *a, **k): sync(device); self.t.append(time.perf_counter() - self._t)
    P, N = 60, 256
    g = torch.Generator().manual_seed(5)
    recs = [dict(id=i, prompt_ids=torch.randint(10, tok.vocab - 10, (P,), generator=g).tolist(),
                 response_ids=torch.randint(10, tok.vocab - 10, (N,), generator=g).tolist(), prompt_len=P, finished=False)
            for i in range(8 * steps)]
    cfg = D.DistillConfig(method=method, r=8, target_modules=list(R.LORA_TARGETS), max_steps=steps, batch_size=8, grad_accum=1,
                          gradient_checkpointing=True, save_steps=10 ** 6, logging_steps=10 ** 6, bf16=cuda,
                          training_args=dict(save_strategy="no", **optim))
    tmp = Path(tempfile.mkdtemp(prefix="gpu_scale"))
    times = Times()
    if cuda: torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    student, teacher = (model, None) if method == "lora" else (copy.deepcopy(model).float(), model)
    try:
        trainer = D.distill_trainer(student, tok, recs, steering_of(model), tmp, cfg, callbacks=[times], progress=False,
                                    **({"teacher_model": teacher} if teacher is not None else {}))
        trainer.remove_callback(D.SaveAtEnd)
        trainer.train()
        row = dict(method=method, steps=steps, batch="8 x 1", seq=P + N, step_times=times.t, step_s=statistics.median(times.t[1:]),
                   optimizer=str(getattr(trainer.args.optim, "value", trainer.args.optim)))
        if cuda:
            row["peak_bytes"] = torch.cuda.max_memory_allocated()
            shape = R.shape_from_config(model.config, "random 7B shape")
            tr = R.Training(method, 8, P + N, N, r=8, weight_bytes=2, compute_bytes=2, checkpointing=True,
                            optimizer=row["optimizer"] if method == "full" else "adamw_torch_fused", study_model=method == "full",
                            master_float32=method == "full")
            row.update(plan_step_s=R.train_step_time(shape, tr, R.ACCELERATORS["H200-141GB"], "bfloat16"),
                       plan_peak_bytes=R.train_memory(shape, tr)["peak"])
        del trainer
    finally:
        if method == "lora" and hasattr(student, "unload"): pass
        shutil.rmtree(tmp, ignore_errors=True)
    return row


def plan_row(model, decode: dict | None, auto: dict | None, res_rows: dict) -> dict:
    "The reference study's plan on an H200: as shipped, at the step floor measured here, and with the auto batch too."
    from persona_vectors import resources as R
    from persona_vectors.pipeline import load_config
    acc, L = R.ACCELERATORS["H200-141GB"], model.config.num_hidden_layers
    cfg = load_config("reference")
    variants = [("as shipped", acc, cfg)]
    if decode:
        floor = decode["ms_per_step"]["ours sampled steered"] / 1000 / L  # batch 64: far below the roofline, so the floor
        measured = replace(acc, step_floor_per_block=floor)
        lora = res_rows.get("lora_step") or {}
        if "plan_step_s" in lora:  # training: the matmul efficiency the measured LoRA step shows
            measured = replace(measured, mfu=acc.mfu * lora["plan_step_s"] / lora["step_s"])
        variants.append((f"step floor measured ({floor * 1e6:.0f} us per block)", measured, cfg))
        if auto:
            b = int(auto["batch"])
            big = cfg.model_copy(update=dict(extraction=cfg.extraction.model_copy(update=dict(batch_size=b)),
                                             evaluation=cfg.evaluation.model_copy(update=dict(batch_size=b))))
            variants.append((f"step floor measured, generation batch {auto['batch']} (auto)", measured, big))
    out = {"measured_accelerator": {k: getattr(variants[-1][1], k) for k in ("mfu", "bw_efficiency", "step_floor_per_block")}}
    for name, a, c in variants:
        from persona_vectors.resource_plan import resource_plan
        df = resource_plan(c, [a])
        out[name] = dict(total_min=float(df.time_s.sum()) / 60, stages={r.stage: round(r.time_s / 60, 2) for r in df.itertuples()})
    return out


def run(smoke: bool, repeats: int, new: int, prompt: int, out: Path, budget_s: float) -> dict:
    device = "cpu" if smoke else "cuda"
    if not smoke and not torch.cuda.is_available():
        print("bench.gpu_scale: no CUDA device; nothing measured (use --smoke-cpu to run the code on a tiny model)"); return {}
    t0 = time.time()
    import transformers
    res = dict(started=time.strftime("%Y-%m-%d %H:%M:%S"), smoke=smoke, torch=torch.__version__, transformers=transformers.__version__,
               device=torch.cuda.get_device_name(0) if not smoke else "cpu", rows={}, errors={})
    model, tok, conf = build(smoke, device)
    res["model"] = dict(shape="Qwen2.5-7B-Instruct" if not smoke else "tiny qwen2", params=sum(p.numel() for p in model.parameters()),
                        dtype=str(next(model.parameters()).dtype))
    def save():
        out.mkdir(parents=True, exist_ok=True)
        (out/"gpu_scale.json.tmp").write_text(json.dumps(res, indent=1, default=str)); (out/"gpu_scale.json.tmp").replace(out/"gpu_scale.json")
        (out/"gpu_scale.md").write_text(markdown(res))
    steps = [("decode", lambda: decode_rows(model, tok, device, 64 if not smoke else 8, prompt, new, repeats)),
             ("auto_batch", lambda: auto_row(model, tok, device, prompt, new, res["rows"].get("decode", {}).get("ms_per_step", {}).get("ours sampled"))),
             ("no_host_sync", lambda: sync_row(model, tok, device, 32)),
             ("noise_cpu_vs_gpu", lambda: noise_row(device)),
             ("reads", lambda: read_row(model, tok, device)),
             ("lora_step", lambda: train_row(model, tok, device, "lora")),
             ("full_step", lambda: train_row(model, tok, device, "full")),
             ("plan", lambda: plan_row(model, res["rows"].get("decode"), res["rows"].get("auto_batch"), res["rows"]))]
    for name, fn in steps:
        if time.time() - t0 > budget_s: res["errors"][name] = f"skipped: the {budget_s:.0f} s budget was spent"; save(); continue
        try:
            t = time.time(); res["rows"][name] = fn(); res["rows"][name]["wall_s"] = time.time() - t
            print(f"{name}: {json.dumps(res['rows'][name], default=str)[:600]}", flush=True)
        except Exception as e:
            res["errors"][name] = "".join(traceback.format_exception(e))[-3000:]
            print(f"{name}: FAILED {type(e).__name__}: {e}", flush=True)
        if not smoke: torch.cuda.empty_cache()
        save()
    res["wall_s"] = time.time() - t0
    save()
    return res


def markdown(res: dict) -> str:
    "The results as a short markdown page."
    r, lines = res.get("rows", {}), [f"# bench.gpu_scale ({res.get('started')})", "",
             f"{res.get('device')}, torch {res.get('torch')}, transformers {res.get('transformers')}; model: random-weight "
             f"{res.get('model', {}).get('shape')} ({res.get('model', {}).get('params', 0) / 1e9:.2f} B params, {res.get('model', {}).get('dtype')})", ""]
    if "decode" in r:
        d = r["decode"]
        lines += [f"## Decode, batch {d['batch']}, {d['prompt']}-token prompts, {d['new']} new tokens (median of {d['repeats']})", "",
                  "| generation | ms / step |", "|---|---:|"] + [f"| {k} | {v:.1f} |" for k, v in d["ms_per_step"].items()] + [
                  "", f"ours sampled / transformers sampled: **{d['ratio_sampled_vs_transformers']:.2f}** (goal <= 1.2); "
                  f"steered / unsteered: **{d['ratio_steered_vs_sampled']:.2f}** (goal <= 1.1); compiled / eager sampled: "
                  f"**{d.get('ratio_compiled_vs_eager_sampled', float('nan')):.2f}** (below 1: turn `model.compile` on)", ""]
    if "auto_batch" in r:
        a = r["auto_batch"]
        lines += ["## Auto batch", "", f"batch {a['batch']} (used {a.get('used_batch')}): {a['ms_per_step']:.1f} ms/step, "
                  f"{a['tokens_per_s']:.0f} tokens/s" + (f" ({a['tokens_per_s_vs_batch64']:.1f}x batch 64)" if "tokens_per_s_vs_batch64" in a else "")
                  + (f"; peak {a['peak_bytes'] / 2**30:.1f} GiB, plan {a['plan_peak_bytes'] / 2**30:.1f} GiB ({a['peak_vs_plan']:.2f})" if "peak_bytes" in a else ""), ""]
    if "no_host_sync" in r: lines += ["## Host synchronisation", "", json.dumps(r["no_host_sync"]), ""]
    if "noise_cpu_vs_gpu" in r: lines += ["## Noise and ids, CPU against GPU", "", json.dumps(r["noise_cpu_vs_gpu"]), ""]
    if "reads" in r: lines += ["## Activation reads", "", json.dumps(r["reads"]), ""]
    for k in ("lora_step", "full_step"):
        if k in r:
            x = r[k]
            lines += [f"## {k}", "", (f"{x['step_s']:.3f} s/step" + (f" (plan {x['plan_step_s']:.3f} s), peak {x['peak_bytes'] / 2**30:.1f} GiB "
                      f"(plan {x['plan_peak_bytes'] / 2**30:.1f} GiB)" if "peak_bytes" in x else "")) if "step_s" in x else json.dumps(x), ""]
    if "plan" in r:
        lines += ["## The reference study's plan on an H200", ""] + [f"- {k}: {v['total_min']:.0f} min ({', '.join(f'{s} {m:.1f}' for s, m in v['stages'].items())})" for k, v in r["plan"].items() if isinstance(v, dict) and "total_min" in v] + [""]
    if res.get("errors"): lines += ["## Errors", ""] + [f"- {k}: `{v.strip().splitlines()[-1] if v.strip() else v}`" for k, v in res["errors"].items()] + [""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_scale", description=__doc__.splitlines()[0])
    ap.add_argument("--smoke-cpu", action="store_true", help="a tiny model of the same family on this CPU")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--new", type=int, default=64, help="new tokens per decode")
    ap.add_argument("--prompt", type=int, default=64, help="prompt tokens")
    ap.add_argument("--budget", type=float, default=200, help="seconds; rows past it are skipped")
    ap.add_argument("--out", default=None, help="results directory (default bench/results; --smoke-cpu: a temporary one)")
    a = ap.parse_args(argv)
    out = Path(a.out) if a.out else (Path(tempfile.mkdtemp()) if a.smoke_cpu else OUT)
    res = run(a.smoke_cpu, a.repeats, a.new if not a.smoke_cpu else min(a.new, 8), a.prompt if not a.smoke_cpu else 16, out, a.budget)
    if res: print(f"wrote {out/'gpu_scale.md'}"); print(markdown(res))
    return 1 if res.get("errors") and any(not v.startswith("skipped") for v in res["errors"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
