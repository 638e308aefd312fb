"""The LLaMA SentencePiece tokenizer, exactly as LLaVA-1.5's slow `LlamaTokenizer` used it.

Built on the `sentencepiece` library and the model directory's `tokenizer.model`, not on whatever
tokenizer class a given transformers version maps the config to (reference §5.6: today's
AutoTokenizer drops the dummy prefix). Two behaviours of transformers' slow LlamaTokenizer are
reproduced, chosen by the `legacy` flag of `tokenizer_config.json` (absent = legacy, as
transformers 4.37 defaulted):

- legacy: text is split at the special tokens `<s>`, `</s>`, `<unk>`; every other chunk is encoded
  by SentencePiece with its dummy prefix.
- non-legacy: a `▁` is put in front of the whole text, the dummy prefix is switched off, and a
  chunk that starts with `▁`/space is encoded after an `<unk>` guard that is then removed; chunks
  that follow a special token get no prefix.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import sentencepiece as spm

from spatialgeo_core.errors import CheckpointError

SPIECE_UNDERLINE = "\u2581"
SPECIAL_TOKENS = ("<s>", "</s>", "<unk>")
_SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")")


class LlamaTokenizer:
    def __init__(self, model_file: str | Path, legacy: bool = True):
        model_file = Path(model_file)
        try:
            proto = model_file.read_bytes()
            self.sp = spm.SentencePieceProcessor(model_proto=proto)
        except (OSError, RuntimeError) as e:
            raise CheckpointError(f"cannot load SentencePiece model {model_file}: {e}") from e
        self.model_file = model_file
        self.legacy = legacy
        self.bos_id = self.sp.bos_id()
        self.eos_id = self.sp.eos_id()
        self.unk_id = self.sp.unk_id()
        self.pad_id = self.unk_id          # LLaVA pads with unk (id 0)
        self._special_ids = {t: self.sp.piece_to_id(t) for t in SPECIAL_TOKENS}
        if not legacy:
            self._sp_noprefix = _without_dummy_prefix(proto)
            self._unk_len = len(self._sp_noprefix.encode("<unk>"))

    @classmethod
    def from_dir(cls, directory: str | Path) -> LlamaTokenizer:
        d = Path(directory)
        legacy = True
        cfg_file = d / "tokenizer_config.json"
        if cfg_file.is_file():
            try:
                flag = json.loads(cfg_file.read_text()).get("legacy")
            except json.JSONDecodeError as e:
                raise CheckpointError(f"{cfg_file} is not valid JSON: {e}") from e
            legacy = True if flag is None else bool(flag)
        if not (d / "tokenizer.model").is_file():
            raise CheckpointError(f"no tokenizer.model in {d}")
        return cls(d / "tokenizer.model", legacy=legacy)

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        ids = [self.bos_id] if add_bos else []
        if not text:
            return ids
        if self.legacy:
            for chunk in _SPECIAL_SPLIT.split(text):
                if chunk in self._special_ids:
                    ids.append(self._special_ids[chunk])
                elif chunk:
                    ids.extend(self.sp.encode(chunk))
            return ids
        pieces: list[int] = []
        text = SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " ")
        for chunk in _SPECIAL_SPLIT.split(text):
            if chunk in self._special_ids:
                pieces.append(self._special_ids[chunk])
            elif chunk:
                pieces.extend(self._encode_noprefix(chunk))
        underline = self.sp.piece_to_id(SPIECE_UNDERLINE)
        if len(pieces) > 1 and pieces[0] == underline and pieces[1] in self._special_ids.values():
            pieces = pieces[1:]
        return ids + pieces

    def _encode_noprefix(self, chunk: str) -> list[int]:
        if not chunk.startswith((SPIECE_UNDERLINE, " ")):
            return self._sp_noprefix.encode(chunk)
        ids = self._sp_noprefix.encode("<unk>" + chunk)
        return ids[self._unk_len:] if len(ids) >= self._unk_len else ids

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        if skip_special:
            specials = set(self._special_ids.values())
            ids = [i for i in ids if i not in specials]
        return self.sp.decode(list(ids))

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(i)


def _without_dummy_prefix(proto: bytes) -> spm.SentencePieceProcessor:
    from sentencepiece import sentencepiece_model_pb2 as pb2

    m = pb2.ModelProto()
    m.ParseFromString(proto)
    m.normalizer_spec.add_dummy_prefix = False
    return spm.SentencePieceProcessor(model_proto=m.SerializeToString())
