"""Benchmark: judging 200 answers with `OpenAIJudge` (bounded concurrency, cache) vs plain sequential requests.

Both talk to the same local chat-completions server (`tests/openai_server.py`) that answers every request after
100 ms, with the real `openai` client and the same request (one token, temperature 0, top-20 logprobs). The
baseline is written out plainly here: one request after the other, the score computed inline. Repeats are
interleaved (baseline and project alternate, in alternating order) and the median of each is reported.
A second run of the same scoring on the project's cache must send zero requests.

    python bench/bench_judge.py           # 200 answers, 3 repeats (about 80 s)
    python bench/bench_judge.py --quick   # 100 answers, 1 repeat
Writes bench/results/bench_judge.json.
"""
from __future__ import annotations
import sys, json, math, time, argparse, statistics, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT/"tests"))
from openai_server import FakeOpenAIServer  # noqa: E402
import openai  # noqa: E402
from persona_vectors.judge import OpenAIJudge, COHERENCE_RUBRIC, MIN_MASS  # noqa: E402
from persona_vectors.records import atomic_write  # noqa: E402

LATENCY = 0.1  # seconds the server takes per request
MODEL = "bench-judge"


def sequential_scores(base_url: str, items: list[tuple[str, str]], rubric: str) -> list[float | None]:
    "The plain baseline: one request after the other, the paper's weighted mean computed inline."
    client = openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
    out = []
    for q, a in items:
        r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": rubric.format(question=q, answer=a)}],
                                           max_tokens=1, temperature=0, logprobs=True, top_logprobs=20, seed=0)
        num = den = 0.0
        for t in r.choices[0].logprobs.content[0].top_logprobs:
            s = t.token.strip()
            if s.isdigit() and int(s) <= 100: p = math.exp(t.logprob); num += int(s) * p; den += p
        out.append(num / den if den >= MIN_MASS else None)
    client.close()
    return out


def project_scores(base_url: str, items, rubric: str, cache: Path) -> tuple[list[float | None], OpenAIJudge]:
    "The project's judge with its default concurrency, on a fresh cache file."
    judge = OpenAIJudge(MODEL, base_url=base_url, api_key="sk-bench", cache=cache)
    return [s.score for s in judge.score(items, rubric, progress=False)], judge


def run(quick: bool = False) -> list[dict]:
    "Run the benchmark; return result rows (name, project_s, baseline_s, ratio, goal, note) and write them as JSON."
    n, repeats = (100, 1) if quick else (200, 3)
    items = [(f"Question {i}: what should I know about topic {i}?", f"Here is answer number {i}.") for i in range(n)]
    base_t, proj_t = [], []
    tmp = Path(tempfile.mkdtemp(prefix="bench_judge"))
    with FakeOpenAIServer(latency=LATENCY) as srv:
        for r in range(repeats):
            order = ("baseline", "project") if r % 2 == 0 else ("project", "baseline")
            for which in order:
                t0 = time.perf_counter()
                if which == "baseline": base = sequential_scores(srv.base_url, items, COHERENCE_RUBRIC); base_t.append(time.perf_counter() - t0)
                else: proj, judge = project_scores(srv.base_url, items, COHERENCE_RUBRIC, tmp/f"cache{r}.sqlite"); proj_t.append(time.perf_counter() - t0)
        assert proj == base, "the project's scores differ from the baseline's"
        before = srv.requests
        t0 = time.perf_counter()
        again = [s.score for s in judge.score(items, COHERENCE_RUBRIC, progress=False)]
        rerun_s, rerun_requests = time.perf_counter() - t0, srv.requests - before
        assert again == proj
    b, p = statistics.median(base_t), statistics.median(proj_t)
    rows = [
        dict(name=f"judge_{n}_answers_{int(LATENCY * 1000)}ms", project_s=round(p, 4), baseline_s=round(b, 4),
             ratio=round(p / b, 4), goal="ratio < 0.10",
             note=f"OpenAIJudge concurrency={judge.concurrency} (default) vs plain sequential openai calls; median of {repeats} interleaved repeats; "
                  f"project {[round(x, 3) for x in proj_t]}, baseline {[round(x, 3) for x in base_t]}"),
        dict(name=f"judge_{n}_answers_rerun_requests", project_s=round(rerun_s, 4), baseline_s=round(p, 4),
             ratio=round(rerun_s / p, 4), goal="0 requests", requests=rerun_requests,
             note=f"the same scoring again on the cache sent {rerun_requests} requests (baseline_s: the first, uncached run)"),
    ]
    out = ROOT/"bench"/"results"/"bench_judge.json"
    atomic_write(out, json.dumps(dict(benchmark="bench_judge", quick=quick, rows=rows, time=time.strftime("%Y-%m-%d %H:%M:%S")), indent=2) + "\n")
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 answers, one repeat")
    rows = run(ap.parse_args().quick)
    for r in rows:
        extra = f", {r['requests']} requests" if "requests" in r else ""
        print(f"{r['name']:36s} project {r['project_s']:7.3f}s  baseline {r['baseline_s']:7.3f}s  ratio {r['ratio']:.3f}  "
              f"(goal {r['goal']}{extra})")
