"""LLaVA-format training data: lazy records, per-template labels, skipped records, the batch plan.

    records (JSON list)  {"id", "image"?, "conversations": [{"from": "human"|"gpt", "value"}, ...],
                          "regions"?: [{"box"?: [x1, y1, x2, y2], "mask_rle"?: COCO RLE}, ...]}
      -> LlavaDataset[i]  Sample (ids, labels, pixels) | Skipped (reason)   (image read only here)
      -> Collator         Batch: right-padded [B, T] ids / labels / mask, [I, 3, S, S] pixels

Tokenization, image expansion and label masking go through `Processor.training_example`, the
processor the inference path uses. A record that cannot be used (missing or corrupt image,
malformed conversation, no supervised token after truncation) becomes a `Skipped` and never stops
the run. A record's `regions` (region k is "Region [k]") are drawn on its image as set-of-marks by
spatialgeo_core.regions, exactly as the pipeline draws them when serving.

The batch plan fixes, for every optimizer step, which records form its global batch; it depends
only on the seed, the epoch and the global batch size, never on the number of processes, so a run
on N ranks sees the same global batches as a run on one, and a resumed run continues at the exact
step.
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from spatialgeo_core.conversation import IMAGE_TOKEN, ChatTemplate
from spatialgeo_core.errors import InvalidImageError, InvalidRegionError, SpatialGeoError
from spatialgeo_core.image_msgs import open_image
from spatialgeo_core.model import IGNORE_INDEX
from spatialgeo_core.processor import Processor
from spatialgeo_core.regions import draw_regions
from spatialgeo_core.types import Region

log = logging.getLogger(__name__)

SKIP_REASONS = ("missing_image", "corrupt_image", "malformed", "no_supervised_tokens")


class DatasetError(SpatialGeoError):
    """The dataset as a whole cannot be read (not a single bad record: those are skipped)."""


@dataclass
class Sample:
    index: int
    id: str
    input_ids: list[int]
    labels: list[int]
    pixel_values: torch.Tensor | None          # [3, S, S] or None for text-only records


@dataclass
class Skipped:
    index: int
    id: str
    reason: str                                # one of SKIP_REASONS
    detail: str


def read_records(json_path: str | Path) -> list:
    p = Path(json_path)
    try:
        records = json.loads(p.read_text())
    except FileNotFoundError:
        raise DatasetError(f"dataset file not found: {p}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{p} is not valid JSON: {e}") from e
    if not isinstance(records, list):
        raise DatasetError(f"{p}: expected a JSON list of records, got {type(records).__name__}")
    if not records:
        raise DatasetError(f"{p} holds no records")
    return records


def _conversation_problem(rec: dict, has_image: bool) -> str | None:
    """Why the turns cannot be used, or None. Alternating human/gpt, human first, gpt last."""
    conv = rec.get("conversations")
    if not isinstance(conv, list) or not conv:
        return "no conversations list"
    for i, t in enumerate(conv):
        if not isinstance(t, dict) or not isinstance(t.get("value"), str):
            return f"turn {i} is not {{from, value}}"
        if t.get("from") != ("human", "gpt")[i % 2]:
            return f"turn {i} is from {t.get('from')!r}; turns must alternate human, gpt"
    if conv[-1]["from"] != "gpt":
        return "the last turn is not from gpt"
    if not has_image and any(IMAGE_TOKEN in t["value"] for t in conv):
        return f"{IMAGE_TOKEN} in a record without an image"
    return None


class LlavaDataset(torch.utils.data.Dataset):
    """Records of a LLaVA JSON file; images are opened only when a record is fetched."""

    def __init__(self, json_path: str | Path, image_folder: str | Path, processor: Processor,
                 template: ChatTemplate):
        self.records = read_records(json_path)
        self.image_folder = Path(image_folder) if image_folder else None
        self.processor = processor
        self.template = template

    def __len__(self) -> int:
        return len(self.records)

    def record_id(self, i: int) -> str:
        rec = self.records[i]
        return str(rec.get("id", i)) if isinstance(rec, dict) else str(i)

    def has_image(self, i: int) -> bool:
        rec = self.records[i]
        return isinstance(rec, dict) and rec.get("image") is not None

    def length(self, i: int) -> int:
        """Words in the conversation (LLaVA's modality length, without its sign)."""
        rec = self.records[i]
        conv = rec.get("conversations") if isinstance(rec, dict) else None
        if not isinstance(conv, list):
            return 0
        return sum(len(t["value"].split()) for t in conv
                   if isinstance(t, dict) and isinstance(t.get("value"), str))

    def __getitem__(self, i: int) -> Sample | Skipped:
        rec = self.records[i]
        rid = self.record_id(i)
        if not isinstance(rec, dict):
            return Skipped(i, rid, "malformed", "record is not a JSON object")
        image = rec.get("image")
        if image is not None and not isinstance(image, str):
            return Skipped(i, rid, "malformed", "`image` must be one path (multi-image records "
                                                "are not supported)")
        has_image = image is not None
        problem = _conversation_problem(rec, has_image)
        if problem:
            return Skipped(i, rid, "malformed", problem)
        enc = self.processor.training_example(rec["conversations"], self.template, has_image)
        if enc is None:
            return Skipped(i, rid, "no_supervised_tokens",
                           "no supervised token left after truncation to "
                           f"{self.processor.cfg.max_length} tokens, or a template mismatch")
        if enc.num_images != int(has_image):
            return Skipped(i, rid, "malformed", f"{enc.num_images} image(s) in the prompt for "
                                                f"{int(has_image)} image file(s) (template "
                                                f"{self.template.name!r})")
        regions = rec.get("regions") or []
        if not isinstance(regions, list) or not all(isinstance(r, dict) for r in regions):
            return Skipped(i, rid, "malformed", "`regions` must be a list of {box, mask_rle}")
        if regions and not has_image:
            return Skipped(i, rid, "malformed", "`regions` in a record without an image")
        pixels = None
        if has_image:
            pixels = self._load_image(image, regions)
            if isinstance(pixels, Skipped):
                pixels.index, pixels.id = i, rid
                return pixels
        return Sample(i, rid, enc.input_ids, enc.labels, pixels)

    def _load_image(self, rel: str, regions: list[dict]) -> torch.Tensor | Skipped:
        path = (self.image_folder / rel) if self.image_folder else Path(rel)
        if not path.is_file():
            return Skipped(-1, "", "missing_image", f"no file {path}")
        try:
            img = open_image(path, f"{path}")                       # [H, W, 3] uint8
            if regions:
                img = draw_regions(img, _decode_regions(regions, img.shape[1], img.shape[0]))
            return self.processor.image(img)
        except (InvalidRegionError, RegionDecodeError) as e:
            return Skipped(-1, "", "malformed", f"{path}: regions: {e}")
        except InvalidImageError as e:
            return Skipped(-1, "", "corrupt_image", str(e))


class RegionDecodeError(SpatialGeoError):
    """A record's `regions` entry cannot be turned into a Region."""


def _decode_regions(regions: list[dict], width: int, height: int) -> list[Region]:
    """LLaVA-record regions [{"box"?, "mask_rle"?}] -> Regions (masks need pycocotools)."""
    out = []
    for k, r in enumerate(regions):
        box, rle = r.get("box"), r.get("mask_rle")
        mask = None
        if rle is not None:
            from spatialgeo_core.eval.spatialrgpt.format import decode_rle
            try:
                mask = decode_rle(rle, height, width)
            except ValueError as e:
                raise RegionDecodeError(f"region {k}: {e}") from e
        if box is not None:
            if not (isinstance(box, list | tuple) and len(box) == 4
                    and all(isinstance(v, int | float) and not isinstance(v, bool) for v in box)):
                raise RegionDecodeError(f"region {k}: box must be [x1, y1, x2, y2], got {box!r}")
            box = tuple(float(v) for v in box)
        out.append(Region(box=box, mask=mask))
    return out


# ---- batches ----------------------------------------------------------------------------------
@dataclass
class Batch:
    """One micro-batch. `num_samples` 0 is a null batch (all its records skipped, or none left at
    the end of an epoch): one padding token and one unused dummy image, so that every rank still
    runs a forward and backward that touches every trainable parameter (with weight zero)."""

    input_ids: torch.Tensor                    # [B, T]
    labels: torch.Tensor                       # [B, T], IGNORE_INDEX where not supervised
    attention_mask: torch.Tensor               # [B, T]
    pixel_values: torch.Tensor | None          # [I, 3, S, S]
    image_used: torch.Tensor | None            # [I] bool; False = dummy image (weight zero)
    num_samples: int
    num_tokens: int                            # supervised next-token targets
    skipped: list[Skipped] = field(default_factory=list)

    def _map(self, fn) -> Batch:
        def f(t):
            return None if t is None else fn(t)
        return Batch(f(self.input_ids), f(self.labels), f(self.attention_mask),
                     f(self.pixel_values), f(self.image_used), self.num_samples,
                     self.num_tokens, self.skipped)

    def to(self, device: torch.device) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=True))

    def pin_memory(self) -> Batch:                # called by DataLoader(pin_memory=True)
        return self._map(lambda t: t.pin_memory())


