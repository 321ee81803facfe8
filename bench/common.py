"""What every benchmark shares: the machine, interleaved timing, peak memory, the matmul-rate floor, result rows.

Conventions (also written into the results):

* **ratio** = project / baseline of the row's metric (seconds, bytes or tokens/s; the row says which and whether
  higher is better), from the median of interleaved repeats: the project and the baseline alternate within one
  process, in alternating order (P B, B P, P B, ...), after one untimed warm-up of each.
* **peak memory** on CPU = the peak resident set size (RSS) above the RSS when the measured region starts, read from
  /proc/self/statm every 0.5 ms by a sampling thread. glibc's mmap threshold is pinned to 64 KiB at start-up so that
  every tensor larger than that is its own mapping and goes back to the OS when freed: RSS then follows live tensors.
  On CUDA: `torch.cuda.max_memory_allocated()` above the memory allocated at the start.
* **floor** = the time the model's matmul FLOPs take at the matmul rate measured at the start of the same run
  (a large square matmul in the benchmark dtype): 2 x params x tokens for a forward pass, 3x that for forward +
  backward; `params` counts the weights that multiply activations (the input embedding lookup is not a matmul; a
  tied output head is). Attention-score FLOPs and elementwise work are left out, so real stages sit well above it.
"""
from __future__ import annotations
import ctypes, gc, math, os, platform, statistics, threading, time
from dataclasses import dataclass, field
from typing import Callable

import torch

# ---------------------------------------------------------------------------------------------------------------- memory
_LIBC = None

def pin_malloc():
    "Make glibc return freed tensors to the OS at once (mmap threshold 64 KiB, trim threshold 128 KiB), so RSS tracks live memory."
    global _LIBC
    if _LIBC is not None or platform.system() != "Linux": return
    try:
        _LIBC = ctypes.CDLL("libc.so.6")
        _LIBC.mallopt(-3, 64 * 1024)   # M_MMAP_THRESHOLD (also switches off glibc's dynamic threshold)
        _LIBC.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
    except OSError: _LIBC = False

def trim():
    "Collect garbage and hand free heap pages back to the OS."
    gc.collect()
    if _LIBC: _LIBC.malloc_trim(0)
    if torch.cuda.is_available(): torch.cuda.empty_cache()

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

def rss() -> int:
    "Resident set size of this process in bytes."
    try:
        with open("/proc/self/statm") as f: return int(f.read().split()[1]) * _PAGE
    except OSError:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

class PeakMemory:
    "Context manager: `.peak` = peak bytes above the start of the region (RSS sampling on CPU, the allocator's peak on CUDA)."
    def __init__(self, device: str = "cpu", interval: float = 0.0005):
        self.cuda, self.interval = str(device).startswith("cuda"), interval

    def __enter__(self):
        trim()
        if self.cuda:
            torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
            return self
        self.start = self.top = rss(); self._stop = False
        def loop():
            while not self._stop:
                r = rss()
                if r > self.top: self.top = r
                time.sleep(self.interval)
        self._thread = threading.Thread(target=loop, daemon=True); self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize(); self.peak = torch.cuda.max_memory_allocated() - self.start
        else:
            self._stop = True; self._thread.join()
            self.peak = max(self.top, rss()) - self.start
        return False

MEMORY_METHOD = {
    "cpu": "peak RSS above the RSS at the start of the region, sampled every 0.5 ms from /proc/self/statm "
           "(glibc mmap threshold pinned to 64 KiB so freed tensors leave RSS at once)",
    "cuda": "torch.cuda.max_memory_allocated() above torch.cuda.memory_allocated() at the start of the region",
}

# ---------------------------------------------------------------------------------------------------------------- timing
def sync(device: str):
    if str(device).startswith("cuda"): torch.cuda.synchronize()

def timed(fn: Callable[[], object], device: str = "cpu") -> tuple[float, object]:
    "Wall time of one call (device synchronised before and after) and its result."
    sync(device); t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out

def interleaved(arms: dict[str, Callable[[], object]], # name -> zero-argument callable, run once per repeat
                repeats: int, # timed repeats of each arm
                device: str = "cpu",
                warmup: int = 1, # untimed calls of each arm first
                memory: bool = False, # also track the peak memory of every timed call
               ) -> dict[str, dict]:
    "Time the arms alternately (A B, B A, A B, ...); per arm: `times`, `median`, last result and (optionally) `peak`."
    names = list(arms)
    for _ in range(warmup):
        for n in names: arms[n]()
    res = {n: dict(times=[], peaks=[], result=None) for n in names}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            if memory:
                with PeakMemory(device) as pm: dt, out = timed(arms[n], device)
                res[n]["peaks"].append(pm.peak)
            else: dt, out = timed(arms[n], device)
            res[n]["times"].append(dt); res[n]["result"] = out
    for n in names:
        res[n]["median"] = statistics.median(res[n]["times"])
        if memory: res[n]["peak"] = max(res[n]["peaks"])
    return res

# ---------------------------------------------------------------------------------------------------------------- floor
def matmul_rate(device: str, dtype: torch.dtype, n: int, repeats: int = 5) -> dict:
    "FLOP/s of an n x n @ n x n matmul in `dtype` on `device` (median of `repeats` after a warm-up)."
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype); b = torch.randn(n, n, generator=g).to(device, dtype)
    a @ b
    times = [timed(lambda: a @ b, device)[0] for _ in range(repeats)]
    t = statistics.median(times)
    return dict(n=n, dtype=str(dtype).replace("torch.", ""), seconds=t, flops_per_s=2 * n ** 3 / t,
                times=[round(x, 5) for x in times])

