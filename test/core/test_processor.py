"""Tokenization around the image (reference §2.1) and image preprocessing (§6.2)."""
import numpy as np
import pytest
import sentencepiece as spm
import torch
from PIL import Image

from spatialgeo_core.config import tiny
from spatialgeo_core.conversation import get_template
from spatialgeo_core.errors import InvalidImageError
from spatialgeo_core.model import IGNORE_INDEX
from spatialgeo_core.processor import Processor, expand_to_square, preprocess_image
from spatialgeo_core.tiny import build_tokenizer
from spatialgeo_core.tokenizer import LlamaTokenizer


@pytest.fixture(scope="module", params=[True, False], ids=["legacy", "non-legacy"])
def tok(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    build_tokenizer(d, legacy=request.param)
    return LlamaTokenizer.from_dir(d)


def test_chunks_match_sentencepiece_itself(tok):
    sp = spm.SentencePieceProcessor(model_file=str(tok.model_file))
    proc = Processor(tiny(vocab_size=tok.vocab_size), tok)
    prompt = get_template("llava_v1").prompt("How far is the chair?")
    before, after = prompt.split("<image>")
    ids = proc.tokenize(prompt)
    V = proc.cfg.num_visual_tokens
    s, e = proc.image_span(ids)
    assert e - s == V and ids.count(proc.cfg.image_token_id) == V
    assert ids[:s] == [sp.bos_id()] + sp.encode(before)
    assert ids[e:] == sp.encode(after)
    # the chunk before the image ends in a lone "▁"; the one after starts with "▁" then newline
    assert sp.id_to_piece(ids[s - 1]) == "\u2581"
    assert sp.id_to_piece(ids[e]) == "\u2581" and sp.id_to_piece(ids[e + 1]) in ("\n", "<0x0A>")
    # tokenizing the whole prompt in one piece would give other ids
    whole = sp.encode(prompt.replace("<image>", ""))
    assert whole != ids[1:s] + ids[e:]


def test_legacy_flag_changes_text_after_special_token(tmp_path):
    build_tokenizer(tmp_path / "a", legacy=True)
    build_tokenizer(tmp_path / "b", legacy=False)
    a, b = LlamaTokenizer.from_dir(tmp_path / "a"), LlamaTokenizer.from_dir(tmp_path / "b")
    assert a.legacy and not b.legacy
    text = "It is 2 meters.</s>USER: next"
    sp = a.sp
    ia, ib = a.encode(text), b.encode(text)
    eos = ia.index(2)
    assert ia[eos + 1:] == sp.encode("USER: next")                     # dummy prefix again
    assert sp.id_to_piece(ib[ib.index(2) + 1]) != "\u2581USER"          # no prefix after </s>
    assert ia[:eos] == ib[:ib.index(2)]


def test_v1_labels_supervise_only_answers(tok):
    cfg = tiny(vocab_size=tok.vocab_size)
    proc = Processor(cfg, tok)
    conv = [{"from": "human", "value": "<image>\nHow far is Region [0]?"},
            {"from": "gpt", "value": "About 2 meters."},
            {"from": "human", "value": "Is it left?"}, {"from": "gpt", "value": "Yes."}]
    enc = proc.training_example(conv, get_template("vicuna_v1"), has_image=True)
    assert enc is not None and enc.num_images == 1
    sup = [t for t, lab in zip(enc.input_ids, enc.labels, strict=True) if lab != IGNORE_INDEX]
    text = tok.decode(sup)
    assert "About 2 meters." in text and "Yes." in text
    assert "How far" not in text and "USER" not in text
    assert sup.count(tok.eos_id) == 2                                  # each answer's </s>


def test_plain_template_supervises_caption(tok):
    proc = Processor(tiny(vocab_size=tok.vocab_size), tok)
    conv = [{"from": "human", "value": "<image>\nDescribe."},
            {"from": "gpt", "value": "A red cube"}]
    enc = proc.training_example(conv, get_template("plain"), has_image=True)
    sup = [t for t, lab in zip(enc.input_ids, enc.labels, strict=True) if lab != IGNORE_INDEX]
    assert tok.decode(sup).strip() == "A red cube"
    assert enc.labels[: 1 + proc.cfg.num_visual_tokens] == [IGNORE_INDEX] * (
        1 + proc.cfg.num_visual_tokens)


def test_truncation_that_leaves_nothing_is_none(tok):
    import dataclasses
    cfg = dataclasses.replace(tiny(vocab_size=tok.vocab_size), max_length=40)
    proc = Processor(cfg, tok)
    conv = [{"from": "human", "value": "<image>\n" + "very long question " * 5},
            {"from": "gpt", "value": "answer"}]
    assert proc.training_example(conv, get_template("vicuna_v1"), has_image=True) is None
    bad = [{"from": "gpt", "value": "x"}]
    assert proc.training_example(bad, get_template("vicuna_v1"), has_image=True) is None


def test_pad_colour_and_shape():
    cfg = tiny()
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    sq = expand_to_square(img, tuple(int(255 * m) for m in cfg.image_mean))
    assert sq.size == (40, 40) and sq.getpixel((0, 0)) == (122, 116, 104)
    assert sq.getpixel((20, 20)) == (255, 0, 0)
    x = preprocess_image(img, cfg)
    assert x.shape == (3, 56, 56) and x.dtype == torch.float32


@pytest.mark.parametrize("size", [(56, 56), (120, 80), (33, 97), (600, 400)])
def test_matches_transformers_clip_processor_pil_backend(size):
    import transformers
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    cfg = tiny()
    rng = np.random.default_rng(sum(size))
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    hf = cls(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56},
             image_mean=list(cfg.image_mean), image_std=list(cfg.image_std))
    padded = expand_to_square(Image.fromarray(arr), tuple(int(255 * m) for m in cfg.image_mean))
    ref = hf(images=padded, return_tensors="pt")["pixel_values"][0]
    ours = preprocess_image(arr, cfg)
    torch.testing.assert_close(ours, ref.float(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("bad", [np.zeros((0, 5, 3), np.uint8), np.zeros((4, 4, 2), np.uint8),
                                 np.zeros((4, 4, 3), np.float32), np.zeros(5, np.uint8)])
def test_malformed_images_are_clear_errors(bad):
    with pytest.raises(InvalidImageError):
        preprocess_image(bad, tiny())
