"""The demo study: wall time per stage, read from the run directory's manifest (`runs/demo/manifest.json`).

The pipeline records `seconds` for every stage it finishes. There is no baseline for a whole stage, so the ratio of
these rows is the stage's share of the study's total wall time (the row's `ratio_kind` says so).
"""
from __future__ import annotations
from pathlib import Path

from persona_vectors.records import read_json
from .common import Ctx, row

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RUN = ROOT/"runs"/"demo"


def run(ctx: Ctx, run_dir: str | Path | None = None) -> list[dict]:
    path = Path(run_dir or DEFAULT_RUN)/"manifest.json"
    if not path.exists():
        return [row("study", "demo_study", "s", None, None, "", None,
                    f"missing: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} does not exist; run "
                    "`make study` (the demo study on the packaged SmolLM2) and then the benchmarks again",
                    status="missing")]
    man = read_json(path)
    done = {k: v for k, v in man.items() if isinstance(v, dict) and v.get("status") == "done" and v.get("seconds") is not None}
    other = sorted(k for k in man if k not in done)
    total = sum(v["seconds"] for v in done.values())
    rows = [row("study", f"stage:{k}", "s", float(v["seconds"]), None, "", None,
                "wall time of the stage in the demo study (ratio: share of the study's total; no baseline, no FLOP count "
                "in the manifest, so no floor)", ratio=v["seconds"] / total if total else 0.0, ratio_kind="share of total")
            for k, v in done.items()]
    rows.append(row("study", "total", "s", float(total), None, "", None,
                    f"sum over {len(done)} finished stages of {path}" + (f"; not finished: {', '.join(other)}" if other else ""),
                    ratio=1.0, ratio_kind="share of total"))
    return rows
