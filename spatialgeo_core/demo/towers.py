"""The demo model's configuration and the pretraining of its two frozen towers.

The SpatialGeo recipe never trains its towers: they arrive pretrained (CLIP; MoGe's DINOv2). The
demo has no downloads, so it pretrains tiny ones on the synthetic world first, on images with the
set-of-marks regions drawn exactly as training and serving draw them:

- semantic tower (CLIP ViT): per patch, classify the colour and the shape of the object that
  covers most of the patch (or background) and which region mark it belongs to;
- geometry tower (DINOv2 ViT, MoGe-style): per patch, a linear head predicts a point map
  (u, v, log z) -> (u z, v z, z) in the camera frame; the loss aligns it to the ground truth with
  the least-squares scale and z-shift (affine-invariant, as MoGe v1) plus a small metric
  log-depth term (MoGe-2's metric scale), on patches that are not sky. A second linear head
  classifies the patch's colour, shape and region mark (weight `appearance_weight`): MoGe's
  encoder is DINOv2, whose self-supervised features keep what the image looks like (linear
  probes read objects and parts from them); a geometry-only tiny tower would be blind to the
  set-of-marks labels that tell the regions apart.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spatialgeo_core.config import (
    ClipTowerConfig,
    GeometryTowerConfig,
    LLMConfig,
    SpatialGeoConfig,
)
from spatialgeo_core.processor import preprocess_image
from spatialgeo_core.regions import draw_regions
from spatialgeo_core.synthetic import PALETTE, SHAPES, WorldConfig, make_sample
from spatialgeo_core.types import Region

log = logging.getLogger(__name__)

COLOURS = tuple(PALETTE)
MAX_REGIONS = 8                       # region-mark classes 0..7, then "no region"
MAX_DEPTH_M = 30.0                    # the geometry loss ignores farther patches (far ground)


def demo_config(vocab_size: int, geometry: bool = True, image_size: int = 112,
                template: str = "vicuna_v1") -> SpatialGeoConfig:
    """The demo model: 8 x 8 patches, CLIP width 128 x 4, DINOv2 width 128 x 4, LLaMA 192 x 3."""
    clip = ClipTowerConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                           num_attention_heads=4, image_size=image_size, patch_size=14,
                           select_layer=-1)
    geo = GeometryTowerConfig(embed_dim=128, depth=4, num_heads=2, patch_size=14,
                              pos_embed_grid=image_size // 14, layers=[1, 2, 3],
                              input_norm="clip") if geometry else None
    llm = LLMConfig(vocab_size=vocab_size, hidden_size=192, intermediate_size=512,
                    num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=6,
                    max_position_embeddings=1024)
    return SpatialGeoConfig(clip=clip, geometry=geo, llm=llm, image_token_id=vocab_size,
                            feature_drop_prob=0.0, image_aspect_ratio="pad",
                            chat_template=template, max_length=640)


# ---- pretraining data -----------------------------------------------------------------------
@dataclass
class TowerData:
    pixels: torch.Tensor          # [B, 3, S, S] CLIP-normalised, regions drawn
    colour: torch.Tensor          # [B, N] long, len(COLOURS) = background
    shape: torch.Tensor           # [B, N] long, len(SHAPES) = background
    region: torch.Tensor          # [B, N] long, MAX_REGIONS = no region
    points: torch.Tensor          # [B, N, 3] camera-frame mean point of the patch
    valid: torch.Tensor           # [B, N] bool: the patch is mostly not sky


def _patch_targets(sample, grid: int, patch: int):
    """Per-patch targets at the model's resolution (grid * patch) from a square rendering of any
    size: each model pixel takes the rendered pixel under its centre."""
    r = sample.rendering
    H = grid * patch
    rows = ((np.arange(H) + 0.5) * r.instance.shape[0] / H).astype(int)   # [H]
    cols = ((np.arange(H) + 0.5) * r.instance.shape[1] / H).astype(int)   # [H]
    inst = r.instance[np.ix_(rows, cols)].reshape(grid, patch, grid, patch).transpose(0, 2, 1, 3)
    inst = inst.reshape(grid * grid, patch * patch)                      # [N, p*p]
    pts = r.points[np.ix_(rows, cols)].reshape(grid, patch, grid, patch, 3)
    pts = pts.transpose(0, 2, 1, 3, 4)
    pts = pts.reshape(grid * grid, patch * patch, 3)                     # [N, p*p, 3]
    finite = np.isfinite(pts).all(-1)                                    # [N, p*p]
    n = grid * grid
    colour, shape = np.full(n, len(COLOURS)), np.full(n, len(SHAPES))
    region = np.full(n, MAX_REGIONS)
    region_of = {obj: k for k, obj in enumerate(sample.regions)}
    for j in range(n):
        ids, counts = np.unique(inst[j], return_counts=True)
        top = ids[np.argmax(counts)]
        if top >= 0:
            info = r.objects[int(top)]
            colour[j], shape[j] = COLOURS.index(info.color), SHAPES.index(info.shape)
            region[j] = region_of.get(int(top), MAX_REGIONS)
    valid = finite.mean(1) > 0.5                                         # [N]
    safe = np.where(finite[..., None], pts, 0.0)
    mean_pts = safe.sum(1) / np.maximum(finite.sum(1, keepdims=True), 1)  # [N, 3]
    return colour, shape, region, mean_pts, valid


def tower_data(n: int, seed: int, cfg: SpatialGeoConfig, world: WorldConfig,
               start: int = 0) -> TowerData:
    """n training-split scenes with their usable objects marked (as training records are)."""
    grid, patch = cfg.clip.grid, cfg.clip.patch_size
    out: dict[str, list] = {k: [] for k in ("pixels", "colour", "shape", "region", "points",
                                            "valid")}
    for i in range(start, start + n):
        s = make_sample(seed, "train", i, world)
        regions = [Region(box=tuple(float(v) for v in s.rendering.objects[o].box2d),
                          mask=s.rendering.mask(o)) for o in s.regions]
        img = draw_regions(s.rgb, regions)
        out["pixels"].append(preprocess_image(img, cfg))
        for k, v in zip(("colour", "shape", "region", "points", "valid"),
                        _patch_targets(s, grid, patch), strict=True):
            out[k].append(torch.as_tensor(np.asarray(v)))
    return TowerData(torch.stack(out["pixels"]), torch.stack(out["colour"]).long(),
                     torch.stack(out["shape"]).long(), torch.stack(out["region"]).long(),
                     torch.stack(out["points"]).float(), torch.stack(out["valid"]).bool())


# ---- losses ---------------------------------------------------------------------------------
class AppearanceHead(nn.Module):
    """Per-patch linear classifier of the covering object's colour and shape and of the region
    mark drawn on it (each with a "background" / "no region" class)."""

    def __init__(self, d: int):
        super().__init__()
        self.sizes = (len(COLOURS) + 1, len(SHAPES) + 1, MAX_REGIONS + 1)
        self.linear = nn.Linear(d, sum(self.sizes))

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """[b, N, d] -> (colour [b, N, C+1], shape [b, N, S+1], region [b, N, R+1]) logits."""
        return torch.split(self.linear(feats), self.sizes, dim=-1)

    @staticmethod
    def _targets(data: TowerData, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return data.colour[idx], data.shape[idx], data.region[idx]

    def loss(self, feats: torch.Tensor, data: TowerData, idx: torch.Tensor) -> torch.Tensor:
        return sum(F.cross_entropy(lg.flatten(0, 1), t.flatten())
                   for lg, t in zip(self(feats), self._targets(data, idx), strict=True))

    def accuracy(self, feats: torch.Tensor, data: TowerData, idx: torch.Tensor) -> dict:
        """Accuracies on the patches an object covers."""
        obj = data.colour[idx] < len(COLOURS)
        return {f"{name}_acc_objects": round(float((lg.argmax(-1) == t)[obj].float().mean()), 4)
                for name, lg, t in zip(("colour", "shape", "region"), self(feats),
                                       self._targets(data, idx), strict=True)}


def point_map(raw: torch.Tensor) -> torch.Tensor:
    """Head output (u, v, log z) [B, N, 3] -> camera-frame points (u z, v z, z) [B, N, 3]."""
    z = raw[..., 2:3].clamp(-4, 4).exp()
    return torch.cat([raw[..., :2] * z, z], dim=-1)


def affine_invariant_point_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor,
                                metric_weight: float = 0.5,
                                max_depth: float = MAX_DEPTH_M) -> torch.Tensor:
    """MoGe-style: align pred [B, N, 3] to gt with the scale s and z-shift t per image that
    minimise the squared error relative to the true depth, then the mean L1 error relative to
    the true depth; plus metric_weight x L1 of log z. Patches beyond max_depth are left out."""
    gz = gt[..., 2].clamp(min=0.1)                                      # [B, N]
    w = (valid & (gt[..., 2] < max_depth)).float()                      # [B, N]
    wr = w / gz ** 2                                                    # relative weights
    # normal equations of sum wr (|s P_xy - G_xy|^2 + (s P_z + t - G_z)^2) in (s, t)
    pp = (wr[..., None] * pred * pred).sum((1, 2))                      # [B]
    pg = (wr[..., None] * pred * gt).sum((1, 2))
    pz, gzs, nw = (wr * pred[..., 2]).sum(1), (wr * gt[..., 2]).sum(1), wr.sum(1)
    det = (pp * nw - pz * pz).clamp(min=1e-8)
    s = ((pg * nw - pz * gzs) / det).detach().clamp(min=1e-3)           # [B]
    t = ((gzs - s * pz) / nw.clamp(min=1e-8)).detach()                  # [B]
    aligned = pred * s[:, None, None]
    aligned = torch.cat([aligned[..., :2], aligned[..., 2:] + t[:, None, None]], dim=-1)
    err = (aligned - gt).abs().sum(-1) / gz                            # [B, N]
    rel = (err * w).sum() / w.sum().clamp(min=1)
    log_z = ((pred[..., 2].clamp(min=1e-3).log() - gz.log()).abs() * w).sum() / w.sum().clamp(
        min=1)
    return rel + metric_weight * log_z


# ---- pretraining loops ----------------------------------------------------------------------
def _loop(params, step_fn, data: TowerData, steps: int, batch: int, lr: float, seed: int,
          name: str) -> float:
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                pct_start=0.05)
    g = torch.Generator().manual_seed(seed)
    n = data.pixels.shape[0]
    start, loss_avg = time.time(), None
    for step in range(steps):
        idx = torch.randint(0, n, (batch,), generator=g)
        loss = step_fn(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        loss_avg = loss.item() if loss_avg is None else 0.95 * loss_avg + 0.05 * loss.item()
        if step % 100 == 0 or step == steps - 1:
            log.info("%s step %d/%d loss %.4f (%.0f s)", name, step + 1, steps, loss_avg,
                     time.time() - start)
    return float(loss_avg)


def pretrain_semantic(tower: nn.Module, data: TowerData, steps: int, batch: int = 32,
                      lr: float = 2e-3, seed: int = 0) -> dict[str, float]:
    """Train a ClipTower in place; returns per-patch accuracies on `data`."""
    head = AppearanceHead(tower.cfg.hidden_size)
    tower.requires_grad_(True).train()

    def step_fn(idx):
        return head.loss(tower(data.pixels[idx]), data, idx)

    params = list(tower.parameters()) + list(head.parameters())
    _loop(params, step_fn, data, steps, batch, lr, seed, "semantic tower")
    tower.requires_grad_(False).eval()
    with torch.no_grad():
        idx = torch.arange(min(256, data.pixels.shape[0]))
        return head.accuracy(tower(data.pixels[idx]), data, idx)


def pretrain_geometry(tower: nn.Module, data: TowerData, steps: int, batch: int = 32,
                      lr: float = 5e-4, seed: int = 0,
                      appearance_weight: float = 0.5) -> dict[str, float]:
    """Train a GeometryTower in place (MoGe-style point map, plus the appearance head when
    appearance_weight > 0); returns its depth error and appearance accuracies."""
    d = tower.cfg.embed_dim
    points_head = nn.Linear(d, 3)
    looks = AppearanceHead(d) if appearance_weight else None
    tower.requires_grad_(True).train()

    def step_fn(idx):
        feats = tower(data.pixels[idx])[-1]                              # [b, N, d]
        loss = affine_invariant_point_loss(point_map(points_head(feats)), data.points[idx],
                                           data.valid[idx])
        if looks is not None:
            loss = loss + appearance_weight * looks.loss(feats, data, idx)
        return loss

    heads = [points_head] + ([looks] if looks is not None else [])
    params = list(tower.parameters()) + [q for h in heads for q in h.parameters()]
    _loop(params, step_fn, data, steps, batch, lr, seed, "geometry tower")
    tower.requires_grad_(False).eval()
    with torch.no_grad():
        idx = torch.arange(min(256, data.pixels.shape[0]))
        feats = tower(data.pixels[idx])[-1]
        pred, gt, v = point_map(points_head(feats)), data.points[idx], data.valid[idx]
        v = v & (gt[..., 2] < MAX_DEPTH_M)
        abs_rel = ((pred[..., 2] - gt[..., 2]).abs() / gt[..., 2].clamp(min=0.1))[v].mean()
        out = {"metric_depth_abs_rel": round(float(abs_rel), 4)}
        if looks is not None:
            out.update(looks.accuracy(feats, data, idx))
    return out