def matmul_params(model: torch.nn.Module) -> int:
    "Weights that multiply activations: unique parameters minus the input embedding, plus the output head when tied to it."
    from persona_vectors.models import base_model
    m = base_model(model)
    seen, total = set(), 0
    for p in m.parameters():
        if id(p) not in seen: seen.add(id(p)); total += p.numel()
    emb, head = m.get_input_embeddings(), m.get_output_embeddings()
    total -= emb.weight.numel()
    if head is not None and head.weight is emb.weight: total += head.weight.numel()
    return total

# ---------------------------------------------------------------------------------------------------------------- context
@dataclass
class Ctx:
    "What a benchmark needs to know about this run."
    quick: bool
    device: str
    dtype: torch.dtype
    matmul: dict = field(default_factory=dict)
    _models: dict = field(default_factory=dict)

    @property
    def rate(self) -> float: return self.matmul["flops_per_s"]

    def floor_s(self, flops: float) -> float:
        "Seconds `flops` take at the measured matmul rate."
        return flops / self.rate

    def model(self, which: str = "main", device: str | None = None):
        "The benchmark model: the packaged SmolLM2 (full) or a tiny random Llama (quick); cached per (which, device)."
        device = device or self.device
        key = (which, device)
        if key not in self._models:
            from persona_vectors.models import load_model, tiny_model
            if self.quick:
                m, tok = tiny_model("llama", hidden=64, n_layers=4)
                m = m.to(device, self.dtype)
            else:
                m, tok = load_model(device=device, dtype=self.dtype)
            with torch.no_grad():  # page in weights that loading left memory-mapped, so that no arm is charged for it
                for p in m.parameters(): p.data = p.data.clone()
            trim()
            m.eval()
            self._models[key] = (m, tok)
        return self._models[key]

    def model_name(self) -> str:
        return "tiny random Llama (4 blocks, hidden 64, vocab 512)" if self.quick else "SmolLM2-135M-Instruct (packaged, 30 blocks, hidden 576, vocab 49152)"

def machine(device: str, dtype: torch.dtype) -> dict:
    "The machine this run measured."
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.lower().startswith("model name"): cpu = line.split(":", 1)[1].strip(); break
    except OSError: pass
    try: mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError): mem = None
    import transformers
    try: import peft; peft_v = peft.__version__
    except ImportError: peft_v = None
    out = dict(cpu=cpu, cores=os.cpu_count(), torch_threads=torch.get_num_threads(), memory_gb=round(mem / 2 ** 30, 1) if mem else None,
               platform=platform.platform(), python=platform.python_version(), torch=torch.__version__,
               transformers=transformers.__version__, peft=peft_v, device=device, dtype=str(dtype).replace("torch.", ""),
               load_average_start=[round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None)
    if device.startswith("cuda"):
        out.update(gpu=torch.cuda.get_device_name(), gpu_memory_gb=round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 1),
                   cuda=torch.version.cuda)
    return out

# ---------------------------------------------------------------------------------------------------------------- rows
def row(section: str, # benchmark family: steering, extraction, distillation, judge, study
        name: str, # row id
        metric: str, # 's' (seconds), 'bytes', 'tokens/s', 'requests', 'share'
        project: float | None, # the project's value
        baseline: float | None, # the baseline's value
        goal: str, # human-readable goal on the ratio ('' when none)
        met: bool | None, # whether the goal is met (None: no goal)
        note: str, # what was measured, and why a goal is not met / what would close it
        higher_is_better: bool = False,
        project_floor_x: float | None = None, # project time / its floor
        baseline_floor_x: float | None = None, # baseline time / its floor
        ratio: float | None = None, # default project / baseline
        status: str = "ok", # 'ok', 'missing' (input not there), 'error', 'todo'
        **details) -> dict:
    "One result row."
    if ratio is None and project is not None and baseline:
        ratio = project / baseline
    return dict(section=section, name=name, status=status, metric=metric, higher_is_better=higher_is_better,
                project=_round(project), baseline=_round(baseline), ratio=_round(ratio, 4), goal=goal, met=met,
                project_floor_x=_round(project_floor_x, 2), baseline_floor_x=_round(baseline_floor_x, 2), note=note,
                details={k: _round(v) for k, v in details.items()})

def _round(x, digits: int = 6):
    if isinstance(x, float):
        if not math.isfinite(x): return None
        return float(f"{x:.{digits}g}")
    if isinstance(x, (list, tuple)): return [_round(v, digits) for v in x]
    if isinstance(x, dict): return {k: _round(v, digits) for k, v in x.items()}
    return x

def fmt_value(v, metric: str) -> str:
    "A value for the table."
    if v is None: return "—"
    if metric == "bytes":
        for unit, s in (("GB", 2 ** 30), ("MB", 2 ** 20), ("KB", 2 ** 10)):
            if abs(v) >= s: return f"{v / s:.3g} {unit[0]}iB"
        return f"{v:.0f} B"
    if metric == "s": return f"{v:.3g} s"
    if metric == "tokens/s": return f"{v:.4g} tok/s"
    if metric == "requests": return f"{v:.0f} req"
    if metric == "share": return f"{v:.3g} s"
    return f"{v:.4g}"
