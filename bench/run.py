"""Run every benchmark on this machine, print the ratio table, write it as JSON and markdown.

    python -m bench.run            # the packaged SmolLM2, realistic sizes (about 10 min on 2 CPU cores)
    python -m bench.run --quick    # tiny models, small sizes (< 1 min): a smoke test of every benchmark
    python -m bench.run --only steering,extraction   # some sections (results file gets only those rows)

Writes <out>/latest.{json,md} (full run) or <out>/quick.{json,md} (--quick), <out> = bench/results by default. On a
CUDA machine the models run in bf16 on the GPU; on a CPU in float32. See bench/common.py for how ratios, memory and
floors are measured.
"""
from __future__ import annotations
import argparse, inspect, json, math, os, sys, tempfile, time, traceback
from pathlib import Path

import warnings
import torch

from persona_vectors.judge import OpenAIJudge
from persona_vectors.records import atomic_write
from . import common
from .common import Ctx, machine, matmul_rate, pin_malloc, row, fmt_value, MEMORY_METHOD

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("steering", "extraction", "distillation", "judge", "study")


def judge_rows(ctx: Ctx) -> list[dict]:
    "bench_judge.run's rows in this table's form (its own JSON goes to a temporary directory, its committed file stays)."
    from . import bench_judge
    saved = bench_judge.ROOT
    bench_judge.ROOT = Path(tempfile.mkdtemp(prefix="bench_judge_root"))
    try: rows = bench_judge.run(ctx.quick)
    finally: bench_judge.ROOT = saved
    out = []
    for r in rows:
        if "requests" in r:
            out.append(row("judge", r["name"], "s", r["project_s"], r["baseline_s"], r["goal"], r["requests"] == 0,
                           r["note"] + f" ({r['requests']} requests).", ratio=r["ratio"], requests=r["requests"]))
        else:
            n = int(r["name"].split("_")[1])
            lat = bench_judge.LATENCY
            k = inspect.signature(OpenAIJudge).parameters["concurrency"].default
            floor_p, floor_b = math.ceil(n / k) * lat, n * lat  # k requests in flight (the default) / one at a time, each `lat` s
            out.append(row("judge", r["name"], "s", r["project_s"], r["baseline_s"], r["goal"], r["ratio"] < 0.10,
                           r["note"] + f". Floor: the server's latency alone ({n} requests x {lat * 1000:.0f} ms, "
                           f"{k} at a time for the project, one at a time for the baseline).", ratio=r["ratio"],
                           project_floor_x=r["project_s"] / floor_p, baseline_floor_x=r["baseline_s"] / floor_b))
    return out


def run_section(name: str, ctx: Ctx, args) -> list[dict]:
    if name == "steering":
        from . import bench_steering; return bench_steering.run(ctx)
    if name == "extraction":
        from . import bench_extraction; return bench_extraction.run(ctx)
    if name == "distillation":
        from . import bench_distillation; return bench_distillation.run(ctx)
    if name == "judge": return judge_rows(ctx)
    if name == "study":
        from . import bench_study; return bench_study.run(ctx, args.study_run)
    raise ValueError(name)


def ratio_cell(r: dict) -> str:
    if r["ratio"] is None: return "—"
    if r["details"].get("ratio_kind") == "share of total": return f"{r['ratio']:.2f} of total"
    return f"{r['ratio']:.3f}"


def met_cell(r: dict) -> str:
    if r["status"] != "ok": return r["status"]
    return {True: "yes", False: "**no**", None: "—"}[r["met"]]


def floor_cell(r: dict) -> str:
    p, b = r["project_floor_x"], r["baseline_floor_x"]
    if p is None and b is None: return "—"
    f = lambda x: "—" if x is None else f"{x:.3g}x"
    return f"{f(p)} / {f(b)}"


COLUMNS = ("section", "benchmark", "project", "baseline", "ratio", "goal", "met", "floor multiple (project / baseline)")

def table_rows(rows: list[dict]) -> list[list[str]]:
    return [[r["section"], r["name"], fmt_value(r["project"], r["metric"]), fmt_value(r["baseline"], r["metric"]),
             ratio_cell(r), r["goal"] or "—", met_cell(r), floor_cell(r)] for r in rows]


