"""The resource plan against measurements: peak memory and step time of the project's distillation training step.

    python -m bench.bench_resources            # the packaged SmolLM2, the demo study's batch and lengths (a few minutes)
    python -m bench.bench_resources --quick    # a small random Llama built from a config (seconds)

Each setting trains a fresh copy of the model through the project's own path, `distillation.distill_trainer` and
`Trainer.train()` (3 optimizer steps of `grad_accum` micro-batches; `save_strategy='no'`: no checkpoint is written), inside one
`PeakMemory` region (bench/common.py: peak RSS above the start, glibc's mmap threshold pinned so freed tensors leave
RSS at once). The region starts before the copy is made, so its peak counts the student's weights, adapters,
teacher, gradients, optimizer states and activations, as `resources.train_memory` does. Step time is the median of
steps 2 and 3 (step 1 creates the optimizer states). The matmul rate is measured right after every step (the probe
`resources.this_cpu` uses, outside the timed region) and the median of steps 2 and 3 stored with the row, so the
prediction is made for the machine as loaded as it was when the steps ran: the CPU is shared with other work. Torch
runs on one thread: with more threads than free cores, multi-threaded matmuls wait on each other and step times
swing tenfold (the first run of this benchmark, on two threads beside other jobs, saw 12 s to 44 s for one step).

Rows go to bench/results/resources.json (resources_quick.json with --quick): every input the prediction needs (the
model's config, batch, padded length, response length, accumulation, teacher, optimizer, checkpointing, dtype,
rates) and the measurements. 10_resources recomputes the predictions from them with the current code.
"""
from __future__ import annotations
import argparse, copy, json, shutil, statistics, sys, tempfile, time
from pathlib import Path

import torch
from transformers import TrainerCallback

from persona_vectors import distillation as D, resources as R
from persona_vectors.records import atomic_write
from .common import PeakMemory, pin_malloc, trim, machine

ROOT = Path(__file__).resolve().parent.parent
# the demo study's distillation (configs/demo.toml): batch 4, 2 micro-batches per step, 48-token trajectories
SETTINGS = [dict(method="lora", r=8, checkpointing=False), dict(method="full", r=8, checkpointing=False),
            dict(method="full", r=8, checkpointing=True)]


class StepTimes(TrainerCallback):
    "Wall time of every optimizer step, and the matmul rate measured right after it (outside the timed region)."
    def __init__(self): self.times, self.rates, self._t = [], [], None
    def on_step_begin(self, args, state, control, **kw): self._t = time.perf_counter()
    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self._t)
        self.rates.append(R.matmul_rate("float32"))


def records(tok, n: int, resp_len: int, vocab: int | None = None, seed: int = 0) -> list[dict]:
    "n trajectories with chat prompts of the demo trait's questions and resp_len response tokens (random ids below `vocab`)."
    from persona_vectors.artifacts import load_trait, DEMO_TRAIT
    from persona_vectors.models import chat_prompt_ids
    qs = load_trait(DEMO_TRAIT).extract_questions
    g = torch.Generator().manual_seed(seed)
    V = vocab or len(tok)
    out = []
    for i in range(n):
        p = chat_prompt_ids(tok, qs[i % len(qs)])
        r = torch.randint(3, V, (resp_len,), generator=g).tolist()
        out.append(dict(id=i, prompt_ids=p, response_ids=r, prompt_len=len(p), finished=False))
    return out


