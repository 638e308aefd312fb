"""Token-by-token decoding with a KV cache: greedy by default, temperature / top-p sampling on
request.

A plain loop rather than `generate()`, so that a cached image prefix can be continued, partial text
can be streamed, a caller can cancel between tokens, and every step's logits can be kept for
conversion checks.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from spatialgeo_core.kv_cache import with_cache
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


def decode(llm, first_logits: torch.Tensor, cache, options: GenerationOptions, eos_id: int,
           start_time: float, on_token: Callable[[list[int]], None] | None = None,
           should_stop: Callable[[], bool] | None = None, keep_logits: bool = False,
           prompt_len: int | None = None) -> Decoded:
    """`decode_batch` for one prompt: first_logits [vocab]; `prompt_len` gives every step its
    position explicitly (as a static cache needs: its length is its capacity)."""
    positions = None if prompt_len is None else torch.tensor([prompt_len],
                                                             device=first_logits.device)
    on_row = None if on_token is None else (lambda _, ids: on_token(ids))
    return decode_batch(llm, first_logits[None], cache, options, eos_id, start_time,
                        positions=positions, on_token=on_row, should_stop=should_stop,
                        keep_logits=keep_logits)[0]


@torch.inference_mode()
def decode_batch(llm, first_logits: torch.Tensor, cache, options: GenerationOptions, eos_id: int,
                 start_time: float, positions: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None,
                 on_token: Callable[[int, list[int]], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 keep_logits: bool = False) -> list[Decoded]:
    """Continue B prompts from the logits of their last positions (first_logits [B, vocab]) and
    their KV cache, each row as it would be answered alone.

    `llm` is the causal LM or its (compiled) forward. positions [B]: the position of each row's
    first new token (its prompt length), given to every step explicitly; None lets the cache
    count them (rows of one length). attention_mask [B, K]: 1 for the K cached slots a row may
    attend to, 0 for its padding; None when no row is padded. A row that has ended is fed EOS
    until every row has (those outputs are dropped). Greedy rows pick with one argmax over the
    batch; sampled rows each use their own generator seeded with `options.seed`. EOS is masked
    out of the first `options.min_new_tokens` steps (the kept logits are the model's, unmasked).
    `on_token(row, ids so far)` follows each new token; `should_stop` is polled before each step.
    Latencies are measured from `start_time` (the start of the whole answer).
    """
    B = first_logits.shape[0]
    device = first_logits.device
    gens = [torch.Generator().manual_seed(options.seed) if options.temperature > 0 else None
            for _ in range(B)]
    outs = [Decoded(ids=[], stopped="max_new_tokens", first_token_ms=0.0, decode_ms=0.0)
            for _ in range(B)]
    live = set(range(B))
    logits = first_logits
    t_first = time.perf_counter()
    for step in range(options.max_new_tokens):
        if should_stop is not None and should_stop():
            for b in live:
                outs[b].stopped = "cancelled"
            break
        if keep_logits:
            rows = logits.float().cpu()                                      # [B, vocab]
            for b in live:
                outs[b].step_logits.append(rows[b])
        if step < options.min_new_tokens:
            logits = logits.clone()
            logits[:, eos_id] = float("-inf")             # EOS may not end an answer yet
        if options.temperature == 0:
            picked = logits.argmax(dim=-1).tolist()                          # [B]
        else:
            picked = [pick_token(logits[b].float().cpu(), options, gens[b])
                      if b in live else eos_id for b in range(B)]
        now = time.perf_counter()
        if step == 0:
            t_first = now
        for b in sorted(live):
            if step == 0:
                outs[b].first_token_ms = (now - start_time) * 1000
            outs[b].ids.append(picked[b])
            if on_token is not None:
                on_token(b, outs[b].ids)
            if picked[b] == eos_id:
                outs[b].stopped = "eos"
                outs[b].decode_ms = (now - t_first) * 1000
                live.discard(b)
        if not live or step + 1 == options.max_new_tokens:
            break
        nxt = torch.tensor([[p if b in live else eos_id] for b, p in enumerate(picked)],
                           device=device)                                   # [B, 1]
        extra = {}
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(B, 1)], dim=1)
            extra["attention_mask"] = attention_mask                        # [B, K + step + 1]
        if positions is not None:
            extra["position_ids"] = (positions + step)[:, None]             # [B, 1]
        step_out = llm(input_ids=nxt, use_cache=True, **with_cache(cache), **extra)
        logits = step_out.logits[:, -1]                                      # [B, vocab]
    end = (time.perf_counter() - t_first) * 1000
    for b in live:
        outs[b].decode_ms = end
    return outs
