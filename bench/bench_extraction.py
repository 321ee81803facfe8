"""Extraction: `activation_means` over stored token ids (length-sorted batches of 16) vs the usual script.

The usual script (the persona-vectors paper's `generate_vec.py`, written out plainly below): for each answer,
re-tokenize `prompt_text + answer_text`, run one forward pass with `output_hidden_states=True`, find the prompt length
by tokenizing the prompt text alone, and keep the per-layer means of the response tokens, of the prompt tokens and
the last prompt token. The answers are the demo trait's 200 contrastive prompts (20 questions x 5 instruction pairs
x pos/neg) with answer texts cut from the trait's own text at word boundaries, so re-tokenizing them gives back the
stored ids and the two computations must agree (asserted; the largest difference is reported).

Interleaving: the answers are sorted by length (as `activation_means` does) and cut into its batches of 16; for each
batch the project and the script take turns (in alternating order), so both see the same machine load. Memory: the
largest per-batch peak of each arm.
"""
from __future__ import annotations
import random

import torch

from persona_vectors.models import decoder_layers, hidden_size
from persona_vectors.extraction import activation_means, contrastive_prompts, VARIANTS
from persona_vectors.artifacts import load_trait, DEMO_TRAIT
from .common import Ctx, PeakMemory, timed, interleaved, matmul_params, row

BATCH = 16


def answer_texts(trait, n: int, lo: int, hi: int, seed: int = 0) -> list[str]:
    "n answer texts of lo..hi words, cut at word boundaries from the trait's own text."
    words = " ".join([trait.description, *trait.extract_questions, *trait.eval_questions,
                      *[p.pos + " " + p.neg for p in trait.instructions]]).split()
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(lo, hi); s = rng.randrange(0, len(words) - k)
        out.append(" ".join(words[s:s + k]))
    return out


def records(tok, n: int, lo: int, hi: int) -> list[dict]:
    "Contrastive prompts (ids and text) with answers (ids and text), as a run stores them."
    trait = load_trait(DEMO_TRAIT)
    prompts = contrastive_prompts(tok, trait)
    texts = answer_texts(trait, n, lo, hi)
    out = []
    for i in range(n):
        p = prompts[i % len(prompts)]
        msgs = [dict(role="system", content=p["system"]), dict(role="user", content=p["question"])]
        prompt_text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        out.append(dict(prompt_ids=list(p["prompt_ids"]), response_ids=tok(texts[i], add_special_tokens=False)["input_ids"],
                        prompt_text=prompt_text, text=texts[i]))
    return out


@torch.no_grad()
def usual_script(model, tok, recs: list[dict]) -> dict[str, torch.Tensor]:
    "The plain per-example loop: re-tokenize text, one forward pass with all hidden states, per-layer means."
    device = next(model.parameters()).device
    out = {v: [] for v in VARIANTS}
    for r in recs:
        inputs = tok(r["prompt_text"] + r["text"], return_tensors="pt", add_special_tokens=False).to(device)
        prompt_len = len(tok.encode(r["prompt_text"], add_special_tokens=False))
        outputs = model(**inputs, output_hidden_states=True)
        hs = outputs.hidden_states
        out["response_avg"].append(torch.stack([h[0, prompt_len:].mean(0) for h in hs]).float().cpu())
        out["prompt_avg"].append(torch.stack([h[0, :prompt_len].mean(0) for h in hs]).float().cpu())
        out["prompt_last"].append(torch.stack([h[0, prompt_len - 1] for h in hs]).float().cpu())
    return {v: torch.stack(x) for v, x in out.items()}


