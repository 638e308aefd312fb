"""What the demo model's visual tokens hold of each region: linear probes of its input.

The LLaMA answers from the visual tokens the two adapters give it. This asks whether those tokens
hold a region's facts at all, apart from whether the LLaMA has learned to read them
(demo/reading.py scores what it says). Per region: the mean of each stream's tokens (CLIP tokens;
geometry tokens when the model has them, and both together) over the patches its mask covers,
weighted by how much of each patch it covers; a ridge regression fitted on training-split
regions maps that mean to the region's sideways offset, forward distance, width and height
(synthetic/facts.py). Scored on held-out regions as reading.json scores the model's words: the
side right (chance 50 %); forward distance, width, height within 25 % (the bench's rule), beside
always saying the training median.

    python -m spatialgeo_core.demo.probe MODEL_DIR [--seed 0] > probe.json

Reading both: a fact the tokens hold and the model does not say is the LLaMA's to learn; a fact
the tokens do not hold no amount of language training reads. `--reader-scenes N` measures how
long the learning takes at the least: one attention head, queried by the region's index as the
text "Region [k]" queries the image, trained alone to state each region's side from all the
image's tokens (its held-out accuracy after 10, 30 and 100 passes over the regions).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spatialgeo_core.regions import draw_regions
from spatialgeo_core.synthetic.facts import quantity
from spatialgeo_core.types import Region

TARGETS = ("side", "ahead", "wide", "tall")
RELATIVE = ("ahead", "wide", "tall")                # scored within 25 %
RIDGE = 10.0                                        # on standardised features


def visual_tokens(pipe, sample, masks: list[np.ndarray] | None = None) -> torch.Tensor:
    """One scene's visual tokens [V, D] (float32, CPU), its usable regions drawn (with `masks`,
    their masks when the caller has them) as training and serving draw them."""
    objects = sample.rendering.objects
    masks = masks or [sample.rendering.mask(o) for o in sample.regions]
    regions = [Region(box=tuple(float(v) for v in objects[o].box2d), mask=m)
               for o, m in zip(sample.regions, masks, strict=True)]
    pixels = pipe.processor.image(draw_regions(sample.rgb, regions))[None].to(pipe.device)
    with torch.inference_mode():
        return pipe.model.encode_images(pixels)[0].float().cpu()


def region_means(pipe, sample) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per stream, the coverage-weighted mean token of each usable region of one scene [R, D],
    and the regions' TARGETS [R, 4]."""
    model, objects = pipe.model, sample.rendering.objects
    masks = [sample.rendering.mask(o) for o in sample.regions]
    visual = visual_tokens(pipe, sample, masks)                               # [V, D]
    is_clip = model.visual_is_clip.cpu()
    streams = {"clip": visual[is_clip]}
    if not bool(is_clip.all()):
        streams["geometry"] = visual[~is_clip]
    grid = pipe.model.cfg.clip.grid
    if masks[0].shape[0] != masks[0].shape[1]:
        raise ValueError("the probe maps masks onto patches of square images only")
    cover = F.adaptive_avg_pool2d(torch.tensor(np.stack(masks), dtype=torch.float32)[:, None],
                                  grid).flatten(1)                             # [R, N]
    weights = cover / cover.sum(1, keepdim=True).clamp(min=1e-6)
    means = {name: (weights @ tokens).numpy() for name, tokens in streams.items()}
    if len(means) > 1:                          # what the model holds, both streams together
        means["both"] = np.concatenate(list(means.values()), axis=1)
    truth = np.array([[quantity(objects[o], q) for q in TARGETS] for o in sample.regions])
    return means, truth


def collect(pipe, samples) -> tuple[dict[str, np.ndarray], np.ndarray]:
    feats: dict[str, list] = {}
    truths = []
    for sample in samples:
        means, truth = region_means(pipe, sample)
        for name, m in means.items():
            feats.setdefault(name, []).append(m)
        truths.append(truth)
    return {k: np.concatenate(v) for k, v in feats.items()}, np.concatenate(truths)


def ridge(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, lam: float = RIDGE) -> np.ndarray:
    """Ridge regression on standardised features (fitted on x, y), predicted at x_test."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    a = np.c_[(x - mu) / sd, np.ones(len(x))]
    b = np.c_[(x_test - mu) / sd, np.ones(len(x_test))]
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ y)
    return b @ w


def score(pred: np.ndarray, truth: np.ndarray, train_truth: np.ndarray) -> dict:
    """Percentages over held-out regions, beside the training median's (pred, truth [R, 4])."""
    def pct(flags) -> float:
        return round(100.0 * float(np.mean(flags)), 1)

    out = {"side_right_pct": pct(np.sign(pred[:, 0]) == np.sign(truth[:, 0]))}
    for q in RELATIVE:
        j = TARGETS.index(q)
        median = float(np.median(train_truth[:, j]))
        out[q] = {"within_25_pct": pct(np.abs(pred[:, j] - truth[:, j]) <= 0.25 * truth[:, j]),
                  "median_prior_within_25_pct": pct(np.abs(median - truth[:, j])
                                                    <= 0.25 * truth[:, j])}
    return out


