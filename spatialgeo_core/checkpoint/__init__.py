"""Reading the published checkpoints (LLaVA, SpatialGeo release, MoGe, CLIP) and our own format."""
