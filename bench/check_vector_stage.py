"""Does a run's `vector` stage still hold with today's code? `measure_vector` on the run's own extraction answers,
against the files the stage wrote (vector/persona.safetensors, separation.json, monitor.json).

    python -m bench.check_vector_stage RUN_DIR [RUN_DIR ...]

Needs the whole run directory (the committed copies in nbs/ leave out the extraction answers). Prints, per run, whether
the vectors are bitwise the stage's, the largest separation difference and the calibration's relative difference.
"""
import json, sys, time
import torch
from persona_vectors.config import load_config
from persona_vectors.pipeline import Study
from persona_vectors.extraction import filter_pairs, load_vector
from persona_vectors.steering import measure_vector


def check(run: str) -> dict:
    "measure_vector on a run's extraction answers against the run's vector files."
    s = Study(load_config(f"{run}/config.json"), run, quiet=True, progress=False)
    e = s.cfg.extraction
    m, t = s.model()
    recs = filter_pairs(s.extraction_answers(), e.trait_threshold, e.coherence_threshold, verbose=False)
    t0 = time.time(); got = measure_vector(m, t, recs, e.variant, s.monitor_layer(), batch_size=e.batch_size, progress=False)
    vec, _ = load_vector(f"{run}/vector/persona.safetensors")
    sep = {int(k): v for k, v in json.load(open(f"{run}/vector/separation.json")).items()}
    cal, c2 = json.load(open(f"{run}/vector/monitor.json")), got["monitor"].calibration()
    return dict(run=run, answers=len(recs), seconds=round(time.time() - t0, 1),
                vectors_bitwise=all(torch.equal(got["vectors"][k], vec[k]) for k in vec),
                separation_max_abs_diff=max(abs(got["separation"][l] - sep[l]) for l in sep), same_layers=set(got["separation"]) == set(sep),
                calibration_max_rel_diff=max(abs(c2[k] - cal[k]) / abs(cal[k]) for k in ("pos_mean", "neg_mean")), monitor_layer=(c2["layer"], cal["layer"]))


if __name__ == "__main__":
    for r in sys.argv[1:]: print(json.dumps(check(r)))
