"""The benchmarks: the one command in quick mode runs every section and writes both result files; every row's `met`
follows from its ratio and goal; the committed full-run results (bench/results/latest.json) agree with themselves,
with latest.md and with what nbs/20_benchmarks.ipynb shows and says.

The markdown is checked by parsing it here, not by calling `bench.run.markdown` again: a formatting bug, or a
latest.md left from another run, shows up as a difference."""
import json, math, operator, os, re, statistics, subprocess, sys, time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT/"bench"/"results"
SECTIONS = {"steering", "extraction", "distillation", "judge", "study"}

# ------------------------------------------------------------------------------------------------------------- goals
OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
GOAL = re.compile(r"^(?:ratio\s*)?(>=|<=|<|>)\s*(\d+(?:\.\d+)?)$")  # '>= 0.97', '<= 1.0', 'ratio < 0.10'


def goal_met(r: dict) -> tuple[bool, ...]:
    "The values `met` may take given the row's goal and numbers: one, or both when the stored ratio rounds onto the threshold."
    g = r["goal"].strip()
    if g == "0 requests": return (r["details"]["requests"] == 0,)
    m = GOAL.match(g)
    assert m, f"{r['name']}: goal {g!r} is in no form this test knows; teach goal_met to read it"
    op, thr, ratio = OPS[m[1]], float(m[2]), r["ratio"]
    assert isinstance(ratio, (int, float)) and math.isfinite(ratio), f"{r['name']}: goal {g!r} but ratio {ratio!r}"
    if abs(ratio - thr) > 5e-4 * abs(ratio): return (op(ratio, thr),)  # the ratio is stored to 4 significant digits
    exact = r["project"] / r["baseline"] if r["project"] is not None and r["baseline"] else ratio
    return tuple({op(ratio, thr), op(exact, thr)})


def check_met(rows: list[dict]) -> int:
    "Assert every row's `met` is what its ratio and goal say (None without a goal); return how many were decided at a tie."
    ties = 0
    for r in rows:
        if r["status"] != "ok": continue
        if not r["goal"]:
            assert r["met"] is None, f"{r['name']}: met {r['met']!r} without a goal"; continue
        want = goal_met(r); ties += len(want) > 1
        assert r["met"] in want, f"{r['name']}: met {r['met']!r}, but ratio {r['ratio']} against goal {r['goal']!r} says {want[0]!r}"
    return ties


def check_ratios(rows: list[dict]) -> float:
    "Assert each ratio is project / baseline (for the study's stages: the stage's share of the total) to the rounding of the three numbers; return the largest relative difference."
    # rows store values to 6 significant digits and ratios to 4 (bench/common.py `_round`); the judge's rows to 4 decimals
    half = lambda x, sig: max(0.5 * abs(x) * 10 ** (1 - sig), 5e-5)
    worst, total = 0.0, next((r["project"] for r in rows if r["name"] == "total"), None)
    for r in rows:
        if r["status"] != "ok" or r["ratio"] is None: continue
        p, b = r["project"], total if r["details"].get("ratio_kind") == "share of total" else r["baseline"]
        want = p / b
        tol = half(r["ratio"], 4) + (half(p, 6) + abs(want) * half(b, 6)) / abs(b)
        worst = max(worst, abs(r["ratio"] - want) / max(abs(want), 1e-12))
        assert abs(r["ratio"] - want) <= 1.01 * tol, f"{r['name']}: ratio {r['ratio']} but project / {'total' if b is total else 'baseline'} = {want:.6g}"
    return worst


# ---------------------------------------------------------------------------------------------------------- markdown
UNITS = {"tok/s": 1, "s": 1, "req": 1, "B": 1, "KiB": 2 ** 10, "MiB": 2 ** 20, "GiB": 2 ** 30}


def shown(cell: str) -> tuple[float, float] | None:
    "A number as the table shows it ('1.01 GiB', '0.15 of total', '5.4x'): its value in base units and half its last digit."
    if cell == "—": return None
    m = re.fullmatch(r"(-?\d+(?:\.(\d+))?(?:e([+-]\d+))?)\s*(x|of total|[A-Za-z/]+)?", cell)
    assert m, f"cannot read {cell!r}"
    unit = UNITS.get(m[4], 1)
    return float(m[1]) * unit, 0.5 * 10 ** (int(m[3] or 0) - len(m[2] or "")) * unit


def md_rows(md: str) -> list[dict]:
    "The results table of a benchmark markdown file, one dict of stripped cells per row."
    lines = md.split("\n| section |", 1)[1].split("\n\n", 1)[0].splitlines()
    head = ["section"] + [c.strip() for c in lines[0].strip(" |").split("|")]
    return [dict(zip(head, [c.strip() for c in l.strip().strip("|").split("|")])) for l in lines[2:]]


