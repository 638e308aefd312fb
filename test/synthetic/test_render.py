"""Synthetic world: camera frames, scene sampling and the ray caster's geometry, masks and
determinism."""
import math

import numpy as np
import pytest

from spatialgeo_core.synthetic import (
    PALETTE,
    Camera,
    Scene,
    SceneConfig,
    SceneObject,
    benchmark,
    render,
    sample_scene,
)
from spatialgeo_core.synthetic.render import screen_rect

SEEDS = range(12)


@pytest.fixture(scope="module")
def renderings():
    return [render(sample_scene(seed)) for seed in SEEDS]


def _world_points(r):
    """[H, W, 3] world coordinates of the point map, nan for sky."""
    ok = np.isfinite(r.depth)
    world = np.full(r.points.shape, np.nan)
    world[ok] = r.camera.camera_to_world(r.points[ok].astype(np.float64))
    return world


def test_same_seed_gives_identical_scene_images_and_metadata():
    a, b = render(sample_scene(123)), render(sample_scene(123))
    assert a.scene == b.scene
    for name in ("rgb", "depth", "points", "instance"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.objects == b.objects
    c = render(sample_scene(124))
    assert c.scene != a.scene and not np.array_equal(c.rgb, a.rgb)


def test_outputs_have_the_documented_types(renderings):
    for r in renderings:
        H, W = r.camera.height, r.camera.width
        assert r.rgb.shape == (H, W, 3) and r.rgb.dtype == np.uint8
        assert r.depth.shape == (H, W) and r.depth.dtype == np.float32
        assert r.points.shape == (H, W, 3) and r.points.dtype == np.float32
        assert r.instance.shape == (H, W) and r.instance.dtype == np.int32
        assert r.instance.min() >= -1 and r.instance.max() < len(r.scene.objects)
        sky = ~np.isfinite(r.depth)
        assert sky.any() and (~sky).any()                    # the horizon is in every view
        assert np.all(np.isposinf(r.depth[sky])) and np.all(np.isposinf(r.points[sky]))
        assert np.all(r.instance[sky] == -1) and np.all(r.depth[~sky] > 0)


def test_depth_back_projects_to_the_point_map(renderings):
    for r in renderings:
        cam = r.camera
        np.testing.assert_allclose(cam.backproject(r.depth), r.points, rtol=1e-6, atol=1e-6)
        ok = np.isfinite(r.depth)
        np.testing.assert_array_equal(r.points[..., 2][ok], r.depth[ok])   # z of points = depth
        # projecting the points with K gives back each pixel's own coordinates
        uv = cam.project(r.points[ok].astype(np.float64))
        rows, cols = np.nonzero(ok)
        np.testing.assert_allclose(uv[:, 0], cols, atol=1e-3)
        np.testing.assert_allclose(uv[:, 1], rows, atol=1e-3)


def _surface_error(obj: SceneObject, p: np.ndarray) -> np.ndarray:
    """Distance-like error of world points p [N, 3] from the surface of obj."""
    x, y, z = p[:, 0] - obj.x, p[:, 1] - obj.y, p[:, 2]
    sx, sy, sz = obj.dims
    z0, z1 = obj.base_z, obj.base_z + sz
    if obj.shape == "sphere":
        return np.abs(np.sqrt(x ** 2 + y ** 2 + (z - z0 - sx / 2) ** 2) - sx / 2)
    if obj.shape == "box":
        c, s = math.cos(math.radians(obj.yaw_deg)), math.sin(math.radians(obj.yaw_deg))
        q = np.stack([np.abs(c * x + s * y) - sx / 2, np.abs(-s * x + c * y) - sy / 2,
                      np.abs(z - (z0 + z1) / 2) - sz / 2], axis=1)
        return np.abs(np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(axis=1), 0))
    rho, r = np.hypot(x, y), sx / 2
    if obj.shape == "cylinder":
        q = np.stack([rho - r, np.abs(z - (z0 + z1) / 2) - sz / 2], axis=1)
        return np.abs(np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(axis=1), 0))
    side = np.abs(rho - r * (z1 - z) / sz) + np.maximum(z0 - z, 0) + np.maximum(z - z1, 0)
    base = np.abs(z - z0) + np.maximum(rho - r, 0)
    return np.minimum(side, base)


