"""Process group, device and model wrapping for one process, `torchrun` (DDP / FSDP2) or `srun`.

The rank layout comes from the environment: torchrun's RANK / WORLD_SIZE / LOCAL_RANK, or, when a
job step is started by SLURM's `srun` directly, SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID (then
MASTER_ADDR and MASTER_PORT must be exported, as training/slurm_train.sbatch does). A single
process gets a one-rank gloo group on an in-memory store, so that the same collective and
state-dict code runs everywhere.
"""
from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from spatialgeo_core.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    created_group: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(*names: str) -> int | None:
    for n in names:
        v = os.environ.get(n)
        if v not in (None, ""):
            return int(v)
    return None


def rank_layout() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's or SLURM's environment, else (0, 1, 0)."""
    world = _env_int("WORLD_SIZE")
    if world is not None:
        return _env_int("RANK") or 0, world, _env_int("LOCAL_RANK") or 0
    ntasks = _env_int("SLURM_NTASKS")
    if ntasks and ntasks > 1 and os.environ.get("MASTER_ADDR"):
        return _env_int("SLURM_PROCID") or 0, ntasks, _env_int("SLURM_LOCALID") or 0
    return 0, 1, 0


def setup(device_pref: str) -> DistEnv:
    rank, world, local = rank_layout()
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device: cuda was asked for but CUDA is not available")
    use_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    if use_cuda:
        # srun with per-task GPU binding shows each task one device; torchrun shows all of them
        device = torch.device("cuda", local if torch.cuda.device_count() > 1 else 0)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        device = torch.device("cpu")
    created = False
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    elif world > 1:
        os.environ.setdefault("RANK", str(rank))
        os.environ.setdefault("WORLD_SIZE", str(world))
        backend = "cuda:nccl,cpu:gloo" if use_cuda else "gloo"
        dist.init_process_group(backend=backend, init_method="env://", rank=rank,
                                world_size=world)
        created = True
    else:
        backend = "cuda:nccl,cpu:gloo" if use_cuda else "gloo"
        dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
        created = True
    if rank == 0:
        log.info("%d process(es), device %s", world, device)
    return DistEnv(rank, world, local, device, created)


def teardown(env: DistEnv) -> None:
    if env.created_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_objects(obj: Any) -> list[Any]:
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    dist.barrier()


def wrap_ddp(model: nn.Module, env: DistEnv) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel
    ids = [env.device.index] if env.device.type == "cuda" else None
    # buffers (rotary frequencies, token layout) are computed identically on every rank: no need
    # to re-send them before each forward; newer torch renamed the switch
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        no_sync = {"forward_sync_buffers": False}
    else:
        no_sync = {"broadcast_buffers": False}
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=False,
                                   **no_sync)


def shard_fsdp2(model: nn.Module, env: DistEnv, bf16: bool) -> nn.Module:
    """FSDP2: one unit per LLaMA decoder layer, one per vision tower, the rest in the root unit.
    With bf16 the all-gathered parameters are bf16 and gradients are reduced in fp32."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    mesh = init_device_mesh(env.device.type, (env.world_size,))
    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
          if bf16 else MixedPrecisionPolicy())
    layers = [m for m in model.modules() if isinstance(m, LlamaDecoderLayer)]
    for layer in layers:
        fully_shard(layer, mesh=mesh, mp_policy=mp)
    for tower in (model.clip_tower, model.geo_tower):
        if tower is not None:
            fully_shard(tower, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    log.info("FSDP2: %d decoder layers sharded over %d ranks", len(layers), env.world_size)
    return model
