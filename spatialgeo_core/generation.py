"""Token-by-token decoding with a KV cache: greedy by default, temperature / top-p sampling on request.

A plain loop rather than `generate()`, so that a cached image prefix can be continued, partial text can be
streamed, a caller can cancel between tokens, and every step's logits can be kept for conversion checks.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from spatialgeo_core.types import GenerationOptions


@dataclass
class Decoded:
    ids: list[int]
    stopped: str                                   # "eos" | "max_new_tokens" | "cancelled"
    first_token_ms: float
    decode_ms: float
    step_logits: list[torch.Tensor] = field(default_factory=list)   # each [vocab] float32


def pick_token(logits: torch.Tensor, options: GenerationOptions,
               generator: torch.Generator | None) -> int:
    """logits [vocab] -> next id (argmax when temperature is 0)."""
    if options.temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / options.temperature, dim=-1)
    if options.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < options.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
        probs = probs / probs.sum()
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.inference_mode()
def decode(llm, first_logits: torch.Tensor, cache, options: GenerationOptions, eos_id: int,
           start_time: float, on_token: Callable[[list[int]], None] | None = None,
           should_stop: Callable[[], bool] | None = None, keep_logits: bool = False) -> Decoded:
    """Continue from the logits of the last prompt position ([vocab]) and the prompt's cache.

    The first token's latency is measured from `start_time` (the start of the whole answer).
    """
    gen = torch.Generator().manual_seed(options.seed) if options.temperature > 0 else None
    out = Decoded(ids=[], stopped="max_new_tokens", first_token_ms=0.0, decode_ms=0.0)
    logits = first_logits
    t_first = time.perf_counter()
    device = first_logits.device
    for step in range(options.max_new_tokens):
        if should_stop is not None and should_stop():
            out.stopped = "cancelled"
            break
        if keep_logits:
            out.step_logits.append(logits.float().cpu())
        nxt = pick_token(logits if gen is None else logits.float().cpu(), options, gen)
        if step == 0:
            t_first = time.perf_counter()
            out.first_token_ms = (t_first - start_time) * 1000
        out.ids.append(nxt)
        if on_token is not None:
            on_token(out.ids)
        if nxt == eos_id:
            out.stopped = "eos"
            break
        if step + 1 == options.max_new_tokens:
            break
        step_out = llm(input_ids=torch.tensor([[nxt]], device=device), past_key_values=cache,
                       use_cache=True)
        logits = step_out.logits[0, -1]
    out.decode_ms = (time.perf_counter() - t_first) * 1000
    return out
