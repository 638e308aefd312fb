"""Scenes of the synthetic world: coloured solids at metric poses on a ground plane.

Frames as in `camera.py` (world: z up, +y straight ahead of the camera, +x to its right). Every
solid stands upright; a box may be turned about the vertical axis (yaw), the round shapes are
symmetric about it. An object's *size* is the extent of its world axis-aligned bounding box:
width along x (left-right as the camera sees it), depth along y, height along z, as SpatialRGPT
measures objects (the extents of the axis-aligned box of the object's points in a gravity-aligned
frame whose x axis is the camera's). Its *centre* is the centre of that box.

`sample_scene` is deterministic: the same seed (or Generator state) and config give the same
scene, independently of the platform.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from spatialgeo_core.synthetic.camera import Camera

SHAPES: tuple[str, ...] = ("box", "sphere", "cylinder", "cone")

# name -> sRGB albedo; distinct hues so that a colour name identifies an object in a scene
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (210, 40, 35),
    "green": (40, 170, 60),
    "blue": (40, 70, 215),
    "yellow": (235, 205, 30),
    "orange": (245, 130, 25),
    "purple": (130, 50, 180),
    "cyan": (30, 200, 210),
    "pink": (240, 120, 180),
    "white": (235, 235, 235),
    "brown": (125, 80, 45),
}

# (ground albedo, tile contrast) pairs; muted so that no ground looks like a palette colour
GROUNDS: tuple[tuple[tuple[int, int, int], float], ...] = (
    ((140, 138, 130), 0.10),      # concrete
    ((176, 160, 128), 0.08),      # sand
    ((96, 104, 112), 0.12),       # slate
    ((72, 72, 78), 0.14),         # asphalt
)


@dataclass(frozen=True)
class SceneObject:
    """One solid. dims are its full extents in its own frame before the yaw: (sx, sy, sz); a
    sphere is (2r, 2r, 2r), a cylinder or a cone (2r, 2r, h), a box (w, d, h)."""

    shape: str                               # one of SHAPES
    color: str                               # a PALETTE name
    x: float                                 # centre of the footprint, world metres
    y: float
    base_z: float                            # height of the lowest point (0 = on the ground)
    dims: tuple[float, float, float]
    yaw_deg: float = 0.0                     # rotation about the vertical axis (boxes only)

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {self.shape!r}")
        if self.color not in PALETTE:
            raise ValueError(f"color must be one of {sorted(PALETTE)}, got {self.color!r}")
        if len(self.dims) != 3 or not all(d > 0 for d in self.dims):
            raise ValueError(f"dims must be 3 positive extents, got {self.dims}")
        if self.base_z < 0:
            raise ValueError(f"base_z must be >= 0 (objects do not sink), got {self.base_z}")
        if self.shape != "box" and self.yaw_deg != 0.0:
            raise ValueError(f"yaw_deg applies to boxes only, got {self.yaw_deg} for a "
                             f"{self.shape}")
        if self.shape == "sphere" and not (self.dims[0] == self.dims[1] == self.dims[2]):
            raise ValueError(f"a sphere has equal dims, got {self.dims}")
        if self.shape in ("cylinder", "cone") and self.dims[0] != self.dims[1]:
            raise ValueError(f"a {self.shape} has dims (2r, 2r, h), got {self.dims}")

    @property
    def radius(self) -> float:
        """Radius of a round shape (half the x extent); for a box, half its footprint diagonal."""
        if self.shape == "box":
            return 0.5 * math.hypot(self.dims[0], self.dims[1])
        return 0.5 * self.dims[0]

    @property
    def size(self) -> tuple[float, float, float]:
        """(width, height, depth) in metres: extents of the world axis-aligned bounding box."""
        sx, sy, sz = self.dims
        if self.shape == "box":
            c, s = abs(math.cos(math.radians(self.yaw_deg))), abs(math.sin(math.radians(
                self.yaw_deg)))
            return (c * sx + s * sy, sz, s * sx + c * sy)
        return (sx, sz, sy)

    @property
    def center(self) -> np.ndarray:
        """[3] centre of the world bounding box."""
        return np.array([self.x, self.y, self.base_z + 0.5 * self.dims[2]])

    @property
    def aabb(self) -> tuple[np.ndarray, np.ndarray]:
        """(min corner, max corner) of the world axis-aligned bounding box, [3] each."""
        w, h, d = self.size
        half = np.array([0.5 * w, 0.5 * d, 0.5 * h])
        c = self.center
        return c - half, c + half

    @property
    def volume(self) -> float:
        """Volume of the solid itself, cubic metres."""
        sx, sy, sz = self.dims
        r = 0.5 * sx
        return {
            "box": sx * sy * sz,
            "sphere": 4.0 / 3.0 * math.pi * r ** 3,
            "cylinder": math.pi * r * r * sz,
            "cone": math.pi * r * r * sz / 3.0,
        }[self.shape]

    def to_dict(self) -> dict:
        return {"shape": self.shape, "color": self.color, "x": self.x, "y": self.y,
                "base_z": self.base_z, "dims": list(self.dims), "yaw_deg": self.yaw_deg}


@dataclass(frozen=True)
class Style:
    """Looks that carry no geometry: ground and sky colours, the sun."""

    ground_rgb: tuple[int, int, int] = GROUNDS[0][0]
    tile_contrast: float = GROUNDS[0][1]      # brightness step of the 1 m ground tiles
    tile_size_m: float = 1.0
    sky_horizon_rgb: tuple[int, int, int] = (200, 215, 230)
    sky_zenith_rgb: tuple[int, int, int] = (90, 140, 210)
    sun_dir: tuple[float, float, float] = (0.4, -0.5, 0.77)   # towards the sun, world, unit
    ambient: float = 0.35
    texture_phase: tuple[float, float] = (0.0, 0.0)           # offsets of the ground's noise

    def to_dict(self) -> dict:
        return {"ground_rgb": list(self.ground_rgb), "tile_contrast": self.tile_contrast,
                "tile_size_m": self.tile_size_m, "sky_horizon_rgb": list(self.sky_horizon_rgb),
                "sky_zenith_rgb": list(self.sky_zenith_rgb), "sun_dir": list(self.sun_dir),
                "ambient": self.ambient, "texture_phase": list(self.texture_phase)}


@dataclass(frozen=True)
class Scene:
    camera: Camera
    objects: tuple[SceneObject, ...]
    style: Style = field(default_factory=Style)

    def to_dict(self) -> dict:
        return {"camera": self.camera.to_dict(), "objects": [o.to_dict() for o in self.objects],
                "style": self.style.to_dict()}


@dataclass(frozen=True)
class SceneConfig:
    """Ranges the scene sampler draws from (uniform unless said otherwise)."""

    width: int = 128                                   # image size in pixels
    height: int = 128
    min_objects: int = 2
    max_objects: int = 5
    shapes: tuple[str, ...] = SHAPES
    hfov_deg: tuple[float, float] = (50.0, 75.0)       # horizontal field of view
    camera_height_m: tuple[float, float] = (0.8, 2.2)
    pitch_deg: tuple[float, float] = (8.0, 28.0)       # downward tilt
    distance_m: tuple[float, float] = (1.0, 10.0)      # forward distance of object centres
    size_m: tuple[float, float] = (0.2, 2.0)           # every extent (log-uniform)
    max_box_yaw_deg: float = 40.0
    float_prob: float = 0.15                           # chance that an object hovers
    float_height_m: tuple[float, float] = (0.2, 1.2)   # base_z of a hovering object
    gap_m: float = 0.15                                # least gap between footprints
    max_overflow: float = 0.1                          # how far (fraction of the image) the
    #                                                    projected bounding box may leave it
    max_tries: int = 60                                # placement attempts per object

    def __post_init__(self):
        for name in ("width", "height", "min_objects", "max_tries"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_objects < self.min_objects:
            raise ValueError(f"max_objects ({self.max_objects}) must be >= min_objects "
                             f"({self.min_objects})")
        if self.max_objects > len(PALETTE):
            raise ValueError(f"max_objects must be <= {len(PALETTE)} (one colour each), "
                             f"got {self.max_objects}")
        if not self.shapes or any(s not in SHAPES for s in self.shapes):
            raise ValueError(f"shapes must be a non-empty subset of {SHAPES}, got {self.shapes}")
        for name in ("hfov_deg", "camera_height_m", "pitch_deg", "distance_m", "size_m",
                     "float_height_m"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"{name} must be a (low, high) range, got {(lo, hi)}")
        if not 0 < self.size_m[0]:
            raise ValueError(f"size_m must be positive, got {self.size_m}")
        if not 0 < self.distance_m[0]:
            raise ValueError(f"distance_m must be positive, got {self.distance_m}")
        if self.max_overflow < 0:
            raise ValueError(f"max_overflow must be >= 0, got {self.max_overflow}")
        if not 0.0 <= self.float_prob <= 1.0:
            raise ValueError(f"float_prob must be in [0, 1], got {self.float_prob}")


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _sample_object(rng: np.random.Generator, cfg: SceneConfig, color: str) -> SceneObject:
    shape = str(cfg.shapes[int(rng.integers(len(cfg.shapes)))])
    lo, hi = cfg.size_m
    if shape == "box":
        dims = tuple(round(_log_uniform(rng, lo, hi), 3) for _ in range(3))
        yaw = round(float(rng.uniform(-cfg.max_box_yaw_deg, cfg.max_box_yaw_deg)), 2)
    else:
        diameter = round(_log_uniform(rng, lo, hi), 3)
        tall = diameter if shape == "sphere" else round(_log_uniform(rng, lo, hi), 3)
        dims, yaw = (diameter, diameter, tall), 0.0
    base_z = 0.0
    if rng.uniform() < cfg.float_prob:
        base_z = round(float(rng.uniform(*cfg.float_height_m)), 3)
    return SceneObject(shape, color, 0.0, 0.0, base_z, dims, yaw)


def _corners(obj: SceneObject) -> np.ndarray:
    lo, hi = obj.aabb
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                     for z in (lo[2], hi[2])])                                  # [8, 3]


def _placement_ok(camera: Camera, obj: SceneObject, placed: list[SceneObject],
                  gap: float, overflow: float) -> bool:
    for other in placed:
        if math.hypot(obj.x - other.x, obj.y - other.y) < obj.radius + other.radius + gap:
            return False
    corners = camera.world_to_camera(_corners(obj))
    if corners[:, 2].min() < 0.3:                  # every corner well in front of the camera
        return False
    u, v = camera.project(camera.world_to_camera(obj.center))
    margin_u, margin_v = 0.05 * camera.width, 0.05 * camera.height
    if not (margin_u <= u <= camera.width - 1 - margin_u
            and margin_v <= v <= camera.height - 1 - margin_v):
        return False
    # the projected bounding box may leave the image by at most `overflow` of its size
    uv = camera.project(corners)                                                 # [8, 2]
    over_u, over_v = overflow * camera.width, overflow * camera.height
    return bool(uv[:, 0].min() >= -over_u and uv[:, 0].max() <= camera.width - 1 + over_u
                and uv[:, 1].min() >= -over_v and uv[:, 1].max() <= camera.height - 1 + over_v)


def sample_camera(rng: np.random.Generator, cfg: SceneConfig) -> Camera:
    return Camera.from_fov(cfg.width, cfg.height, round(float(rng.uniform(*cfg.hfov_deg)), 3),
                           round(float(rng.uniform(*cfg.camera_height_m)), 3),
                           round(float(rng.uniform(*cfg.pitch_deg)), 3))


def sample_style(rng: np.random.Generator) -> Style:
    ground, contrast = GROUNDS[int(rng.integers(len(GROUNDS)))]
    jitter = rng.uniform(0.9, 1.1)
    ground = tuple(int(min(255, round(c * jitter))) for c in ground)
    elevation = math.radians(rng.uniform(35.0, 70.0))
    azimuth = rng.uniform(0.0, 2.0 * math.pi)
    sun = (math.cos(elevation) * math.sin(azimuth), math.cos(elevation) * math.cos(azimuth),
           math.sin(elevation))
    return Style(ground_rgb=ground, tile_contrast=contrast,
                 sun_dir=tuple(round(float(c), 6) for c in sun),
                 ambient=round(float(rng.uniform(0.3, 0.45)), 3),
                 texture_phase=(round(float(rng.uniform(0, 100)), 3),
                                round(float(rng.uniform(0, 100)), 3)))


def sample_scene(seed: int | np.random.Generator, config: SceneConfig | None = None) -> Scene:
    """Draw a scene: a camera, min..max objects with distinct colours, and a style.

    Objects are placed without overlapping footprints, with their centre in view, every
    bounding-box corner at least 0.3 m in front of the camera and the projected bounding box
    inside the image but for `max_overflow`. Fewer than min_objects may come
    out when the placement attempts run out (a tiny field of view, say).
    """
    cfg = config or SceneConfig()
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    camera = sample_camera(rng, cfg)
    style = sample_style(rng)
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    colors = [str(c) for c in rng.permutation(sorted(PALETTE))[:n]]
    tan_half = (camera.width / 2.0) / camera.fx
    placed: list[SceneObject] = []
    for color in colors:
        for _ in range(cfg.max_tries):
            obj = _sample_object(rng, cfg, color)
            y = float(rng.uniform(*cfg.distance_m))
            half_span = max(0.0, y * tan_half * 0.9)
            x = float(rng.uniform(-half_span, half_span))
            obj = SceneObject(obj.shape, obj.color, round(x, 3), round(y, 3), obj.base_z,
                              obj.dims, obj.yaw_deg)
            if _placement_ok(camera, obj, placed, cfg.gap_m, cfg.max_overflow):
                placed.append(obj)
                break
    return Scene(camera, tuple(placed), style)
