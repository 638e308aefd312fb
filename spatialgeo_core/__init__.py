"""SpatialGeo: a spatial-reasoning multimodal LLM (CLIP + MoGe geometry + LLaVA-1.5), pure Python.

Never imports ROS. Entry points: `spatialgeo_core.pipeline.SpatialGeoPipeline` (serving),
`spatialgeo_core.model.SpatialGeoForCausalLM` (the model), the `spatialgeo` CLI.
"""

__version__ = "0.1.0"