def probe(pipe, world, train_scenes: int = 300, test_scenes: int = 100) -> dict:
    """Fit on training scenes 0..train_scenes-1 of `world` (a demo.data.DemoWorld), score on
    held-out scenes 0..test_scenes-1; per stream of the model."""
    from spatialgeo_core.synthetic import iter_samples
    x, y = collect(pipe, iter_samples(train_scenes, world.seed, "train", world.train_config()))
    xt, yt = collect(pipe, iter_samples(test_scenes, world.seed, "test", world.test_config()))
    return {"train_regions": len(y), "test_regions": len(yt),
            "streams": {name: score(ridge(x[name], y, xt[name]), yt, y) for name in x}}


# ---- how fast one attention head learns to read the side ---------------------------------------
class SideReader(nn.Module):
    """One attention head over an image's visual tokens [V, D], queried by the region's index (as
    the text "Region [k]" queries them): the least the LLaMA learns to state a region's side."""

    def __init__(self, d: int, width: int = 64, regions: int = 8):
        super().__init__()
        self.query = nn.Parameter(torch.randn(regions, width) * 0.1)
        self.key, self.value = nn.Linear(d, width), nn.Linear(d, width)
        self.out = nn.Sequential(nn.GELU(), nn.Linear(width, 1))

    def forward(self, tokens: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        """tokens [S, V, D], which [B, 2] (scene, region index) -> side logits [B]."""
        x = tokens[which[:, 0]]                                               # [B, V, D]
        scores = (self.key(x) @ self.query[which[:, 1], :, None]).squeeze(-1)  # [B, V]
        attn = torch.softmax(scores / self.query.shape[1] ** 0.5, dim=-1)
        return self.out((attn[..., None] * self.value(x)).sum(1)).squeeze(-1)


def side_reader_curve(tokens, which, right, test, passes=(10, 30, 100), batch: int = 256,
                      lr: float = 3e-3, seed: int = 0) -> dict[int, float]:
    """Train a SideReader on (tokens [S, V, D] standardised, which [R, 2], right [R] bool) and
    return its held-out side accuracy (%) after each number of passes over the regions; test =
    (tokens, which, right) of held-out scenes."""
    torch.manual_seed(seed)
    reader = SideReader(tokens.shape[-1])
    opt = torch.optim.AdamW(reader.parameters(), lr=lr, weight_decay=0.01)
    curve = {}
    for n in range(1, max(passes) + 1):
        for b in torch.randperm(len(which)).split(batch):
            loss = F.binary_cross_entropy_with_logits(reader(tokens, which[b]), right[b].float())
            opt.zero_grad()
            loss.backward()
            opt.step()
        if n in passes:
            with torch.no_grad():
                hit = (reader(test[0], test[1]) > 0) == test[2]
            curve[n] = round(100.0 * float(hit.float().mean()), 1)
    return curve


def scene_tokens(pipe, samples) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All visual tokens of each scene [S, V, D], (scene, region index) [R, 2], side >= 0 [R]."""
    tokens, which, right = [], [], []
    for i, sample in enumerate(samples):
        tokens.append(visual_tokens(pipe, sample))
        for k, o in enumerate(sample.regions):
            which.append((i, k))
            right.append(quantity(sample.rendering.objects[o], "side") >= 0)
    return torch.stack(tokens), torch.tensor(which), torch.tensor(right)


def main(argv: list[str] | None = None) -> int:
    from spatialgeo_core.demo.data import DemoWorld
    from spatialgeo_core.pipeline import SpatialGeoPipeline
    p = argparse.ArgumentParser(prog="python -m spatialgeo_core.demo.probe",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="a model directory (spatialgeo format)")
    p.add_argument("--seed", type=int, default=0, help="the demo world's seed (prepare.json)")
    p.add_argument("--train-scenes", type=int, default=300)
    p.add_argument("--test-scenes", type=int, default=100)
    p.add_argument("--reader-scenes", type=int, default=0,
                   help="also train one attention head on this many training scenes' tokens to "
                        "state each region's side, and print its held-out accuracy after 10, 30 "
                        "and 100 passes (1500: about 20 minutes on 2 CPU cores)")
    args = p.parse_args(argv)
    pipe = SpatialGeoPipeline.from_pretrained(args.model)
    world = DemoWorld(seed=args.seed)
    out = probe(pipe, world, args.train_scenes, args.test_scenes)
    if args.reader_scenes:
        from spatialgeo_core.synthetic import iter_samples
        train = scene_tokens(pipe, iter_samples(args.reader_scenes, world.seed, "train",
                                                world.train_config()))
        test = scene_tokens(pipe, iter_samples(args.test_scenes, world.seed, "test",
                                               world.test_config()))
        mu, sd = train[0].mean((0, 1)), train[0].std((0, 1)) + 1e-5
        curve = side_reader_curve((train[0] - mu) / sd, train[1], train[2],
                                  ((test[0] - mu) / sd, test[1], test[2]))
        out["side_reader"] = {"train_regions": len(train[1]), "batch": 256,
                              "held_out_side_pct_after_passes": curve}
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
