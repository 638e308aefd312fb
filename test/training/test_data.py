"""LLaVA-format records: labels through the serving processor, skipped records, the batch plan."""
import dataclasses
import json

import pytest
import torch

from spatialgeo_core.config import SpatialGeoConfig
from spatialgeo_core.conversation import get_template
from spatialgeo_core.model import IGNORE_INDEX
from spatialgeo_core.processor import Processor, preprocess_image
from spatialgeo_core.tokenizer import LlamaTokenizer
from spatialgeo_core.training.data import (
    BatchPlan,
    Collator,
    DatasetError,
    LlavaDataset,
    Sample,
    SkipLog,
    Skipped,
)


@pytest.fixture(scope="module")
def processor(tiny_dir):
    cfg = SpatialGeoConfig.load(tiny_dir)
    return Processor(cfg, LlamaTokenizer.from_dir(tiny_dir))


def _dataset(tiny_data, processor, name="train.json", template="vicuna_v1"):
    return LlavaDataset(tiny_data / name, tiny_data, processor, get_template(template))


def test_bad_records_are_skipped_with_their_reason(tiny_data, processor):
    ds = _dataset(tiny_data, processor)
    items = [ds[i] for i in range(len(ds))]
    skipped = {s.id: s.reason for s in items if isinstance(s, Skipped)}
    assert skipped == {"bad-missing-image": "missing_image", "bad-corrupt-image": "corrupt_image",
                       "bad-malformed": "malformed", "bad-truncated": "no_supervised_tokens"}
    samples = [s for s in items if isinstance(s, Sample)]
    assert len(samples) == 40
    assert sum(s.pixel_values is None for s in samples) == 8                 # text-only
    log = SkipLog()
    for s in items:
        if isinstance(s, Skipped):
            log.add(s)
    assert log.total == 4 and "skipped 4 of 44 records" in log.summary(len(ds))


def test_plain_template_skips_text_only_records(tiny_data, processor):
    ds = _dataset(tiny_data, processor, "train.json", "plain")
    text = [i for i in range(len(ds)) if ds.record_id(i).startswith("text-")]
    assert all(isinstance(ds[i], Skipped) and ds[i].reason == "malformed" for i in text)


def test_labels_and_pixels_are_the_processors(tiny_data, processor):
    ds = _dataset(tiny_data, processor)
    rec = json.loads((tiny_data / "train.json").read_text())[3]                # two rounds
    s = ds[3]
    enc = processor.training_example(rec["conversations"], get_template("vicuna_v1"), True)
    assert s.input_ids == enc.input_ids and s.labels == enc.labels
    from PIL import Image
    with Image.open(tiny_data / rec["image"]) as img:
        assert torch.equal(s.pixel_values, preprocess_image(img, processor.cfg))
    supervised = [t for t, lab in zip(s.input_ids, s.labels, strict=True) if lab != IGNORE_INDEX]
    text = processor.tokenizer.decode(supervised)
    assert text == "a yellow cube on the floor it is yellow"              # the answers only


def test_square_and_pad_differ(tiny_data, processor):
    sq = Processor(dataclasses.replace(processor.cfg, image_aspect_ratio="square"),
                   processor.tokenizer)
    a = _dataset(tiny_data, processor)[0].pixel_values
    b = LlavaDataset(tiny_data / "train.json", tiny_data, sq, get_template("vicuna_v1"))[0]
    assert not torch.equal(a, b.pixel_values)


def test_collator_pads_and_gives_text_only_batches_a_dummy_image(tiny_data, processor):
    ds = _dataset(tiny_data, processor)
    col = Collator(pad_id=0, image_size=56, needs_dummy_image=True)
    text = [i for i in range(len(ds)) if ds.record_id(i).startswith("text-")]
    b = col([ds[text[0]], ds[text[1]]])
    assert b.pixel_values.shape == (1, 3, 56, 56) and b.image_used.tolist() == [False]
    assert b.num_samples == 2 and b.num_tokens == int((b.labels[:, 1:] != IGNORE_INDEX).sum())
    mixed = col([ds[0], ds[text[0]], Skipped(9, "x", "missing_image", "")])
    assert mixed.image_used.tolist() == [True] and len(mixed.skipped) == 1
    assert mixed.attention_mask.sum(1).tolist() == [len(ds[0].input_ids),
                                                    len(ds[text[0]].input_ids)]
    null = col([Skipped(9, "x", "missing_image", "")])
    assert null.num_samples == 0 and null.num_tokens == 0 and null.input_ids.shape == (1, 1)


def test_dataset_errors_are_specific(tmp_path, processor):
    (tmp_path / "d.json").write_text('{"not": "a list"}')
    with pytest.raises(DatasetError, match="expected a JSON list"):
        LlavaDataset(tmp_path / "d.json", tmp_path, processor, get_template("plain"))
    with pytest.raises(DatasetError, match="not found"):
        LlavaDataset(tmp_path / "absent.json", tmp_path, processor, get_template("plain"))


def _plan(group, n=45, G=8, seed=3):
    has_image = [i % 5 != 0 for i in range(n)]
    return BatchPlan(has_image, [i % 7 for i in range(n)], G, seed, group)


@pytest.mark.parametrize("group", [False, True])
def test_plan_covers_each_record_once_per_epoch(group):
    plan = _plan(group)
    assert plan.steps_per_epoch == 6
    for epoch in (0, 1):
        flat = [i for b in plan.epoch_batches(epoch) for i in b]
        assert sorted(flat) == list(range(45))
    assert plan.epoch_batches(0) != plan.epoch_batches(1)
    assert _plan(group).epoch_batches(1) == plan.epoch_batches(1)          # from (seed, epoch)


def test_modality_grouped_batches_hold_one_modality_but_the_leftovers():
    plan = _plan(True)
    batches = plan.epoch_batches(0)
    pure = [len({plan.has_image[i] for i in b}) == 1 for b in batches]
    assert all(pure[:-2])
    for b in batches:
        assert [plan.lengths[i] for i in b] == sorted((plan.lengths[i] for i in b), reverse=True)


def test_micro_batches_do_not_depend_on_the_number_of_ranks():
    plan = _plan(True)
    for step in range(8):
        one = plan.micro_batches(step, 0, 1, 2, 4)
        two = [plan.micro_batches(step, r, 2, 2, 2) for r in range(2)]
        # micro-batch j = a * world + rank: the same pieces of the same global batch
        assert [two[j % 2][j // 2] for j in range(4)] == one
        assert [i for m in one for i in m] == plan.global_batch(step)
