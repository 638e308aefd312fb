"""Vectorised numpy ray casting of a synthetic scene: RGB, depth, point map, instance masks.

No OpenGL: every pixel's ray (camera.py) is intersected analytically with the ground plane and
with each solid, inside the screen rectangle that the solid's bounding box projects to. Shading
is Lambertian under one sun plus ambient light; the ground has 1 m tiles, a little value noise,
soft blob shadows under the objects and haze with distance, and the sky a vertical gradient, so
that perspective, size and contact cues exist.

Outputs (`Rendering`): rgb uint8 [H, W, 3]; depth float32 [H, W], z-depth in metres, inf for sky;
points float32 [H, W, 3], camera-frame point map (OpenCV axes), inf for sky; instance int32
[H, W], the object's index in scene.objects or -1 for ground and sky; and per-object ground truth
(`ObjectInfo`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from spatialgeo_core.synthetic.camera import Camera
from spatialgeo_core.synthetic.scene import PALETTE, Scene, SceneConfig, SceneObject, sample_scene

_EPS = 1e-9
_TINY = 1e-12
HAZE_DISTANCE_M = 80.0          # ground colour fades to the horizon colour over this distance


@dataclass(frozen=True)
class ObjectInfo:
    """Ground truth of one object of a rendered scene (world frame as in camera.py)."""

    index: int                                     # position in scene.objects and instance id
    shape: str
    color: str
    center_world: tuple[float, float, float]       # centre of the world bounding box
    center_camera: tuple[float, float, float]      # the same point in the camera frame
    size: tuple[float, float, float]               # (width, height, depth), metres
    volume: float                                  # of the solid, m^3
    aabb_min: tuple[float, float, float]           # world axis-aligned bounding box
    aabb_max: tuple[float, float, float]
    pixel_count: int                               # visible pixels (instance == index)
    box2d: tuple[int, int, int, int] | None        # visible pixels' [x1, y1, x2, y2), None if 0
    visible_fraction: float                        # visible / pixels it would cover unoccluded
    truncated: bool                                # its silhouette touches the image border

    def to_dict(self) -> dict:
        return {
            "index": self.index, "shape": self.shape, "color": self.color,
            "center_world": list(self.center_world), "center_camera": list(self.center_camera),
            "size": {"width": self.size[0], "height": self.size[1], "depth": self.size[2]},
            "volume": self.volume, "aabb_min": list(self.aabb_min),
            "aabb_max": list(self.aabb_max), "pixel_count": self.pixel_count,
            "box2d": None if self.box2d is None else list(self.box2d),
            "visible_fraction": self.visible_fraction, "truncated": self.truncated,
        }


@dataclass
class Rendering:
    scene: Scene
    rgb: np.ndarray            # [H, W, 3] uint8
    depth: np.ndarray          # [H, W] float32, metres (z-depth), inf for sky
    points: np.ndarray         # [H, W, 3] float32, camera frame, inf for sky
    instance: np.ndarray       # [H, W] int32, -1 for background
    objects: tuple[ObjectInfo, ...]

    @property
    def camera(self) -> Camera:
        return self.scene.camera

    def mask(self, index: int) -> np.ndarray:
        """[H, W] bool visible mask of object `index`."""
        return self.instance == index


# ------------------------------------------------------------------------------------------
# Ray / solid intersections. o: ray origin relative to the solid's reference point (3 floats);
# d*: [h, w] world ray directions. Each returns (t, nx, ny, nz): t = inf where the ray misses.

def _finish(t: np.ndarray, ox: float, oy: float, oz: float, dx, dy, dz):
    """Hit points relative to the reference point, zero where the ray misses."""
    ts = np.where(np.isfinite(t), t, 0.0)
    return ox + ts * dx, oy + ts * dy, oz + ts * dz


def _sphere(obj: SceneObject, o, dx, dy, dz):
    r = 0.5 * obj.dims[0]
    ox, oy, oz = o[0] - obj.x, o[1] - obj.y, o[2] - (obj.base_z + r)
    a = dx * dx + dy * dy + dz * dz
    b = ox * dx + oy * dy + oz * dz
    c = ox * ox + oy * oy + oz * oz - r * r
    disc = b * b - a * c
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    t = np.where((disc >= 0) & (t > _EPS), t, np.inf)
    px, py, pz = _finish(t, ox, oy, oz, dx, dy, dz)
    return t, px / r, py / r, pz / r


def _caps(o, dx, dy, dz, ox, oy, radius, z_caps):
    """Nearest hit of horizontal discs of `radius` at heights z_caps; (t, sign of normal)."""
    best = np.full(dx.shape, np.inf)
    normal_z = np.zeros(dx.shape)
    safe_dz = np.where(np.abs(dz) < _TINY, _TINY, dz)
    for zc, nz in z_caps:
        t = (zc - o[2]) / safe_dz
        px, py = ox + t * dx, oy + t * dy
        ok = (t > _EPS) & (px * px + py * py <= radius * radius) & (t < best)
        best = np.where(ok, t, best)
        normal_z = np.where(ok, nz, normal_z)
    return best, normal_z


def _cylinder(obj: SceneObject, o, dx, dy, dz):
    r, z0, z1 = 0.5 * obj.dims[0], obj.base_z, obj.base_z + obj.dims[2]
    ox, oy = o[0] - obj.x, o[1] - obj.y
    a = dx * dx + dy * dy
    b = ox * dx + oy * dy
    c = ox * ox + oy * oy - r * r
    disc = b * b - a * c
    safe_a = np.where(a < _TINY, _TINY, a)
    t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / safe_a
    z = o[2] + t_side * dz
    side_ok = (disc >= 0) & (a >= _TINY) & (t_side > _EPS) & (z >= z0) & (z <= z1)
    t_side = np.where(side_ok, t_side, np.inf)
    t_cap, cap_nz = _caps(o, dx, dy, dz, ox, oy, r, ((z1, 1.0), (z0, -1.0)))
    use_cap = t_cap < t_side
    t = np.where(use_cap, t_cap, t_side)
    px, py, _ = _finish(t, ox, oy, 0.0, dx, dy, dz)
    nx = np.where(use_cap, 0.0, px / r)
    ny = np.where(use_cap, 0.0, py / r)
    nz = np.where(use_cap, cap_nz, 0.0)
    return t, nx, ny, nz


def _cone(obj: SceneObject, o, dx, dy, dz):
    r, h = 0.5 * obj.dims[0], obj.dims[2]
    z0, z1 = obj.base_z, obj.base_z + h
    k2 = (r / h) ** 2
    ox, oy = o[0] - obj.x, o[1] - obj.y
    w0 = z1 - o[2]                                   # apex height above the ray origin
    a = dx * dx + dy * dy - k2 * dz * dz
    b = ox * dx + oy * dy + k2 * w0 * dz
    c = ox * ox + oy * oy - k2 * w0 * w0
    disc = b * b - a * c
    sq = np.sqrt(np.maximum(disc, 0.0))
    small = np.abs(a) < _TINY
    safe_a = np.where(small, 1.0, a)
    safe_b = np.where(np.abs(b) < _TINY, _TINY, b)
    roots = (np.where(small, -c / (2.0 * safe_b), (-b - sq) / safe_a),
             np.where(small, np.inf, (-b + sq) / safe_a))
    t_side = np.full(dx.shape, np.inf)
    for t in roots:
        z = o[2] + t * dz
        ok = (disc >= 0) & (t > _EPS) & (z >= z0) & (z <= z1) & (t < t_side)
        t_side = np.where(ok, t, t_side)
    t_cap, cap_nz = _caps(o, dx, dy, dz, ox, oy, r, ((z0, -1.0),))
    use_cap = t_cap < t_side
    t = np.where(use_cap, t_cap, t_side)
    px, py, _ = _finish(t, ox, oy, 0.0, dx, dy, dz)
    rho = np.sqrt(px * px + py * py)
    rho = np.where(rho < _TINY, _TINY, rho)
    norm = math.sqrt(1.0 + k2)
    k = math.sqrt(k2)
    nx = np.where(use_cap, 0.0, px / rho / norm)
    ny = np.where(use_cap, 0.0, py / rho / norm)
    nz = np.where(use_cap, cap_nz, k / norm)
    return t, nx, ny, nz


def _box(obj: SceneObject, o, dx, dy, dz):
    yaw = math.radians(obj.yaw_deg)
    cs, sn = math.cos(yaw), math.sin(yaw)
    ox, oy, oz = o[0] - obj.x, o[1] - obj.y, o[2] - (obj.base_z + 0.5 * obj.dims[2])
    lo = (cs * ox + sn * oy, -sn * ox + cs * oy, oz)                # origin, box frame
    ld = (cs * dx + sn * dy, -sn * dx + cs * dy, dz)                # directions, box frame
    t_near, t_far = [], []
    for axis in range(3):
        half = 0.5 * obj.dims[axis]
        d = np.where(np.abs(ld[axis]) < _TINY, _TINY, ld[axis])
        t1, t2 = (-half - lo[axis]) / d, (half - lo[axis]) / d
        t_near.append(np.minimum(t1, t2))
        t_far.append(np.maximum(t1, t2))
    near = np.stack(t_near)                                         # [3, h, w]
    tmin = near.max(axis=0)
    tmax = np.minimum(np.minimum(t_far[0], t_far[1]), t_far[2])
    t = np.where((tmax >= tmin) & (tmin > _EPS), tmin, np.inf)
    axis = near.argmax(axis=0)                                      # [h, w] face axis
    lnx = np.where(axis == 0, -np.sign(ld[0]), 0.0)
    lny = np.where(axis == 1, -np.sign(ld[1]), 0.0)
    lnz = np.where(axis == 2, -np.sign(ld[2]), 0.0)
    return t, cs * lnx - sn * lny, sn * lnx + cs * lny, lnz


_INTERSECT = {"sphere": _sphere, "cylinder": _cylinder, "cone": _cone, "box": _box}


def intersect(obj: SceneObject, origin, dx, dy, dz):
    """(t, nx, ny, nz) of the rays origin + t * d with a solid (t = inf where they miss)."""
    return _INTERSECT[obj.shape](obj, origin, dx, dy, dz)


def _bbox_corners(obj: SceneObject) -> np.ndarray:
    lo, hi = obj.aabb
    return np.array(np.meshgrid([lo[0], hi[0]], [lo[1], hi[1]], [lo[2], hi[2]],
                                indexing="ij")).reshape(3, 8).T                # [8, 3]


def screen_rect(camera: Camera, obj: SceneObject) -> tuple[int, int, int, int] | None:
    """(row0, row1, col0, col1), end exclusive, bounding the object's projection; None when it
    lies outside the image. The whole image when part of the object is behind the camera."""
    corners = camera.world_to_camera(_bbox_corners(obj))                       # [8, 3]
    if corners[:, 2].min() <= 1e-6:
        return 0, camera.height, 0, camera.width
    uv = camera.project(corners)                                              # [8, 2]
    c0 = max(0, int(math.floor(uv[:, 0].min())) - 1)
    c1 = min(camera.width, int(math.ceil(uv[:, 0].max())) + 2)
    r0 = max(0, int(math.floor(uv[:, 1].min())) - 1)
    r1 = min(camera.height, int(math.ceil(uv[:, 1].max())) + 2)
    if c0 >= c1 or r0 >= r1:
        return None
    return r0, r1, c0, c1


# ------------------------------------------------------------------------------------------
# Rendering

def _sky(style, dx, dy, dz) -> np.ndarray:
    elevation = dz / np.sqrt(dx * dx + dy * dy + dz * dz)
    s = np.sqrt(np.clip(elevation, 0.0, 1.0))[..., None]                      # [H, W, 1]
    horizon = np.asarray(style.sky_horizon_rgb, dtype=np.float64)
    zenith = np.asarray(style.sky_zenith_rgb, dtype=np.float64)
    return horizon * (1.0 - s) + zenith * s                                   # [H, W, 3]


def _ground(scene: Scene, gx, gy, dist) -> np.ndarray:
    style = scene.style
    tile = style.tile_size_m
    parity = (np.floor(gx / tile) + np.floor(gy / tile)) % 2.0
    p0, p1 = style.texture_phase
    noise = (0.05 * np.sin(1.7 * gx + p0) * np.sin(2.3 * gy + p1)
             + 0.03 * np.sin(7.1 * gx + 3.3 * gy + p1))
    sun = np.asarray(style.sun_dir)
    light = style.ambient + (1.0 - style.ambient) * max(sun[2], 0.0)
    brightness = light * (1.0 + style.tile_contrast * (parity - 0.5) + noise)
    for obj in scene.objects:                                    # soft blob shadows
        w, h, d = obj.size
        cz = obj.base_z + 0.5 * h
        sx = obj.x - sun[0] / max(sun[2], 0.2) * cz
        sy = obj.y - sun[1] / max(sun[2], 0.2) * cz
        rx, ry = 0.5 * w + 0.05, 0.5 * d + 0.05
        q = ((gx - sx) / rx) ** 2 + ((gy - sy) / ry) ** 2
        strength = 0.55 / (1.0 + 2.0 * obj.base_z)
        brightness = brightness * (1.0 - strength * np.clip(1.2 - q, 0.0, 1.0))
    albedo = np.asarray(style.ground_rgb, dtype=np.float64)
    color = brightness[..., None] * albedo                                    # [h, w, 3]
    haze = (1.0 - np.exp(-dist / HAZE_DISTANCE_M))[..., None]
    return color * (1.0 - haze) + np.asarray(style.sky_horizon_rgb, dtype=np.float64) * haze


def render(scene: Scene) -> Rendering:
    """Ray-cast a scene (see the module docstring for the outputs)."""
    cam = scene.camera
    H, W = cam.height, cam.width
    rays_c = cam.rays                                                         # [H, W, 3]
    rays_w = rays_c @ cam.rotation.T                                          # [H, W, 3]
    dx, dy, dz = (np.ascontiguousarray(rays_w[..., i]) for i in range(3))     # [H, W] each
    origin = cam.position

    downward = dz < -_TINY
    depth = np.where(downward, -origin[2] / np.where(downward, dz, -1.0), np.inf)   # ground
    instance = np.full((H, W), -1, dtype=np.int32)
    light = np.zeros((H, W))                                                  # object shading
    sun = np.asarray(scene.style.sun_dir)
    ambient = scene.style.ambient

    unoccluded = np.zeros(len(scene.objects), dtype=np.int64)
    truncated = np.zeros(len(scene.objects), dtype=bool)
    rects: list[tuple[int, int, int, int] | None] = []
    for i, obj in enumerate(scene.objects):
        rect = screen_rect(cam, obj)
        rects.append(rect)
        if rect is None:
            continue
        r0, r1, c0, c1 = rect
        win = (slice(r0, r1), slice(c0, c1))
        t, nx, ny, nz = intersect(obj, origin, dx[win], dy[win], dz[win])
        hit = np.isfinite(t)
        unoccluded[i] = int(hit.sum())
        truncated[i] = bool((r0 == 0 and hit[0].any()) or (r1 == H and hit[-1].any())
                            or (c0 == 0 and hit[:, 0].any()) or (c1 == W and hit[:, -1].any()))
        closer = t < depth[win]
        depth[win] = np.where(closer, t, depth[win])
        instance[win] = np.where(closer, i, instance[win])
        lambert = np.maximum(nx * sun[0] + ny * sun[1] + nz * sun[2], 0.0)
        light[win] = np.where(closer, ambient + (1.0 - ambient) * lambert, light[win])

    rgb = np.empty((H, W, 3))
    sky = ~np.isfinite(depth)
    ground = ~sky & (instance < 0)
    rgb[sky] = _sky(scene.style, dx[sky], dy[sky], dz[sky])
    if ground.any():
        t = depth[ground]
        gx, gy = origin[0] + t * dx[ground], origin[1] + t * dy[ground]
        rgb[ground] = _ground(scene, gx, gy, np.hypot(gx, gy))
    if scene.objects:
        albedo = np.array([PALETTE[o.color] for o in scene.objects], dtype=np.float64)
        obj_px = instance >= 0
        rgb[obj_px] = albedo[instance[obj_px]] * light[obj_px][:, None]
    rgb_u8 = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)

    points = np.where(sky[..., None], np.inf,
                      rays_c * np.where(sky, 0.0, depth)[..., None])          # [H, W, 3]
    counts = np.bincount(instance.ravel() + 1, minlength=len(scene.objects) + 1)[1:]
    infos = []
    for i, obj in enumerate(scene.objects):
        box = None
        if counts[i] > 0:
            r0, r1, c0, c1 = rects[i]
            m = instance[r0:r1, c0:c1] == i
            rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
            box = (c0 + int(cols[0]), r0 + int(rows[0]), c0 + int(cols[-1]) + 1,
                   r0 + int(rows[-1]) + 1)
        lo, hi = obj.aabb
        center = obj.center
        infos.append(ObjectInfo(
            index=i, shape=obj.shape, color=obj.color,
            center_world=tuple(float(v) for v in center),
            center_camera=tuple(float(v) for v in cam.world_to_camera(center)),
            size=tuple(float(v) for v in obj.size), volume=float(obj.volume),
            aabb_min=tuple(float(v) for v in lo), aabb_max=tuple(float(v) for v in hi),
            pixel_count=int(counts[i]), box2d=box,
            visible_fraction=float(counts[i] / unoccluded[i]) if unoccluded[i] else 0.0,
            truncated=bool(truncated[i])))
    return Rendering(scene, rgb_u8, depth.astype(np.float32), points.astype(np.float32),
                     instance, tuple(infos))


def benchmark(n: int = 200, size: int = 128, seed: int = 0,
              config: SceneConfig | None = None) -> float:
    """Images per second of sampling and rendering n scenes of size x size on this machine."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    cfg = config or SceneConfig(width=size, height=size)
    start = time.perf_counter()
    for i in range(n):
        render(sample_scene(np.random.default_rng([seed, i]), cfg))
    return n / (time.perf_counter() - start)
