"""Samples of the synthetic world: a rendered scene and its questions, reproducible by index.

Sample `index` of split `split` is drawn from np.random.default_rng([seed, split code, index])
and reads its question categories from position index * qa_per_image of the split's
CategoryCycle, so any sample can be regenerated alone, categories are balanced over a split, the
train and test splits never share a scene, and the same (seed, split, index, config) gives
identical images, ground truth and text everywhere.

A training sample names all its usable objects "Region [0]" ... "Region [k]" (shuffled) and asks
several questions about them (one conversation); a test sample asks independent questions, each
naming its own objects "Region [0]" (A) and "Region [1]" (B), as SpatialRGPT-Bench items do.
WorldConfig.naming "per_question" names training questions the test way too (then each question
is a record of its own: writers.write_llava_json(per_question=True)).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from spatialgeo_core.synthetic.questions import QA, UNITS, WORDINGS, CategoryCycle, generate_qas
from spatialgeo_core.synthetic.render import ObjectInfo, Rendering, render
from spatialgeo_core.synthetic.scene import SceneConfig, sample_scene

logger = logging.getLogger(__name__)

SPLITS: dict[str, int] = {"train": 0, "test": 1}
NAMINGS = ("shared", "per_question")


@dataclass(frozen=True)
class WorldConfig:
    scene: SceneConfig = field(default_factory=SceneConfig)
    qa_per_image: int = 4                   # questions per sample
    min_region_pixels: int = 25             # a usable object covers at least this many pixels
    min_visible_fraction: float = 0.4       # ... shows at least this much of itself
    min_regions: int = 2                    # a scene is redrawn until it has this many
    max_scene_tries: int = 20
    units: str = "mixed"                    # lengths in answers: "mixed" (m, cm, ft/in) | "metric"
    wording: str = "varied"                 # answers: questions.WORDINGS
    naming: str = "shared"                  # training questions: "shared" (one naming per
    #                                         image) | "per_question" (A = Region [0], B = [1])

    def __post_init__(self):
        for name in ("qa_per_image", "min_region_pixels", "min_regions", "max_scene_tries"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.units not in UNITS:
            raise ValueError(f"units must be one of {UNITS}, got {self.units!r}")
        if self.wording not in WORDINGS:
            raise ValueError(f"wording must be one of {WORDINGS}, got {self.wording!r}")
        if self.naming not in NAMINGS:
            raise ValueError(f"naming must be one of {NAMINGS}, got {self.naming!r}")
        if not 0.0 <= self.min_visible_fraction <= 1.0:
            raise ValueError(f"min_visible_fraction must be in [0, 1], got "
                             f"{self.min_visible_fraction}")
        if self.min_regions > self.scene.max_objects:
            raise ValueError(f"min_regions ({self.min_regions}) exceeds scene.max_objects "
                             f"({self.scene.max_objects})")


@dataclass
class WorldSample:
    id: str
    split: str
    index: int
    rendering: Rendering
    regions: tuple[int, ...]          # usable objects; in a training sample "Region [k]"
    qas: tuple[QA, ...]

    @property
    def rgb(self) -> np.ndarray:
        return self.rendering.rgb


def usable_objects(rendering: Rendering, config: WorldConfig) -> list[ObjectInfo]:
    """Objects that make fair regions: big enough, mostly unoccluded, not cut by the border."""
    return [o for o in rendering.objects
            if o.pixel_count >= config.min_region_pixels and not o.truncated
            and o.visible_fraction >= config.min_visible_fraction]


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
    return np.random.default_rng([int(seed), SPLITS[split], int(index)])


def make_sample(seed: int, split: str, index: int,
                config: WorldConfig | None = None) -> WorldSample:
    """Sample `index` of `split` (see the module docstring)."""
    cfg = config or WorldConfig()
    rng = sample_rng(seed, split, index)
    for _ in range(cfg.max_scene_tries):
        rendering = render(sample_scene(rng, cfg.scene))
        usable = usable_objects(rendering, cfg)
        if len(usable) >= cfg.min_regions:
            break
    else:
        logger.warning("%s sample %d: no scene with %d usable objects in %d tries; keeping "
                       "one with %d", split, index, cfg.min_regions, cfg.max_scene_tries,
                       len(usable))
    order = rng.permutation(len(usable))
    usable = [usable[int(i)] for i in order]
    regions = tuple(o.index for o in usable)
    cam = rendering.camera
    cycle = CategoryCycle((int(seed), SPLITS[split]), start=index * cfg.qa_per_image)
    shared = split == "train" and cfg.naming == "shared"
    qas = generate_qas(usable, cfg.qa_per_image, rng, cycle,
                       regions=regions if shared else None, fx=cam.fx, cx=cam.cx,
                       units=cfg.units, wording=cfg.wording)
    return WorldSample(f"synth-{split}-{seed}-{index:06d}", split, index, rendering, regions,
                       tuple(qas))


def iter_samples(n: int, seed: int, split: str,
                 config: WorldConfig | None = None) -> Iterator[WorldSample]:
    """Samples 0..n-1 of a split."""
    for i in range(n):
        yield make_sample(seed, split, i, config)
