"""From LoadOptions to a served model: the device and dtype, the checkpoint, and the one function
that builds, quantises and moves a model (`build_served_model`), used by
`SpatialGeoPipeline.from_pretrained` (the CLI, the node, the evaluations) and by the benchmarks
(random weights at any size).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch

from spatialgeo_core.checkpoint.convert import assemble
from spatialgeo_core.checkpoint.ours import is_ours, load_weights, read_ours
from spatialgeo_core.config import SpatialGeoConfig
from spatialgeo_core.dtypes import default_dtype, torch_dtype
from spatialgeo_core.errors import CheckpointError, InvalidRequestError
from spatialgeo_core.load_options import LoadOptions
from spatialgeo_core.model import SpatialGeoForCausalLM, build_empty
from spatialgeo_core.optional import require
from spatialgeo_core.quantize import quantize_llm
from spatialgeo_core.tokenizer import LlamaTokenizer

log = logging.getLogger(__name__)


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" (cuda when available, else cpu), "cpu", "cuda" or "cuda:N" -> torch.device, after
    checking that it exists here (InvalidRequestError otherwise)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise InvalidRequestError(f"device {device!r} is not cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidRequestError(f"device {device!r} was asked for but CUDA is not "
                                      "available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InvalidRequestError(f"device {device!r}: this machine has "
                                      f"{torch.cuda.device_count()} CUDA device(s)")
    return dev


def runtime(options: LoadOptions) -> tuple[torch.device, torch.dtype]:
    """The device and dtype `options` ask for, after checking that this machine has them and the
    optional packages they need (MissingDependencyError naming the pip extra)."""
    dev = resolve_device(options.device)
    if options.attn_implementation == "flash_attention_2":
        require("flash_attn")
    if options.bits:
        require("bitsandbytes")
    return dev, torch_dtype(options.dtype) if options.dtype else default_dtype(dev)


def build_served_model(cfg: SpatialGeoConfig, options: LoadOptions, *,
                       weights: dict[str, torch.Tensor] | None = None,
                       init: Callable[[SpatialGeoForCausalLM], None] | None = None,
                       what: str = "the model") -> SpatialGeoForCausalLM:
    """A model for `cfg` as `options` serve it: allocated in its dtype without random init,
    filled with `weights` (loaded strictly, then the dict is emptied) or by `init` (the
    benchmarks' random weights), its LLM quantised when asked, on its device, in eval mode.

    A checkpoint's weights are on the CPU: a model to be quantised is filled there and only its
    quantised LLM reaches the device, so a small GPU never holds the full-precision LLM. Weights
    made by `init` are made on the device (fast on a GPU) and quantised there.
    """
    if (weights is None) == (init is None):
        raise ValueError("give exactly one of weights and init")
    dev, dtype = runtime(options)
    where = torch.device("cpu") if options.bits and weights is not None else dev
    model = build_empty(cfg, dtype, where, options.attn_implementation)
    if weights is not None:
        load_weights(model, weights, what)
        weights.clear()                # consumed: a second copy of the weights is freed here
    else:
        init(model)
    if options.bits:
        n = quantize_llm(model.llm, options.bits, dtype, dev)
        log.info("quantised %d LLM linear layers to %d-bit", n, options.bits)
    model.to(dev)
    if options.bits and dev.type == "cuda":
        torch.cuda.empty_cache()       # the full-precision weights the quantised ones replaced
    return model.eval()


def read_checkpoint(path: Path, clip_dir: str | Path | None = None
                    ) -> tuple[SpatialGeoConfig, dict[str, torch.Tensor], Path]:
    """(config, tensors, tokenizer directory) of our format, or of a merged upstream SpatialGeo
    directory (+ clip_dir when it has no CLIP tensors)."""
    if is_ours(path):
        cfg, tensors = read_ours(path)
        return cfg, tensors, path
    asm = assemble(path, clip_dir=clip_dir)
    return asm.config, asm.tensors, asm.tokenizer_dir


def load_model(options: LoadOptions) -> tuple[SpatialGeoForCausalLM, LlamaTokenizer]:
    """The model and tokenizer of `options.path`, built as `options` ask."""
    if not options.path:
        raise CheckpointError("no model path given: pass a model directory (the CLI's "
                              "--model-path and the node's model.path default to the embedded "
                              "model)")
    path = Path(options.path)
    if not path.is_dir():
        raise CheckpointError(f"model path {path} is not a directory")
    runtime(options)                 # a missing device or package fails before the weights load
    cfg, tensors, tok_dir = read_checkpoint(path, options.clip_dir)
    model = build_served_model(cfg, options, weights=tensors, what=str(path))
    return model, LlamaTokenizer.from_dir(tok_dir)