def close(cell: str, value) -> bool:
    "Whether a table cell shows `value` to the cell's own rounding ('—' for None)."
    s = shown(cell)
    if s is None or value is None: return s is None and value is None
    return abs(s[0] - value) <= s[1] * 1.0001 + 1e-12


def check_md(md: str, res: dict) -> int:
    "Assert the markdown shows the JSON's run, machine, matmul rate and every row (numbers to their shown rounding, goal, met, note); return the rows checked."
    m = res["machine"]
    assert f"Run {res['started']} in {round(res['wall_s'])} s with `{res['command']}`." in md
    line = next(l for l in md.splitlines() if l.startswith("**Machine**"))
    for k in ("cpu", "cores", "torch_threads", "memory_gb", "device", "dtype", "torch", "transformers", "peft", "python",
              "load_average_start", "load_average_end"):
        assert str(m[k]) in line, f"machine {k} = {m[k]!r} not in {line!r}"
    rates = [float(x) for x in re.findall(r"([\d.]+) GFLOP/s", md)]
    assert len(rates) == 2 and all(abs(a - b["flops_per_s"] / 1e9) <= 0.05 for a, b in zip(rates, (res["matmul"], res["matmul_end"]))), rates
    rows = md_rows(md)
    got, want = [(c["section"], c["benchmark"]) for c in rows], [(r["section"], r["name"]) for r in res["rows"]]
    assert got == want, f"the table's rows are not the JSON's: missing {set(want) - set(got)}, extra {set(got) - set(want)}, order {got == sorted(got, key=want.index)}"
    for c, r in zip(rows, res["rows"]):
        assert close(c["project"], r["project"]) and close(c["baseline"], r["baseline"]), (c, r["project"], r["baseline"])
        assert close(c["ratio"], r["ratio"]), (c["ratio"], r["ratio"])
        assert c["goal"] == (r["goal"] or "—"), (c["goal"], r["goal"])
        met = {True: "yes", False: "**no**", None: "—"}[r["met"]] if r["status"] == "ok" else r["status"]
        assert c["met"] == met, (r["name"], c["met"], r["met"])
        fl = c["floor multiple (project / baseline)"]
        if fl == "—": assert r["project_floor_x"] is None and r["baseline_floor_x"] is None, r["name"]
        else:
            p, b = fl.split(" / ")
            assert close(p, r["project_floor_x"]) and close(b, r["baseline_floor_x"]), (r["name"], fl)
        assert f"- **{r['name']}** ({met}): {r['note']}" in md, f"{r['name']}: its note is not in the markdown"
    return len(rows)


# ---------------------------------------------------------------------------------------------------------- quick run
@pytest.mark.slow  # about 40-70 s on 2 shared CPU cores
def test_bench_quick(tmp_path):
    import torch
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                       env=dict(os.environ, HF_HUB_OFFLINE="1"), capture_output=True, text=True, timeout=600)
    print(f"quick mode took {time.time() - t0:.0f} s")  # speed is measured as ratios in the benchmarks, not asserted here
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    res = json.loads((tmp_path/"quick.json").read_text())
    md = (tmp_path/"quick.md").read_text()
    assert not (tmp_path/"latest.json").exists()  # quick results never replace the committed full-run results
    # the machine is recorded
    m = res["machine"]
    assert m["cpu"] and m["cores"] >= 1 and m["torch"] == torch.__version__ and m["device"] in ("cpu", "cuda")
    assert res["quick"] is True and res["matmul"]["flops_per_s"] > 0
    # every section ran, and every row has a ratio and a goal or a note
    assert SECTIONS <= {r["section"] for r in res["rows"]}
    for r in res["rows"]:
        assert r["status"] in ("ok", "missing"), r  # 'error' rows mean a benchmark raised
        assert r["goal"] or r["note"], r
        if r["status"] == "ok":
            assert isinstance(r["ratio"], (int, float)) and math.isfinite(r["ratio"]) and r["ratio"] >= 0, r
        else:
            assert r["section"] == "study" and "missing" in r["note"], r  # only the demo run may be absent
        assert r["name"] in p.stdout
    # `met` follows from the ratio and the goal; the ratio from the row's numbers; the markdown shows the JSON
    print(f"quick: met checked on {sum(bool(r['goal']) for r in res['rows'])} rows ({check_met(res['rows'])} at a tie); "
          f"ratio vs project / baseline: largest relative difference {check_ratios(res['rows']):.1e}; "
          f"markdown rows checked {check_md(md, res)}")
    names = {r["name"] for r in res["rows"]}
    assert "steered_generation_tokens_per_s" in names
    assert any(n.startswith("kl_loss_peak_memory") for n in names) and any(n.startswith("lora_step") for n in names)
    # the benchmarks that compare results checked them (they assert inside; the recorded differences are small)
    ext = next(r for r in res["rows"] if r["name"].startswith("activation_means_") and r["name"].endswith("_time"))
    print(f"extraction: max |diff| {ext['details']['max_abs_diff']:.2g} of values up to {ext['details']['max_abs_value']:.3g}")
    assert ext["details"]["max_abs_diff"] <= 1e-3 * ext["details"]["max_abs_value"]
    vs = next(r for r in res["rows"] if r["name"].startswith("vector_stage_"))  # two reads against four: the same vectors, check and calibration
    print(f"vector stage: separation within {vs['details']['separation_max_abs_diff']:.1g}, calibration within {vs['details']['calibration_max_rel_diff']:.1g}")
    assert vs["details"]["separation_max_abs_diff"] <= 1e-6 and vs["details"]["calibration_max_rel_diff"] <= 1e-4