class Collator:
    """Right-pads a list of Sample | Skipped into a Batch (picklable, for DataLoader workers)."""

    def __init__(self, pad_id: int, image_size: int, needs_dummy_image: bool):
        self.pad_id = pad_id
        self.image_size = image_size
        self.needs_dummy_image = needs_dummy_image

    def __call__(self, items: list[Sample | Skipped]) -> Batch:
        samples = [s for s in items if isinstance(s, Sample)]
        skipped = [s for s in items if isinstance(s, Skipped)]
        if not samples:
            ids = torch.full((1, 1), self.pad_id, dtype=torch.long)                  # [1, 1]
            return Batch(ids, torch.full_like(ids, IGNORE_INDEX), torch.ones_like(ids),
                         *self._dummy(), num_samples=0, num_tokens=0, skipped=skipped)
        T = max(len(s.input_ids) for s in samples)
        ids = torch.full((len(samples), T), self.pad_id, dtype=torch.long)           # [B, T]
        labels = torch.full((len(samples), T), IGNORE_INDEX, dtype=torch.long)       # [B, T]
        mask = torch.zeros((len(samples), T), dtype=torch.long)                      # [B, T]
        for b, s in enumerate(samples):
            n = len(s.input_ids)
            ids[b, :n] = torch.tensor(s.input_ids)
            labels[b, :n] = torch.tensor(s.labels)
            mask[b, :n] = 1
        images = [s.pixel_values for s in samples if s.pixel_values is not None]
        if images:
            pixels = torch.stack(images)                                             # [I, 3, S, S]
            used = torch.ones(len(images), dtype=torch.bool)                         # [I]
        else:
            pixels, used = self._dummy()
        num_tokens = int((labels[:, 1:] != IGNORE_INDEX).sum())
        return Batch(ids, labels, mask, pixels, used, len(samples), num_tokens, skipped)

    def _dummy(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.needs_dummy_image:
            return None, None
        s = self.image_size
        return torch.zeros(1, 3, s, s), torch.zeros(1, dtype=torch.bool)             # [1, 3, S, S]


# ---- which records form each step -------------------------------------------------------------
class BatchPlan:
    """The global batch of every optimizer step, from (seed, epoch) only.

    Without modality grouping an epoch is a seeded permutation cut into global batches. With it
    (LLaVA's `group_by_modality_length`), image records and text-only records are permuted
    separately and cut into global batches of one modality, those batches are shuffled, the
    leftovers of both form the last (mixed) batches, and each global batch is ordered by length,
    longest first, so that micro-batches hold records of similar length.
    """

    def __init__(self, has_image: list[bool], lengths: list[int], global_batch_size: int,
                 seed: int, group_by_modality: bool):
        self.has_image = has_image
        self.lengths = lengths
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.group_by_modality = group_by_modality
        self.num_records = len(has_image)
        self.steps_per_epoch = math.ceil(self.num_records / global_batch_size)
        self._cached: tuple[int, list[list[int]]] | None = None

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        G = self.global_batch_size

        def permuted(idx: list[int]) -> list[int]:
            return [idx[j] for j in torch.randperm(len(idx), generator=g).tolist()]

        def cut(idx: list[int]) -> list[list[int]]:
            return [idx[k:k + G] for k in range(0, len(idx), G)]

        if not self.group_by_modality:
            batches = cut(permuted(list(range(self.num_records))))
        else:
            mm = permuted([i for i in range(self.num_records) if self.has_image[i]])
            lang = permuted([i for i in range(self.num_records) if not self.has_image[i]])
            full, rest = [], []
            for part in (mm, lang):
                n_full = len(part) // G * G
                full += cut(part[:n_full])
                rest += part[n_full:]
            batches = [full[j] for j in torch.randperm(len(full), generator=g).tolist()]
            batches += cut(rest)
            batches = [sorted(b, key=lambda i: -self.lengths[i]) for b in batches]
        self._cached = (epoch, batches)
        return batches

    def global_batch(self, step: int) -> list[int]:
        """Record indices of optimizer step `step` (0-based, counted over epochs)."""
        return self.epoch_batches(step // self.steps_per_epoch)[step % self.steps_per_epoch]

    def micro_batches(self, step: int, rank: int, world_size: int, per_device: int,
                      accum: int) -> list[list[int]]:
        """The `accum` micro-batches of `rank` at `step`: micro-batch j = a * world_size + rank of
        the global batch cut into pieces of `per_device` (empty at the end of a short batch)."""
        batch = self.global_batch(step)
        out = []
        for a in range(accum):
            j = a * world_size + rank
            out.append(batch[j * per_device:(j + 1) * per_device])
        return out


class MicroBatchSampler:
    """A DataLoader batch_sampler: this rank's micro-batches for steps [start, stop)."""

    def __init__(self, plan: BatchPlan, start: int, stop: int, rank: int, world_size: int,
                 per_device: int, accum: int):
        self.plan, self.start, self.stop = plan, start, stop
        self.rank, self.world_size = rank, world_size
        self.per_device, self.accum = per_device, accum

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield from self.plan.micro_batches(step, self.rank, self.world_size, self.per_device,
                                               self.accum)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.accum


# ---- skipped records --------------------------------------------------------------------------
class SkipLog:
    """Skipped records by reason, each record once (by dataset index)."""

    def __init__(self):
        self.by_reason: dict[str, dict[int, tuple[str, str]]] = {r: {} for r in SKIP_REASONS}

    def add(self, s: Skipped) -> None:
        self.by_reason.setdefault(s.reason, {})[s.index] = (s.id, s.detail)

    def merge(self, other: dict) -> None:
        for reason, entries in other.items():
            for e in entries:
                self.by_reason.setdefault(reason, {})[int(e["index"])] = (e["id"], e["detail"])

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.by_reason.values())

    def counts(self) -> dict[str, int]:
        return {r: len(v) for r, v in self.by_reason.items()}

    def to_dict(self) -> dict[str, list[dict]]:
        return {r: [{"index": i, "id": rid, "detail": d} for i, (rid, d) in sorted(v.items())]
                for r, v in self.by_reason.items()}

    def summary(self, num_records: int) -> str:
        if not self.total:
            return f"no record skipped (of {num_records})"
        parts = ", ".join(f"{r} {n}" for r, n in self.counts().items() if n)
        return f"skipped {self.total} of {num_records} records: {parts}"
