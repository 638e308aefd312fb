"""A synthetic spatial world with exact 3D ground truth, and its SpatialRGPT-style questions.

- camera.py: pinhole camera; world frame (z up, +y ahead, +x right) and OpenCV camera frame.
- scene.py: boxes, spheres, cylinders and cones of named colours at metric poses; the sampler.
- render.py: numpy ray casting to RGB, depth, point map and instance masks; `benchmark`.
- questions.py: ground-truth conventions, templates for every SpatialRGPT-Bench category.
- world.py: reproducible samples (scene + rendering + questions) by (seed, split, index).
- writers.py: LLaVA JSON, SpatialRGPT-Bench JSON, ROS 2 bags + questions.jsonl.
- cli.py: `spatialgeo make-world`.
"""
from spatialgeo_core.synthetic.camera import Camera
from spatialgeo_core.synthetic.questions import (
    ALL_CATEGORIES,
    QA,
    CategoryCycle,
    center_distance,
    clock_hours,
    format_length,
    generate_qas,
    horizontal_distance,
    make_qa,
    relation_holds,
    vertical_distance,
)
from spatialgeo_core.synthetic.render import ObjectInfo, Rendering, benchmark, render
from spatialgeo_core.synthetic.scene import (
    PALETTE,
    SHAPES,
    Scene,
    SceneConfig,
    SceneObject,
    Style,
    sample_scene,
)
from spatialgeo_core.synthetic.world import (
    WorldConfig,
    WorldSample,
    iter_samples,
    make_sample,
    usable_objects,
)
from spatialgeo_core.synthetic.writers import (
    BagSummary,
    write_bag,
    write_bench_json,
    write_llava_json,
    write_scene_metadata,
)

__all__ = [
    "ALL_CATEGORIES", "PALETTE", "QA", "SHAPES", "BagSummary", "Camera", "CategoryCycle",
    "ObjectInfo", "Rendering", "Scene", "SceneConfig", "SceneObject", "Style", "WorldConfig",
    "WorldSample", "benchmark", "center_distance", "clock_hours", "format_length",
    "generate_qas", "horizontal_distance", "iter_samples", "make_qa", "make_sample",
    "relation_holds", "render", "sample_scene", "usable_objects", "vertical_distance",
    "write_bag", "write_bench_json", "write_llava_json", "write_scene_metadata",
]