# ------------------------------------------------------------------------------------------------- committed results
def latest() -> dict: return json.loads((RESULTS/"latest.json").read_text())


def test_latest_results_consistent():
    "The committed full run: each `met` follows from its ratio and goal, each ratio from its numbers, latest.md shows latest.json."
    res = latest()
    assert res["quick"] is False and {r["section"] for r in res["rows"]} == SECTIONS
    assert all(r["status"] == "ok" for r in res["rows"]), [r["name"] for r in res["rows"] if r["status"] != "ok"]
    n_goal = sum(bool(r["goal"]) for r in res["rows"])
    ties, worst = check_met(res["rows"]), check_ratios(res["rows"])
    n = check_md((RESULTS/"latest.md").read_text(), res)
    print(f"latest.json: met checked on {n_goal} rows ({ties} at a tie); ratio vs project / baseline: largest relative "
          f"difference {worst:.1e}; latest.md: {n} rows checked")


def nb_outputs(cell_id: str) -> list[str]:
    "The markdown outputs saved in one cell of nbs/20_benchmarks.ipynb."
    nb = json.loads((ROOT/"nbs"/"20_benchmarks.ipynb").read_text())
    c = next(c for c in nb["cells"] if c.get("id") == cell_id)
    return ["".join(o["data"]["text/markdown"]) for o in c["outputs"] if "text/markdown" in o.get("data", {})]


def test_benchmarks_notebook_shows_latest():
    "20_benchmarks is not executed by the tests (skip_exec): its saved outputs must be the committed latest.md / latest.json."
    res, md = latest(), (RESULTS/"latest.md").read_text()
    check_md(md, res)
    head, table = nb_outputs("76f6b964")  # the run, machine and conventions paragraphs, then the table
    assert head.strip() in md.split("\n| section |", 1)[0], "20_benchmarks shows another run's header than latest.md"
    assert table.strip() == ("| section |" + md.split("\n| section |", 1)[1]).split("\n## Notes", 1)[0].strip(), \
        "20_benchmarks shows another table than latest.md"
    lines = nb_outputs("5e7fc401")[0].splitlines()  # one line per goal: ratio, goal, met, the benchmark's note
    rows = [r for r in res["rows"] if r["goal"]]
    assert len(lines) == len(rows), (len(lines), len(rows))
    for l, r in zip(lines, rows):
        m = re.fullmatch(r"- `(.+?)`: ratio (\S+), goal (.+?): \*\*(met|not met)\*\*\. (.*)", l)
        assert m and m[1] == r["name"] and close(m[2], r["ratio"]) and m[3] == r["goal"], (l[:200], r["name"], r["ratio"])
        assert (m[4] == "met") == r["met"] and m[5] == r["note"], (r["name"], m[4], r["met"])


