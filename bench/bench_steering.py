"""Steering overhead: tokens/s of steered generation (`steer` + `generate`) vs the same generation without a hook.

Both arms call `persona_vectors.models.generate` on the same batch of chat prompts with the same sampling
(temperature 1, top-p 0.95, seed fixed); the end tokens are suppressed until `max_new_tokens`
(`min_new_tokens = max_new_tokens`), so every sequence of both arms is exactly `max_new_tokens` long and the two arms
do the same matmuls. The steered arm adds `alpha * v[layer]` at the response positions (the study's setting: the
last prompt position in the prefill, every decode step) through the project's prepend forward hook.
"""
from __future__ import annotations
import statistics
from dataclasses import dataclass

import torch

from persona_vectors.models import Sampling, generate, chat_prompt_ids, decoder_layers, hidden_size
from persona_vectors.steering import Steering, steer
from persona_vectors.artifacts import load_trait, DEMO_TRAIT
from .common import Ctx, interleaved, matmul_params, row

GOAL = 0.97


@dataclass(frozen=True)
class FixedLength(Sampling):
    "The study's sampling with the end tokens suppressed until `max_new_tokens`: every response has the same length."
    def generation_config(self, pad_token_id, eos_token_id):
        cfg = super().generation_config(pad_token_id, eos_token_id)
        cfg.min_new_tokens = self.max_new_tokens
        return cfg


def run(ctx: Ctx) -> list[dict]:
    model, tok = ctx.model()
    B, T, repeats = (8, 16, 5) if ctx.quick else (8, 32, 8)  # 8 interleaved repeats: a shared CPU drifts by tens of %
    questions = load_trait(DEMO_TRAIT).eval_questions[:B]
    prompts = [chat_prompt_ids(tok, q) for q in questions]
    L = len(decoder_layers(model))
    g = torch.Generator().manual_seed(0)
    vec = torch.randn(L + 1, hidden_size(model), generator=g)
    vec = vec / vec.norm(dim=-1, keepdim=True) * 4.0
    s = Steering(vec, layer=L // 2, alpha=2.0, positions="response")
    sampling = FixedLength(temperature=1.0, top_p=0.95, max_new_tokens=T, seed=0)

    def steered(): return generate(model, tok, prompts, sampling=sampling, batch_size=B, context=steer(model, s), progress=False)
    def plain(): return generate(model, tok, prompts, sampling=sampling, batch_size=B, progress=False)

    res = interleaved(dict(project=steered, baseline=plain), repeats, ctx.device)
    for arm in ("project", "baseline"):
        lens = {len(x.response_ids) for x in res[arm]["result"]}
        assert lens == {T}, f"{arm}: response lengths {lens}, expected all {T}"
    # the hook must change the answers (otherwise the comparison would not measure steering)
    assert [x.response_ids for x in res["project"]["result"]] != [x.response_ids for x in res["baseline"]["result"]]
    n_tok = B * T
    tps = {a: n_tok / res[a]["median"] for a in res}
    ratio = tps["project"] / tps["baseline"]
    # floor: one forward token per prompt token (prefill) and per generated token
    fwd_tokens = sum(len(p) for p in prompts) + B * T
    floor = ctx.floor_s(2 * matmul_params(model) * fwd_tokens)
    met = ratio >= GOAL
    note = (f"{ctx.model_name()}; batch {B}, {T} new tokens each (end token suppressed, so both arms generate exactly "
            f"{B}x{T} tokens), layer {L // 2}, alpha 2, positions 'response'; median of {repeats} interleaved repeats. ")
    tp, tb = res["project"]["times"], res["baseline"]["times"]
    overlap = min(tp) <= max(tb) and min(tb) <= max(tp)
    spread = (max(tb) - min(tb)) / statistics.median(tb)
    if met:
        note += ("Goal met: the hook is one vector add per decode step on one block's output plus a forward pre-hook "
                 "that reads the cache length; its cost is lost in the matmuls.")
    else:
        note += (f"Below the goal on this run. The repeats {'overlap' if overlap else 'do not overlap'} (baseline spread "
                 f"{spread:.0%} of its median), so {'the gap is within this shared machine' + chr(39) + 's noise' if overlap else 'the hook has a measurable cost'}. "
                 "Closing it: rerun on an idle machine; if the gap persists, skip the pre-hook (cache-length read) for "
                 "positions='all' and fold the add into the block's MLP bias (the bake) for generation at all positions.")
    return [row("steering", "steered_generation_tokens_per_s", "tokens/s", tps["project"], tps["baseline"],
                f">= {GOAL}", met, note, higher_is_better=True,
                project_floor_x=res["project"]["median"] / floor, baseline_floor_x=res["baseline"]["median"] / floor,
                project_times=res["project"]["times"], baseline_times=res["baseline"]["times"], floor_s=floor,
                tokens_generated=n_tok, forward_tokens=fwd_tokens)]