def test_every_pixel_lies_on_the_surface_it_shows(renderings):
    for r in renderings:
        world = _world_points(r)
        ground = np.isfinite(r.depth) & (r.instance == -1)
        np.testing.assert_allclose(world[ground][:, 2], 0.0, atol=2e-3 * r.depth[ground].max())
        for info, obj in zip(r.objects, r.scene.objects, strict=True):
            pts = world[r.instance == info.index]
            if len(pts):
                assert _surface_error(obj, pts).max() < 2e-3, (obj, info)


def test_masks_match_pixel_counts_and_boxes(renderings):
    for r in renderings:
        assert [o.index for o in r.objects] == list(range(len(r.scene.objects)))
        for info in r.objects:
            mask = r.mask(info.index)
            assert mask.sum() == info.pixel_count
            if info.pixel_count == 0:
                assert info.box2d is None
                continue
            rows, cols = np.nonzero(mask)
            assert info.box2d == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
            assert 0.0 < info.visible_fraction <= 1.0
            # the visible pixels show the object's colour: its albedo times one shading factor
            albedo = np.asarray(PALETTE[info.color], dtype=np.float64)
            bright = albedo >= 30
            scale = r.rgb[mask][:, bright] / albedo[bright]                     # [N, C]
            assert np.all(scale.max(axis=1) - scale.min(axis=1) <= 1.0 / albedo[bright].min())
            assert scale.min() >= r.scene.style.ambient - 0.6 / albedo[bright].min()


def test_objects_do_not_overlap_and_sizes_are_in_range():
    cfg = SceneConfig()
    for seed in range(40):
        scene = sample_scene(seed, cfg)
        assert len(scene.objects) >= 1
        assert len({o.color for o in scene.objects}) == len(scene.objects)
        for i, a in enumerate(scene.objects):
            assert all(0.2 - 1e-3 <= d <= 2.0 + 1e-3 for d in a.dims)
            assert cfg.distance_m[0] <= a.y <= cfg.distance_m[1]
            for b in scene.objects[i + 1:]:
                assert math.hypot(a.x - b.x, a.y - b.y) >= a.radius + b.radius


# ------------------------------------------------------------------------------------------
# A hand-placed scene

@pytest.fixture(scope="module")
def hand():
    cam = Camera.from_fov(65, 49, hfov_deg=60.0, height_m=1.5, pitch_deg=10.0)
    objects = (
        SceneObject("sphere", "red", -1.0, 4.0, 0.0, (0.6, 0.6, 0.6)),
        SceneObject("box", "blue", 1.0, 4.0, 0.0, (0.5, 0.4, 1.0)),
        SceneObject("cylinder", "green", -1.0, 7.0, 0.5, (0.5, 0.5, 2.0)),
        SceneObject("cone", "yellow", 1.2, 6.0, 0.0, (0.8, 0.8, 1.2)),
        SceneObject("box", "white", 0.0, 9.0, 0.0, (1.0, 0.5, 0.8), yaw_deg=30.0),
    )
    return render(Scene(cam, objects))


def test_camera_frames_of_a_hand_placed_scene(hand):
    cam = hand.camera
    assert cam.cx == 32.0 and cam.cy == 24.0
    assert cam.fx == pytest.approx(32.5 / math.tan(math.radians(30.0)))
    np.testing.assert_allclose(cam.K, [[cam.fx, 0, 32], [0, cam.fy, 24], [0, 0, 1]])
    # the optical axis meets the ground at z-depth h / sin(pitch)
    assert hand.instance[24, 32] == -1
    assert hand.depth[24, 32] == pytest.approx(1.5 / math.sin(math.radians(10.0)), rel=1e-6)
    # sphere centre (-1, 4, 0.3): offset (-1, 4, -1.2) from the camera
    th = math.radians(10.0)
    expected = (-1.0, -4 * math.sin(th) + 1.2 * math.cos(th),
                4 * math.cos(th) + 1.2 * math.sin(th))
    np.testing.assert_allclose(hand.objects[0].center_camera, expected, atol=1e-9)
    np.testing.assert_allclose(cam.camera_to_world(cam.world_to_camera([[1.0, 2.0, 3.0]])),
                               [[1.0, 2.0, 3.0]], atol=1e-12)
    # a world point straight ahead at the camera's height is on the image's centre row... when
    # pitch is 0; with pitch it is above the centre
    u, v = cam.project(cam.world_to_camera([0.0, 10.0, 1.5]))
    assert u == pytest.approx(32.0) and v < 24.0


