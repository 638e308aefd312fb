"""pip install -e . : the pure-Python library (spatialgeo_core) and the ROS-free parts of
spatialgeo_ros.

Lower bounds only. On a machine without CUDA add `-c constraints-cpu.txt` so pip takes a CPU build
of PyTorch.
A ROS 2 workspace builds this repository with colcon through CMakeLists.txt instead (see README).
"""
from setuptools import find_packages, setup

extras = {
    "quant": ["bitsandbytes>=0.45"],
    "flash": ["flash-attn>=2.5"],
    "train": ["peft>=0.13", "pyyaml>=6", "tensorboard>=2.12"],
    "eval": ["rosbags>=0.10", "rosbags-image[opencv-headless]>=0.9", "matplotlib>=3.7",
             "pycocotools>=2.0.7"],
}
extras["test"] = sorted(
    {*extras["quant"], *extras["train"], *extras["eval"], "pytest>=7", "catkin_pkg>=1.0",
     "ruff>=0.5", "hypothesis>=6"}
)

setup(
    name="spatialgeo",
    version="0.1.0",
    description="SpatialGeo spatial-reasoning VLM (CLIP + MoGe geometry + LLaVA-1.5) "
                "with a ROS 2 front end",
    packages=find_packages(include=["spatialgeo_core", "spatialgeo_core.*", "spatialgeo_ros"]),
    package_data={"spatialgeo_core": ["assets/*", "assets/**/*", "demo/configs/*.yaml"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.3",
        # 4.56: StaticCache(config, max_cache_len) and a cache's `layers` (the static and the
        # prefix caches of serving), LlavaForConditionalGeneration.model (the benchmarks); the
        # test suite runs on 4.56.2 and on 5.25.0
        "transformers>=4.56",
        "safetensors>=0.4",
        "sentencepiece>=0.1.99",
        "protobuf>=3.20",
        "numpy>=1.24",
        "pillow>=9.5",
        "pyyaml>=6",
        "tqdm>=4.60",
    ],
    extras_require=extras,
    entry_points={"console_scripts": ["spatialgeo=spatialgeo_core.cli:main"]},
)