def markdown(res: dict) -> str:
    m = res["machine"]
    dev = m["device"] + (f" ({m['gpu']}, {m['gpu_memory_gb']} GiB, CUDA {m['cuda']})" if "gpu" in m else "")
    lines = [f"# Benchmarks ({'quick' if res['quick'] else 'full'} run)", "",
             f"Run {res['started']} in {res['wall_s']:.0f} s with `{res['command']}`.", "",
             f"**Machine**: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), {m['memory_gb']} GiB RAM; "
             f"device {dev}, dtype {m['dtype']}; torch {m['torch']}, transformers {m['transformers']}, peft {m['peft']}, "
             f"Python {m['python']}; load average {m['load_average_start']} at the start, {m['load_average_end']} at the end "
             "(the machine is shared: higher than the core count means other work competed for the CPU).", "",
             f"**Matmul rate** (the floors' yardstick): {res['matmul']['flops_per_s'] / 1e9:.1f} GFLOP/s "
             f"({res['matmul']['n']}x{res['matmul']['n']} {res['matmul']['dtype']} matmul, median of 5) at the start, "
             f"{res['matmul_end']['flops_per_s'] / 1e9:.1f} GFLOP/s at the end.", "",
             f"**Ratio** = project / baseline (median of interleaved repeats); for tokens/s higher is better, for seconds "
             f"and bytes lower. **Peak memory**: {res['memory_method']}. **Floor multiple**: the stage's time over the time "
             "its matmul FLOPs (2 x params x tokens forward, 3x that forward + backward) take at the matmul rate above.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in cells) + " |" for cells in table_rows(res["rows"])]
    lines += ["", "## Notes", ""]
    lines += [f"- **{r['name']}** ({met_cell(r)}): {r['note']}" for r in res["rows"]]
    return "\n".join(lines) + "\n"


def print_table(rows: list[dict]):
    cells = [list(COLUMNS[1:])] + [c[1:] for c in table_rows(rows)]
    w = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    for j, c in enumerate(cells):
        print("  ".join(x.ljust(w[i]) for i, x in enumerate(c)))
        if j == 0: print("  ".join("-" * x for x in w))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny models and small sizes (< 1 min)")
    ap.add_argument("--out", default=str(ROOT/"bench"/"results"), help="directory of the result files")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections among {','.join(SECTIONS)}")
    ap.add_argument("--study-run", default=None, help="run directory of the demo study (default runs/demo)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's own for a full run, 1 for --quick, whose tiny ops only lose "
                         "to thread synchronisation, badly so on a shared CPU)")
    args = ap.parse_args(argv)
    sections = [s for s in args.only.split(",") if s]
    bad = [s for s in sections if s not in SECTIONS]
    if bad: ap.error(f"unknown section(s) {bad}; expected some of {SECTIONS}")
    pin_malloc()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    torch.manual_seed(0)
    threads = args.threads or (1 if args.quick else None)
    if threads: torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    t0 = time.time()
    ctx = Ctx(args.quick, device, dtype)
    ctx.matmul = matmul_rate(device, dtype, n=1024 if args.quick else (8192 if device == "cuda" else 2048))
    mach = machine(device, dtype)
    print(f"bench: {'quick' if args.quick else 'full'} run on {mach['cpu']} ({mach['cores']} cores), device {device} {mach['dtype']}, "
          f"matmul {ctx.rate / 1e9:.1f} GFLOP/s", flush=True)
    rows, errors = [], 0
    for name in sections:
        ts = time.time()
        try:
            new = run_section(name, ctx, args)
        except Exception as e:
            traceback.print_exc(); errors += 1
            new = [row(name, name, "s", None, None, "", None, f"error: {type(e).__name__}: {e}", status="error")]
        for r in new: r["details"]["section_seconds"] = round(time.time() - ts, 1)
        rows += new
        print(f"bench: {name} done in {time.time() - ts:.0f} s", flush=True)
    mach["load_average_end"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    end_rate = matmul_rate(device, dtype, n=1024 if args.quick else (8192 if device == "cuda" else 2048))
    res = dict(quick=args.quick, started=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t0)), wall_s=round(time.time() - t0, 1),
               command=" ".join(["python -m bench.run", *(sys.argv[1:] if argv is None else argv)]),
               machine=mach, matmul=ctx.matmul, matmul_end=end_rate, memory_method=MEMORY_METHOD["cuda" if device == "cuda" else "cpu"],
               model=ctx.model_name(), rows=rows)
    out = Path(args.out); stem = "quick" if args.quick else "latest"
    atomic_write(out/f"{stem}.json", json.dumps(res, indent=1) + "\n")
    atomic_write(out/f"{stem}.md", markdown(res))
    print()
    print_table(rows)
    print(f"\nwrote {out/stem}.json and .md in {res['wall_s']:.0f} s")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