def test_hand_placed_objects_ground_truth(hand):
    sphere, box, cyl, cone, turned = hand.objects
    assert sphere.center_world == (-1.0, 4.0, 0.3)
    assert box.size == (0.5, 1.0, 0.4) and box.center_world == (1.0, 4.0, 0.5)
    assert cyl.size == (0.5, 2.0, 0.5) and cyl.center_world == (-1.0, 7.0, 1.5)
    assert cyl.aabb_min == (-1.25, 6.75, 0.5) and cyl.aabb_max == (-0.75, 7.25, 2.5)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    np.testing.assert_allclose(turned.size, (c * 1.0 + s * 0.5, 0.8, s * 1.0 + c * 0.5))
    assert sphere.volume == pytest.approx(4 / 3 * math.pi * 0.3 ** 3)
    assert cone.volume == pytest.approx(math.pi * 0.16 * 1.2 / 3)
    for info in hand.objects:
        assert info.pixel_count > 0 and not info.truncated
    # the sphere's silhouette is symmetric about its centre's image column
    u = hand.camera.project(np.array(sphere.center_camera))[0]
    x1, _, x2, _ = sphere.box2d
    assert abs((x1 + x2 - 1) / 2 - u) <= 1.0


def test_screen_rect_bounds_the_silhouette(hand):
    for info, obj in zip(hand.objects, hand.scene.objects, strict=True):
        r0, r1, c0, c1 = screen_rect(hand.camera, obj)
        x1, y1, x2, y2 = info.box2d
        assert c0 <= x1 and x2 <= c1 and r0 <= y1 and y2 <= r1


def test_occlusion_keeps_the_nearer_object():
    cam = Camera.from_fov(64, 64, 60.0, 1.0, 5.0)
    near = SceneObject("box", "red", 0.0, 3.0, 0.0, (1.0, 0.5, 1.0))
    far = SceneObject("box", "blue", 0.0, 6.0, 0.0, (1.0, 0.5, 1.0))
    r = render(Scene(cam, (near, far)))
    assert r.objects[0].visible_fraction == 1.0
    assert r.objects[1].pixel_count == 0 and r.objects[1].box2d is None


def test_invalid_configs_name_their_field():
    with pytest.raises(ValueError, match="max_objects"):
        SceneConfig(min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="shapes"):
        SceneConfig(shapes=("torus",))
    with pytest.raises(ValueError, match="shape"):
        SceneObject("torus", "red", 0, 1, 0, (1, 1, 1))
    with pytest.raises(ValueError, match="yaw_deg"):
        SceneObject("sphere", "red", 0, 1, 0, (1, 1, 1), yaw_deg=10)
    with pytest.raises(ValueError, match="pitch_deg"):
        Camera(8, 8, 1.0, 1.0, 3.5, 3.5, 1.0, 95.0)
    with pytest.raises(ValueError, match="depth of shape"):
        Camera.from_fov(8, 8, 60, 1, 10).backproject(np.zeros((4, 4)))


def test_other_sizes_and_shape_subsets():
    cfg = SceneConfig(width=96, height=64, shapes=("box", "cone"), min_objects=3, max_objects=3)
    r = render(sample_scene(5, cfg))
    assert r.rgb.shape == (64, 96, 3)
    assert {o.shape for o in r.scene.objects} <= {"box", "cone"}


def test_benchmark_reports_a_rate():
    assert benchmark(n=3, size=32) > 0