def run(ctx: Ctx) -> list[dict]:
    model, tok = ctx.model()
    N, lo, hi = (64, 4, 24) if ctx.quick else (200, 6, 30)
    recs = records(tok, N, lo, hi)
    # re-tokenization must give back the stored ids, or the two arms would not compute the same thing
    same = [tok(r["prompt_text"] + r["text"], add_special_tokens=False)["input_ids"] == r["prompt_ids"] + r["response_ids"]
            for r in recs]
    order = sorted(range(N), key=lambda i: -(len(recs[i]["prompt_ids"]) + len(recs[i]["response_ids"])))
    batches = [order[i:i + BATCH] for i in range(0, N, BATCH)]
    seqs = lambda idx: [(recs[i]["prompt_ids"] + recs[i]["response_ids"], len(recs[i]["prompt_ids"])) for i in idx]
    proj = lambda idx: activation_means(model, seqs(idx), batch_size=BATCH, pad_id=tok.pad_token_id, progress=False)  # max_tokens: its default
    base = lambda idx: usual_script(model, tok, [recs[i] for i in idx])
    proj(batches[-1]); base(batches[-1])  # warm-up on the shortest batch
    t = {"project": 0.0, "baseline": 0.0}; peak = {"project": 0, "baseline": 0}; outs = {"project": [], "baseline": []}
    per_batch_ratio = []
    for b, idx in enumerate(batches):
        tb = {}
        for arm in (("project", "baseline") if b % 2 == 0 else ("baseline", "project")):
            with PeakMemory(ctx.device) as pm:
                dt, o = timed(lambda: (proj if arm == "project" else base)(idx), ctx.device)
            t[arm] += dt; tb[arm] = dt; peak[arm] = max(peak[arm], pm.peak); outs[arm].append((idx, o))
        per_batch_ratio.append(tb["project"] / tb["baseline"])
    full = {}
    for arm in outs:
        full[arm] = {v: torch.zeros(N, len(decoder_layers(model)) + 1, outs[arm][0][1][v].shape[-1]) for v in VARIANTS}
        for idx, o in outs[arm]:
            for v in VARIANTS: full[arm][v][idx] = o[v].float()
    ok = torch.tensor(same)
    diffs = {v: (full["project"][v][ok] - full["baseline"][v][ok]).abs().max().item() for v in VARIANTS}
    scale = max(full["baseline"][v][ok].abs().max().item() for v in VARIANTS)
    max_diff = max(diffs.values())
    tol = 1e-3 if ctx.dtype == torch.float32 else 5e-2
    assert ok.float().mean() >= 0.95, f"re-tokenization changed {int((~ok).sum())} of {N} answers"
    assert max_diff <= tol * scale, f"activation means disagree: max diff {max_diff:.3g} (scale {scale:.3g})"
    n_tok = sum(len(r["prompt_ids"]) + len(r["response_ids"]) for r in recs)
    floor = ctx.floor_s(2 * matmul_params(model) * n_tok)
    per_batch_ratio.sort()
    common = dict(answers=N, tokens=n_tok, batches=len(batches), floor_s=floor, max_abs_diff=max_diff, max_abs_value=scale,
                  max_abs_diff_per_variant=diffs, retokenized_identical=int(ok.sum()),
                  per_batch_time_ratio_median=per_batch_ratio[len(per_batch_ratio) // 2])
    what = (f"{ctx.model_name()}; {N} contrastive answers ({lo}-{hi} words, {n_tok} tokens with prompts); project: "
            f"activation_means, batches of {BATCH}, length-sorted, from stored ids; baseline: one forward per answer over "
            f"re-tokenized text with output_hidden_states=True (the paper's script); each batch timed in turn. "
            f"Means agree: max |diff| {max_diff:.2g} (values up to {scale:.3g}) on {int(ok.sum())}/{N} answers whose "
            f"re-tokenization matched. ")
    rt = t["project"] / t["baseline"]
    tnote = what + ("Goal met: length-sorted batches waste little on padding, and no text is re-tokenized." if rt <= 1 else
                    "Slower on this run: on a CPU, batching barely speeds up a forward pass (DESIGN.md), while padding and "
                    "the full-vocabulary logits of every position cost extra. Closing it: `logits_to_keep=1` when "
                    "`logprob=False` and batch_size 1-4 on CPU; on a GPU, batching wins.")
    rm = peak["project"] / max(peak["baseline"], 1)
    # what the project's largest batch holds: full-vocabulary logits it never uses, and all hidden states twice
    T0 = max(len(recs[i]["prompt_ids"]) + len(recs[i]["response_ids"]) for i in batches[0])
    V = model.get_output_embeddings().weight.shape[0]
    L1, H = len(decoder_layers(model)) + 1, hidden_size(model)
    elt = torch.finfo(ctx.dtype).bits // 8
    logits_b, hidden_b = len(batches[0]) * T0 * V * elt, len(batches[0]) * T0 * L1 * H * elt
    common.update(largest_batch_logits_bytes=logits_b, largest_batch_hidden_states_bytes=hidden_b)
    mnote = (f"Peak memory of one call (a batch of {BATCH} answers for the project, one answer for the script). " +
             ("Goal met: forward hooks reduce each block's output into the running means as it is produced (no "
              "`output_hidden_states`, which kept all L+1 layers of the batch: 3.03x before), only one logit row per "
              "sequence is computed (`logits_to_keep=1`), and `max_tokens` (256 padded tokens on a CPU) caps one "
              "forward pass, which bounds the block's own intermediate activations (the MLP's grow with every token of the "
              f"batch: 1.66x with the hooks alone on {BATCH} uncapped rows). The script holds, for one answer, every "
              f"layer's hidden states and [T, vocab] logits ({hidden_b / BATCH / 2 ** 20:.1f} + {logits_b / BATCH / 2 ** 20:.1f} MiB "
              "for the longest answer)." if rm <= 1 else
              "Not met: what remains is the block's own intermediate activations for every token of a forward pass; "
              "lower `max_tokens` (256 on a CPU) bounds them."))
    return [vector_stage_row(ctx, model, tok)] + [
        row("extraction", f"activation_means_{N}_time", "s", t["project"], t["baseline"], "<= 1.0", rt <= 1.0, tnote,
            project_floor_x=t["project"] / floor, baseline_floor_x=t["baseline"] / floor, **common),
        row("extraction", f"activation_means_{N}_peak_memory", "bytes", peak["project"], peak["baseline"], "<= 1.0", rm <= 1.0,
            mnote, largest_batch_logits_bytes=logits_b, largest_batch_hidden_states_bytes=hidden_b),
    ]


def vector_stage_row(ctx: Ctx, model, tok) -> dict:
    "The study's `vector` stage: `measure_vector` (two reads of the answers) against extract + heldout_separation + Monitor.calibrate (four)."
    from persona_vectors.steering import measure_vector, heldout_separation, Monitor
    from persona_vectors.extraction import extract
    trait = load_trait(DEMO_TRAIT)
    prompts = contrastive_prompts(tok, trait)
    N = 40 if ctx.quick else 120  # the demo's extraction: 12 questions x 5 pairs x 2 sides
    texts = answer_texts(trait, N, 6, 30, seed=1)
    recs = [dict(question=p["question"], side=p["side"], prompt_ids=list(p["prompt_ids"]), response_ids=tok(x, add_special_tokens=False)["input_ids"])
            for p, x in zip(prompts[:N], texts)]
    layer = len(decoder_layers(model)) // 2
    def four():
        v = extract(model, recs, batch_size=BATCH, progress=False)
        sep = heldout_separation(model, tok, recs, batch_size=BATCH)
        cal = Monitor(model, tok, v["response_avg"], layer, batch_size=BATCH).calibrate(
            [(r["question"], r["response_ids"]) for r in recs if r["side"] == "pos"], [(r["question"], r["response_ids"]) for r in recs if r["side"] == "neg"])
        return v, sep, cal
    def two():
        got = measure_vector(model, tok, recs, monitor_layer=layer, batch_size=BATCH, progress=False)
        return got["vectors"], got["separation"], got["monitor"].calibration()
    res = interleaved({"project": two, "baseline": four}, repeats=2 if ctx.quick else 1, device=ctx.device, warmup=1 if ctx.quick else 0)
    (v2, s2, c2), (v4, s4, c4) = res["project"]["result"], res["baseline"]["result"]
    assert all(torch.equal(v2[k], v4[k]) for k in v4), "measure_vector's vectors differ from extract's"
    d_sep = max(abs(s2[l] - s4[l]) for l in s4)
    d_cal = max(abs(c2[k] - c4[k]) / abs(c4[k]) for k in ("pos_mean", "neg_mean"))
    assert d_sep <= 1e-6 and d_cal <= 1e-4, (d_sep, d_cal)
    r = res["project"]["median"] / res["baseline"]["median"]
    note = (f"{ctx.model_name()}; {N} contrastive answers (the demo trait's prompts, {N // 2} per side), batches of {BATCH}: what the "
            "study's `vector` stage computes (the vectors, the held-out separation per layer, the monitor's calibration). "
            "Project: `measure_vector`, which reads every answer twice (as written, and neutrally at every layer); baseline: "
            "`extract`, `heldout_separation` and `Monitor.calibrate` one after the other, which read them four times (3N answers). "
            f"The same vectors (bitwise), separation within {d_sep:.1g}, calibration within {d_cal:.1g} (relative). "
            + ("Goal met: a third fewer answers read." if r <= 0.8 else "Not met on this run."))
    return row("extraction", f"vector_stage_{N}_time", "s", res["project"]["median"], res["baseline"]["median"], "<= 0.8", r <= 0.8, note,
               answers=N, separation_max_abs_diff=d_sep, calibration_max_rel_diff=d_cal)