def test_benchmarks_notebook_claims():
    "The prose of 20_benchmarks ('What the numbers say') against the committed numbers."
    r = {x["name"]: x for x in latest()["rows"]}
    ratio = lambda pre, post="": next(x["ratio"] for k, x in r.items() if k.startswith(pre) and k.endswith(post))
    assert r["steered_generation_tokens_per_s"]["met"], "'Steering is free': below its goal"
    assert ratio("activation_means_", "_time") < 1 and ratio("activation_means_", "_peak_memory") < 1, "'extraction ... is faster and holds less memory'"
    assert r[next(k for k in r if k.startswith("vector_stage_"))]["met"] and ratio("vector_stage_", "_time") < 0.7, "'the vector stage ... takes about 0.6x the time'"
    assert ratio("lora_step_peak_memory") < 1 and r["lora_step_time_adapter_vs_copy"]["met"], "'LoRA ... saves memory at the step time of the plain script'"
    assert ratio("full_ft_step_time") < 1 and ratio("full_ft_step_peak_memory") < 1, "'a full fine-tune on cached top-k ... skips the teacher'"
    kl = {k: x["ratio"] for k, x in r.items() if k.startswith("kl_loss_peak_memory")}
    assert kl and all(0.2 <= v <= 0.3 for v in kl.values()), f"'its peak is about a quarter': {kl}"
    assert ratio("kl_loss_time_vocab151k") < 1, "'at a 151k vocabulary it is faster than materialising them'"
    assert ratio("judge_", "ms") < 0.1 and r["judge_200_answers_rerun_requests"]["details"]["requests"] == 0, \
        "'more than an order of magnitude faster ... a rerun on the cache sends no request'"


# ------------------------------------------------------------------------------------------------------------ gpu-check
def test_gpu_check_without_cuda_says_so_and_runs_nothing(tmp_path):
    "`make gpu-check` on a machine without CUDA: exit 0, a clear message, no result file."
    import torch
    if torch.cuda.is_available(): pytest.skip("this machine has CUDA: the check itself runs (make gpu-check)")
    p = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=120)
    assert p.returncode == 0 and "no CUDA device on this machine, so nothing was run" in p.stdout, p.stdout + p.stderr
    assert list(tmp_path.iterdir()) == []
    recipe = (ROOT/"Makefile").read_text().split("\ngpu-check:")[1].split("\n\n")[0]
    assert "-m bench.gpu_check" in recipe and "-m bench.gpu_scale" in recipe


def test_gpu_check_smoke_on_cpu(tmp_path):
    "The GPU check's code on a tiny model on this CPU: every check runs, passes its bound, and both files are written."
    p = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--smoke-cpu", "--out", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"), timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    r = json.loads((tmp_path/"gpu_check_smoke.json").read_text())
    assert r["verdicts"] and all(r["verdicts"].values()), r["verdicts"]
    assert r["steering"]["effect_cosine"] < 1 and r["steering"]["effect_max_abs_diff"] > 0  # bf16 really ran: not float32 twice
    assert r["distillation"]["steps"] == 20 and r["distillation"]["adapter_dtype"] == "torch.float32"
    assert "| bf16 vs float32 steering effect | cosine" in (tmp_path/"gpu_check_smoke.md").read_text()
    assert not (tmp_path/".gpu_check_work").exists()
    # the bf16 gap, attributed: every scoring of every student, the library's own numbers beside them, the noise floors
    g = r["bf16_gap"]
    assert g["ok"] and set(g["gap"]) == {"f32", "bf16", "f32+autocast"} and all(0 < x < 1 for d in g["gap"].values() for x in d.values())
    assert g["gap"]["bf16"]["all bf16 (as a bf16 study scores)"] != g["gap"]["bf16"]["all float32"]  # bf16 really scored
    assert g["noise_floor"]["KL(T32 || T16): the bf16 teacher against the float32 one"] > 0
    assert abs(g["library_gap"]["bf16@16"] - g["bf16_study_gap"]) < 0.01  # the library's bf16 scoring, batched differently
    # the demo through the CLI on the tiny model, beside the committed run
    assert r["demo"]["ok"] and r["demo"]["run"]["variants"]["lora4"]["gap"] is not None
    assert r["demo"]["committed"]["variants"]["lora8"]["gap"] > 0.8
    auroc = r["demo"]["committed"]["auroc"]  # the committed demo run's, as its manifest records it
    assert 0.5 < auroc <= 1 and f"| held-out AUROC | {auroc:.3f} |" in (tmp_path/"gpu_check_smoke.md").read_text()


def test_gpu_check_records_a_failing_check_and_goes_on(tmp_path):
    "One check that raises: its traceback is in the json, the others still run, the exit code is 1."
    (tmp_path/"a-file").write_text("not a run directory")  # the demo's run directory is a file: the study refuses it
    p = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--smoke-cpu", "--out", str(tmp_path), "--only", "steering,demo",
                        "--demo-dir", str(tmp_path/"a-file")], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"), timeout=300)
    r = json.loads((tmp_path/"gpu_check_smoke.json").read_text())
    assert p.returncode == 1 and r["steering"]["ok"] and not r["demo"]["ok"], p.stderr[-2000:]
    assert "Traceback" in r["demo"]["error"] and "distillation" not in r and "bf16_gap" not in r
    assert "| demo | **failed**" in (tmp_path/"gpu_check_smoke.md").read_text()
