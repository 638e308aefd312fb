"""Makes docs/annotated_example.png, the README's picture of the annotated image: a held-out scene
of the synthetic world (the demo model's world), its registered depth as a 16-bit PNG in
millimetres, and `spatialgeo ask --depth --intrinsics --annotate` with the embedded default model.

    python docs/annotated_example.py [OUT.png]
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PIL import Image

from spatialgeo_core.cli import main
from spatialgeo_core.demo.data import DemoWorld
from spatialgeo_core.synthetic import make_sample
from spatialgeo_core.synthetic.depth_truth import depth_array

FIRST_SCENE = 7                             # the demo's first held-out scene (default_model.py)


def make(out: Path) -> int:
    index = FIRST_SCENE
    while True:                             # the first held-out scene with a distance question
        sample = make_sample(0, "test", index, DemoWorld(seed=0).test_config())
        distance = [q for q in sample.qas if q.category == "distance_data"]
        if distance:
            break
        index += 1
    r, cam, qa = sample.rendering, sample.rendering.camera, distance[0]
    with tempfile.TemporaryDirectory() as tmp:
        Image.fromarray(sample.rgb).save(Path(tmp) / "rgb.png")
        Image.fromarray(depth_array(r, "16UC1")).save(Path(tmp) / "depth.png")
        argv = ["ask", "--image", str(Path(tmp) / "rgb.png"), "--question", qa.question,
                "--depth", str(Path(tmp) / "depth.png"),
                "--intrinsics", f"{cam.fx:.3f},{cam.fy:.3f},{cam.cx},{cam.cy}",
                "--max-new-tokens", "64", "--annotate", str(out)]
        for obj in qa.regions:
            argv += ["--region", ",".join(str(v) for v in r.objects[obj].box2d)]
        print("spatialgeo " + " ".join(argv))
        return main(argv)


if __name__ == "__main__":
    sys.exit(make(Path(sys.argv[1]) if len(sys.argv) > 1 else
                  Path(__file__).with_name("annotated_example.png")))