def measure(src, tok, recs: list[dict], setting: dict, batch: int, grad_accum: int, steps: int = 3) -> dict:
    "Peak memory of building the project's trainer on a copy of `src` and training `steps` steps; median step time after the first."
    from persona_vectors.steering import Steering
    from persona_vectors.models import decoder_layers, hidden_size
    L = len(decoder_layers(src))
    v = torch.randn(L + 1, hidden_size(src), generator=torch.Generator().manual_seed(0))
    steering = Steering(v / v.norm(dim=-1, keepdim=True) * 4.0, layer=L // 2, alpha=2.0, positions="response")
    cfg = D.DistillConfig(method=setting["method"], r=setting["r"], lora_alpha=2 * setting["r"], target_modules=list(R.LORA_TARGETS),
                          max_steps=steps, batch_size=batch, grad_accum=grad_accum, gradient_checkpointing=setting["checkpointing"],
                          save_steps=10 ** 6, logging_steps=10 ** 6, bf16=False,
                          training_args=dict(save_strategy="no"))  # nothing written inside the measured region
    times = StepTimes()
    tmp = Path(tempfile.mkdtemp(prefix="bench_resources"))
    trim()
    with PeakMemory("cpu") as pm:
        trainer = D.distill_trainer(copy.deepcopy(src), tok, recs, steering, tmp, cfg, callbacks=[times], progress=False)
        trainer.remove_callback(D.SaveAtEnd)
        trainer.train()
        optim = trainer.args.optim.value if hasattr(trainer.args.optim, "value") else str(trainer.args.optim)
        teacher = cfg.resolved_teacher()
        del trainer
    shutil.rmtree(tmp, ignore_errors=True); trim()
    lens = [r["prompt_len"] + len(r["response_ids"]) for r in recs]
    return dict(peak_bytes=pm.peak, step_times=times.times, step_s=statistics.median(times.times[1:]), step_rates=times.rates,
                matmul_flops_per_s=statistics.median(times.rates[1:]), optimizer=optim, teacher=teacher,
                seq_max=max(lens), seq_mean=statistics.mean(lens))


def run(quick: bool) -> dict:
    pin_malloc()
    torch.set_num_threads(1)  # one thread: on a shared CPU, several busy threads per core make GEMM barriers spin (10x swings)
    from persona_vectors.models import load_model, tiny_model
    if quick:
        from transformers import AutoConfig, AutoModelForCausalLM
        _, tok = tiny_model("llama")
        conf = AutoConfig.for_model("llama", vocab_size=8192, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                                    num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
        torch.manual_seed(0)
        src = AutoModelForCausalLM.from_config(conf, dtype=torch.float32, attn_implementation="sdpa").eval()
        name, batch, grad_accum, resp = "small random Llama (4 blocks, hidden 256, vocab 8192)", 4, 2, 48
    else:
        src, tok = load_model(device="cpu", dtype=torch.float32)
        conf = src.config
        name, batch, grad_accum, resp = "SmolLM2-135M-Instruct (packaged)", 4, 2, 48
    with torch.no_grad():
        for p in src.parameters(): p.data = p.data.clone()  # page in what loading left memory-mapped
    recs = records(tok, batch * grad_accum * 3, resp, vocab=conf.vocab_size)
    rows = []
    for s in SETTINGS:
        bw = R.copy_bandwidth()
        m = measure(src, tok, recs, s, batch, grad_accum)
        rows.append(dict(s, **m, batch=batch, grad_accum=grad_accum, response=resp, dtype="float32", copy_bytes_per_s=bw))
        print(f"{s}: peak {m['peak_bytes'] / 2**20:.0f} MiB, step {m['step_s']:.2f} s (times {[round(x, 2) for x in m['step_times']]}), "
              f"{[round(x / 1e9, 1) for x in m['step_rates']]} GFLOP/s", flush=True)
    return dict(model=name, config=conf.to_dict(), quick=quick, memory_method="peak RSS above the region's start (bench/common.py)",
                machine=machine("cpu", torch.float32), rows=rows, started=time.strftime("%Y-%m-%d %H:%M:%S"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_resources", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small random model (seconds)")
    ap.add_argument("--out", default=str(ROOT/"bench"/"results"), help="results directory")
    a = ap.parse_args(argv)
    t0 = time.time()
    res = run(a.quick)
    res["wall_s"] = time.time() - t0
    path = Path(a.out)/("resources_quick.json" if a.quick else "resources.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(res, indent=1, default=str).encode())
    print(f"wrote {path} in {res['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
