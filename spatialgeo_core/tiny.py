"""Tiny checkpoints that the project builds itself (no downloads): a SentencePiece tokenizer in the
LLaMA layout (unk 0, bos 1, eos 2, byte fallback, dummy prefix, digits split) trained on a small
built-in corpus, and randomly initialised tiny SpatialGeo models saved in our format.

Answers of a randomly initialised model mean nothing; they exercise the whole code path.
"""
from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm
import torch

from spatialgeo_core.checkpoint.ours import save_ours
from spatialgeo_core.config import SpatialGeoConfig, tiny
from spatialgeo_core.conversation import TEMPLATES
from spatialgeo_core.model import SpatialGeoForCausalLM

_WORDS = (
    "how far is the chair from the table region left right above below behind in front of bigger "
    "smaller taller shorter wider thinner yes no the distance between meters centimeters inches "
    "feet what is the height width of it is about o'clock direction which one is closer to the "
    "camera a red blue green yellow cube sphere cylinder cone box on the floor ground plane "
    "vertical horizontal object robot sees image picture answer question"
).split()


def _corpus() -> list[str]:
    lines = [t.system for t in TEMPLATES.values() if t.system]
    for i, w in enumerate(_WORDS):
        nxt = _WORDS[(i * 7 + 3) % len(_WORDS)]
        lines.append(f"USER: <image> Is Region [{i % 4}] {w} {nxt} than Region [{(i + 1) % 4}]? "
                     f"ASSISTANT: It is {i % 10}.{(i * 3) % 10} meters, {w} {nxt}.")
        lines.append(f"{w.capitalize()} {nxt}: {i * 13 % 97} cm; {i % 12 + 1} o'clock.")
    return lines


def build_tokenizer(directory: str | Path, vocab_size: int = 512, legacy: bool = False,
                    corpus: Iterable[str] | None = None) -> Path:
    """Train a LLaMA-layout SentencePiece model into directory/tokenizer.model, on `corpus`
    (default: the small built-in corpus of the tiny test models)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus() if corpus is None else list(corpus)),
        model_writer=buf, vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, split_digits=True, unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, add_dummy_prefix=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", allow_whitespace_only_pieces=True,
        character_coverage=1.0, num_threads=1, minloglevel=2,
        # as in LLaMA's vocabulary, "USER" is one piece and "▁USER" two, which LLaVA's label
        # arithmetic for non-legacy tokenizers relies on
        user_defined_symbols=["USER"])
    (d / "tokenizer.model").write_bytes(buf.getvalue())
    (d / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "legacy": legacy, "add_bos_token": True,
         "add_eos_token": False, "model_max_length": 2048, "padding_side": "right",
         "pad_token": "<unk>"}, indent=2))
    return d / "tokenizer.model"


def random_model(cfg: SpatialGeoConfig, seed: int = 0) -> SpatialGeoForCausalLM:
    """A randomly initialised model; the positional embedding of the geometry tower and the
    adapters are scaled up a little so that tiny random answers vary with the image."""
    torch.manual_seed(seed)
    return SpatialGeoForCausalLM(cfg).eval()


def build_tiny_checkpoint(directory: str | Path, geometry: bool = True, seed: int = 0,
                          legacy: bool = False, **tiny_kwargs) -> Path:
    """Tokenizer + tiny random model, saved in our format; returns the directory."""
    d = Path(directory)
    tok_dir = d.parent / f".{d.name}.tokenizer"
    build_tokenizer(tok_dir, legacy=legacy)
    vocab = spm.SentencePieceProcessor(model_file=str(tok_dir / "tokenizer.model")).vocab_size()
    cfg = tiny(geometry=geometry, vocab_size=vocab, **tiny_kwargs)
    model = random_model(cfg, seed)
    save_ours(d, cfg, model.state_dict(), tokenizer_dir=tok_dir)
    for f in tok_dir.iterdir():
        f.unlink()
    tok_dir.rmdir()
    return d
