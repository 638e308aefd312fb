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
           should_stop: Callable[[], bool] | None = None, keep_logits: bool = False,
           prompt_len: int | None = None) -> Decoded:
    """Continue from the logits of the last prompt position ([vocab]) and the prompt's cache.

    `llm` is the causal LM or its (compiled) forward. The first token's latency is measured from
    `start_time` (the start of the whole answer). EOS is masked out of the first
    `options.min_new_tokens` steps (the kept logits are the model's, unmasked). With `prompt_len`
    every step is given its position explicitly, as a static cache needs (its length is its
    capacity).
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
        if step < options.min_new_tokens:
            logits = logits.clone()
            logits[eos_id] = float("-inf")            # EOS may not end the answer yet
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
        extra = {} if prompt_len is None else {
            "position_ids": torch.tensor([[prompt_len + step]], device=device)}
        step_out = llm(input_ids=torch.tensor([[nxt]], device=device), past_key_values=cache,
                       use_cache=True, **extra)
        logits = step_out.logits[0, -1]
    out.decode_ms = (time.perf_counter() - t_first) * 1000
    return out


@torch.inference_mode()
def decode_batch(llm, first_logits: torch.Tensor, cache, options: GenerationOptions, eos_id: int,
                 start_time: float, positions: torch.Tensor, attention_mask: torch.Tensor,
                 should_stop: Callable[[], bool] | None = None,
                 keep_logits: bool = False) -> list[Decoded]:
    """`decode` for B prompts at once, each row as `decode` would answer it alone.

    first_logits [B, vocab]; positions [B]: the position of each row's first new token (its prompt
    length); attention_mask [B, K]: 1 for the K cached slots a row may attend to, 0 for its
    padding. A row that has ended is fed EOS until every row has (those outputs are dropped).
    Greedy rows pick with one argmax over the batch; sampled rows each use their own generator
    seeded as `decode` does.
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
            if picked[b] == eos_id:
                outs[b].stopped = "eos"
                outs[b].decode_ms = (now - t_first) * 1000
                live.discard(b)
        if not live or step + 1 == options.max_new_tokens:
            break
        nxt = torch.tensor([[p if b in live else eos_id] for b, p in enumerate(picked)],
                           device=device)                                   # [B, 1]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(B, 1)], dim=1)
        step_out = llm(input_ids=nxt, attention_mask=attention_mask,
                       position_ids=(positions + step)[:, None], past_key_values=cache,
                       use_cache=True)
        logits = step_out.logits[:, -1]                                      # [B, vocab]
    end = (time.perf_counter() - t_first) * 1000
    for b in live:
        outs[b].decode_ms = end
    return outs
