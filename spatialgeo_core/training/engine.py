"""The training loop: one process, DDP or FSDP2; exact resume; metrics; exports.

    init (our format) -> build_model -> stage (trainability, LoRA) -> DDP / FSDP2 -> AdamW + cosine
    for each optimizer step:
        the step's global batch (BatchPlan) -> this rank's `accum` micro-batches
        counts of supervised tokens / non-empty micro-batches all-reduced first, so every
        micro-batch loss gets its weight in the step loss before any backward (the weights do not
        depend on the number of ranks: N ranks compute what one process with the same global
        batch computes)
        forward (bf16 autocast on CUDA) -> backward (DDP no_sync / FSDP2 no gradient sync until the
        last micro-batch) -> clip -> step -> schedule
        metrics line (rank 0), checkpoint every `save_every` steps, on a stop signal (SIGTERM,
        SIGUSR1, SIGINT = Ctrl-C) and at the end

A run fails loudly (TrainingError: no "finished", nothing exported) when its loss or gradient
norm turns non-finite (the step is not applied) or when it finishes without one step having seen
a supervised token (every record skipped): an untrained or broken model is never exported.

Randomness that the run uses (LoRA dropout: the torch generator; feature dropping: its own
generator; python / numpy) is seeded per rank at the start and saved in every checkpoint, and the
data order is a function of (seed, epoch), so a resumed run repeats an uninterrupted one bit for
bit (same ranks, CPU).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from tqdm import tqdm

from spatialgeo_core.checkpoint.ours import build_model, read_ours
from spatialgeo_core.conversation import get_template
from spatialgeo_core.errors import CheckpointError, ConfigError, SpatialGeoError
from spatialgeo_core.optional import available, require
from spatialgeo_core.processor import Processor
from spatialgeo_core.tokenizer import LlamaTokenizer
from spatialgeo_core.training import checkpointing as ckpt
from spatialgeo_core.training import distributed as D
from spatialgeo_core.training.config import TrainConfig
from spatialgeo_core.training.data import (
    Batch,
    BatchPlan,
    Collator,
    LlavaDataset,
    MicroBatchSampler,
    SkipLog,
)
from spatialgeo_core.training.export import export_run
from spatialgeo_core.training.precision import use_bf16
from spatialgeo_core.training.stages import apply_stage, init_geo_adapter

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
SKIPPED = "skipped.json"
STATUS = "status.json"
EXPORT = "export"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class TrainingError(SpatialGeoError):
    """The run cannot produce a model: its loss went non-finite, or no step saw a supervised
    token. status.json says "failed"; nothing is exported."""


@dataclass
class TrainResult:
    status: str                         # "finished" | "paused" (checkpoint written; resumable)
    step: int
    total_steps: int
    output_dir: Path
    last_loss: float | None
    skipped: dict[str, int]
    checkpoint: Path | None
    exports: dict[str, Path] = field(default_factory=dict)
    stop_signal: str | None = None      # the signal that paused it ("SIGINT", ...), if one did


def lr_lambda(total_steps: int, warmup_steps: int, schedule: str) -> Callable[[int], float]:
    """HF `get_cosine_schedule_with_warmup` (0.5 cycles) or constant after a linear warmup."""
    def f(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return f


def _enable_activation_checkpointing(llm: torch.nn.Module) -> None:
    """Non-reentrant checkpointing of every decoder layer (transformers 5 renamed the method)."""
    kwargs = {"use_reentrant": False}
    if hasattr(llm, "activation_checkpointing_enable"):
        llm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def train(cfg: TrainConfig, on_step: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Run (or resume) the training described by `cfg`. `on_step(step, metrics)` is called on every
    rank after each optimizer step."""
    env = D.setup(cfg.run.device)
    try:
        return _Trainer(cfg, env, on_step).run()
    finally:
        D.teardown(env)


class _Trainer:
    def __init__(self, cfg: TrainConfig, env: D.DistEnv,
                 on_step: Callable[[int, dict], None] | None):
        self.cfg, self.env, self.on_step = cfg, env, on_step
        self.out = Path(cfg.output_dir)
        self.stop_requested = False
        self.stop_signal: str | None = None
        self.supervised_steps = 0           # optimizer steps that saw a supervised token
        self._last_saved: dict[str, torch.Tensor] = {}

    # ---- setup ---------------------------------------------------------------------------------
    def _build(self) -> None:
        cfg, env = self.cfg, self.env
        run = cfg.run
        self.bf16 = use_bf16(run.precision, env.device)
        self.mode = "fsdp" if run.distributed == "fsdp" else ("ddp" if env.world_size > 1
                                                              else "single")
        model_cfg, tensors = read_ours(cfg.init)
        self.model_cfg = dataclasses.replace(
            model_cfg, image_aspect_ratio=cfg.data.image_aspect_ratio,
            feature_drop_prob=cfg.stage.feature_drop_prob,
            max_length=cfg.data.max_length or model_cfg.max_length)
        # frozen weights in bf16 under autocast (they never receive updates); trained ones in fp32.
        # FSDP2 keeps one dtype per unit and casts with its mixed-precision policy instead.
        frozen_dtype = torch.bfloat16 if self.bf16 and self.mode != "fsdp" else torch.float32
        model = build_model(self.model_cfg, tensors, cfg.init, dtype=frozen_dtype, device="cpu")
        del tensors
        torch.manual_seed(cfg.seed)                     # LoRA init: identical on every rank
        init_geo_adapter(model, cfg.stage.geo_adapter_init, cfg.seed)
        if run.gradient_checkpointing:
            _enable_activation_checkpointing(model.llm)
        groups = apply_stage(model, cfg.stage, cfg.optim.weight_decay)
        name_of = {id(p): n for n, p in model.named_parameters()}
        for g in groups:
            for p in g["params"]:
                p.data = p.data.float()
        group_names = [{**{k: v for k, v in g.items() if k != "params"},
                        "names": [name_of[id(p)] for p in g["params"]]} for g in groups]
        self.trainable_names = sorted(n for g in group_names for n in g["names"])
        model.train()
        for tower in (model.clip_tower, model.geo_tower):
            if tower is not None:
                tower.eval()
        if self.mode == "fsdp":
            model = D.shard_fsdp2(model, env, self.bf16)
            self.fwd = model
        else:
            model.to(env.device)
            self.fwd = D.wrap_ddp(model, env) if self.mode == "ddp" else model
        self.model = model
        params = dict(model.named_parameters())
        self.params = [params[n] for n in self.trainable_names]
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(
            [{**{k: v for k, v in g.items() if k != "names"},
              "params": [params[n] for n in g["names"]]} for g in group_names],
            lr=group_names[0]["lr"], betas=tuple(o.betas), eps=o.eps, weight_decay=0.0)

        tokenizer = LlamaTokenizer.from_dir(cfg.init)
        processor = Processor(self.model_cfg, tokenizer)
        self.dataset = LlavaDataset(cfg.data.json_path, cfg.data.image_folder, processor,
                                    get_template(cfg.data.template))
        n = len(self.dataset)
        self.plan = BatchPlan([self.dataset.has_image(i) for i in range(n)],
                              [self.dataset.length(i) for i in range(n)],
                              o.global_batch_size, cfg.seed, cfg.data.group_by_modality)
        per_rank = o.per_device_batch_size * env.world_size
        if o.global_batch_size % per_rank:
            raise ConfigError(f"optim.global_batch_size: {o.global_batch_size} is not a multiple "
                              f"of per_device_batch_size x processes = {per_rank}")
        self.accum = o.global_batch_size // per_rank
        self.total_steps = o.max_steps or o.epochs * self.plan.steps_per_epoch
        self.warmup_steps = math.ceil(self.total_steps * o.warmup_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(self.total_steps, self.warmup_steps, o.schedule))
        self.collator = Collator(tokenizer.pad_id, self.model_cfg.clip.image_size,
                                 needs_dummy_image=True)
        self.drop_generator = torch.Generator(device=env.device)
        self.skips = SkipLog()
        if env.is_main:
            log.info("%d records, %d steps (%d per epoch), global batch %d = %d per device x %d "
                     "processes x %d accumulation, %s%s", n, self.total_steps,
                     self.plan.steps_per_epoch, o.global_batch_size, o.per_device_batch_size,
                     env.world_size, self.accum, self.mode,
                     ", bf16 autocast" if self.bf16 else ", fp32")

    def _seed_run(self) -> None:
        s = self.cfg.seed + 7919 * self.env.rank
        torch.manual_seed(s)
        random.seed(s)
        np.random.seed(s % 2**32)
        self.drop_generator.manual_seed(s + 1)

    # ---- resume --------------------------------------------------------------------------------
    def _resume(self) -> int:
        env = self.env
        path = None
        if env.is_main:
            path = ckpt.resolve_resume(self.cfg.run.resume, self.out)
        path = D.broadcast_object(None if path is None else str(path))
        if path is None:
            self._seed_run()
            return 0
        path = Path(path)
        state = ckpt.read_state(path)
        if state["global_batch_size"] != self.cfg.optim.global_batch_size:
            raise ConfigError(f"optim.global_batch_size: {self.cfg.optim.global_batch_size} "
                              f"differs from the checkpoint's {state['global_batch_size']} "
                              f"({path}); the data order would not continue")
        if state["total_steps"] != self.total_steps:
            log.warning("the schedule length changed: %d steps in %s, %d now",
                        state["total_steps"], path, self.total_steps)
        trainable = ckpt.read_trainable(path) if env.is_main else {}
        keys = D.broadcast_object(sorted(trainable) if env.is_main else None)
        missing = sorted(set(self.trainable_names) - set(keys))
        unexpected = sorted(set(keys) - set(self.trainable_names))
        if missing or unexpected:
            raise CheckpointError(f"{path} does not fit this stage: missing {missing[:5]}, "
                                  f"unexpected {unexpected[:5]}")
        load = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)
        set_model_state_dict(self.model, trainable, options=load)
        optim_state = ckpt.read_optimizer(path) if env.is_main else {}
        set_optimizer_state_dict(self.model, self.optimizer, optim_state, options=load)
        self.scheduler.load_state_dict(state["scheduler"])
        rngs = D.broadcast_object(ckpt.read_rng(path) if env.is_main else None)
        if len(rngs) == env.world_size:
            ckpt.restore_rng(rngs[env.rank], self.drop_generator, env.device)
        else:
            log.warning("checkpoint written by %d processes, resumed on %d: random states are "
                        "re-seeded, the run is no longer bit-exact", len(rngs), env.world_size)
            self._seed_run()
        # checkpoints written before this count was kept: each of their steps is counted
        self.supervised_steps = int(state.get("supervised_steps", state["step"]))
        if env.is_main:
            self.skips.merge(state.get("skipped", {}))
            self._truncate_metrics(state["step"])
            log.info("resumed from %s at step %d", path, state["step"])
        return int(state["step"])

    def _truncate_metrics(self, step: int) -> None:
        f = self.out / METRICS
        if not f.is_file():
            return
        keep = [ln for ln in f.read_text().splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= step]
        with ckpt.atomic_file(f) as tmp:
            tmp.write_text("".join(ln + "\n" for ln in keep))

    # ---- saving --------------------------------------------------------------------------------
    def _gather_trainable(self) -> dict[str, torch.Tensor]:
        full = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
        sd = get_model_state_dict(self.model, options=full)
        return {k: v for k, v in sd.items() if k in set(self.trainable_names)}

    def _save(self, step: int) -> tuple[Path, dict[str, torch.Tensor]]:
        full = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
        trainable = self._gather_trainable()
        optim_state = get_optimizer_state_dict(self.model, self.optimizer, options=full)
        rngs = D.gather_objects(ckpt.capture_rng(self.drop_generator, self.env.device))
        skips = D.gather_objects(self.skips.to_dict())
        target = ckpt.checkpoint_dir(self.out, step)
        if self.env.is_main:
            for s in skips[1:]:
                self.skips.merge(s)
            state = {"step": step, "total_steps": self.total_steps,
                     "world_size": self.env.world_size,
                     "global_batch_size": self.cfg.optim.global_batch_size,
                     "scheduler": self.scheduler.state_dict(), "skipped": self.skips.to_dict(),
                     "supervised_steps": self.supervised_steps, "trainable": len(trainable)}
            ckpt.write_checkpoint(target, trainable, optim_state, rngs, state,
                                  self.cfg.to_yaml())
            ckpt.prune_checkpoints(self.out, self.cfg.run.keep_checkpoints)
        D.barrier()
        return target, trainable

    # ---- the loop ------------------------------------------------------------------------------
    def _signal(self, signum, frame) -> None:
        self.stop_requested = True                # only a flag: logging is not signal-safe
        self.stop_signal = signal.Signals(signum).name
        if signum == signal.SIGINT:               # a second Ctrl-C stops at once
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def run(self) -> TrainResult:
        cfg, env = self.cfg, self.env
        if env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            ckpt.clean_stale(self.out)
            (self.out / "train_config.yaml").write_text(cfg.to_yaml())
        D.barrier()
        self._build()
        start = self._resume()
        stop = self.total_steps
        if cfg.run.max_steps_this_run:
            stop = min(stop, start + cfg.run.max_steps_this_run)
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            handlers = {s: signal.signal(s, self._signal) for s in STOP_SIGNALS}
        try:
            last_loss, step, saved = self._loop(start, stop)
        except TrainingError as exc:
            self._write_status({"status": "failed", "error": str(exc)})
            raise
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
        finished = step >= self.total_steps
        if finished and self.supervised_steps == 0:
            if env.is_main:
                self._report_skips()
            summary = self.skips.summary(len(self.dataset))
            exc = TrainingError(f"no step of the run saw a supervised token: {summary} (see "
                                f"{self.out / SKIPPED}); the untrained model is not exported")
            self._write_status({"status": "failed", "error": str(exc)})
            raise exc
        result = TrainResult("finished" if finished else "paused", step, self.total_steps,
                             self.out, last_loss, {}, None, stop_signal=self.stop_signal)
        if saved != step:
            result.checkpoint, trainable = self._save(step)
        else:
            result.checkpoint, trainable = ckpt.checkpoint_dir(self.out, step), self._last_saved
        if env.is_main:
            self._report_skips()
            result.skipped = {k: v for k, v in self.skips.counts().items() if v}
            if finished and cfg.run.export:
                result.exports = export_run(cfg.run.export, self.out / EXPORT, cfg.init, trainable,
                                            cfg.stage, cfg.run.export_dtype)
            self._write_status({"status": result.status, "step": step,   # last: "finished" =
                                "total_steps": self.total_steps,        # exported
                                "checkpoint": str(result.checkpoint),
                                "exports": {k: str(v) for k, v in result.exports.items()}})
            if not finished:
                log.warning("stopped at step %d of %d; run the same command again to resume",
                            step, self.total_steps)
        D.barrier()
        return result

    def _write_status(self, status: dict) -> None:
        if self.env.is_main:
            with ckpt.atomic_file(self.out / STATUS) as tmp:
                tmp.write_text(json.dumps(status) + "\n")

    def _diverged(self, what: str, value: float, step: int) -> TrainingError:
        last = ckpt.latest_checkpoint(self.out)
        lrs = ", ".join(f"{k} {v:g}" for k, v in dataclasses.asdict(self.cfg.stage.lr).items()
                        if v > 0)
        return TrainingError(
            f"the {what} is {value} at step {step}: the run diverged (stage.lr {lrs}); the "
            f"step was not applied and nothing is exported; last checkpoint: "
            f"{last if last is not None else 'none'}")

    def _loop(self, start: int, stop: int) -> tuple[float | None, int, int]:
        cfg, env = self.cfg, self.env
        loader = torch.utils.data.DataLoader(
            self.dataset, collate_fn=self.collator, num_workers=cfg.data.num_workers,
            batch_sampler=MicroBatchSampler(self.plan, start, stop, env.rank, env.world_size,
                                            cfg.optim.per_device_batch_size, self.accum),
            pin_memory=env.device.type == "cuda", generator=torch.Generator().manual_seed(0))
        metrics = tb = None
        if env.is_main:
            metrics = (self.out / METRICS).open("a")
            tb = self._tensorboard()
        bar = tqdm(total=self.total_steps, initial=start, unit="step", desc=cfg.stage.name,
                   disable=not (env.is_main and cfg.run.progress_bar), dynamic_ncols=True)
        autocast = (torch.autocast(env.device.type, dtype=torch.bfloat16) if self.bf16
                    else contextlib.nullcontext())
        last_loss, step, saved = None, start, -1
        try:
            it = iter(loader)
            for step in range(start, stop):
                t0 = time.perf_counter()
                micro: list[Batch] = [next(it) for _ in range(self.accum)]
                for b in micro:
                    for s in b.skipped:
                        self.skips.add(s)
                counts = torch.tensor([sum(b.num_tokens for b in micro),
                                       sum(b.num_samples > 0 for b in micro),
                                       sum(b.num_samples for b in micro),
                                       sum(len(b.skipped) for b in micro)],
                                      dtype=torch.float64, device=env.device)
                n_tok, n_micro, n_samples, n_skipped = D.all_reduce_sum(counts).tolist()
                loss_sum = torch.zeros((), dtype=torch.float64, device=env.device)
                for a, b in enumerate(micro):
                    loss_sum += self._micro_step(b.to(env.device), a, n_tok, n_micro, autocast)
                red = torch.stack([loss_sum, torch.tensor(float(self.stop_requested),
                                                          dtype=torch.float64, device=env.device)])
                loss, stop_flag = D.all_reduce_sum(red).tolist()
                if not math.isfinite(loss):
                    raise self._diverged("loss", loss, step + 1)
                grad_norm = None
                if n_tok > 0:
                    if cfg.optim.max_grad_norm > 0:
                        gn = torch.nn.utils.clip_grad_norm_(self.params, cfg.optim.max_grad_norm)
                        grad_norm = float(gn.full_tensor() if hasattr(gn, "full_tensor") else gn)
                        if not math.isfinite(grad_norm):
                            raise self._diverged("gradient norm", grad_norm, step + 1)
                    self.optimizer.step()
                    self.supervised_steps += 1
                self.optimizer.zero_grad(set_to_none=True)
                lrs = {g["name"]: g["lr"] for g in self.optimizer.param_groups}
                self.scheduler.step()
                done = step + 1
                last_loss = loss
                row = {"step": done, "epoch": round(done / self.plan.steps_per_epoch, 4),
                       "loss": loss, "lr": lrs, "grad_norm": grad_norm, "samples": int(n_samples),
                       "tokens": int(n_tok), "skipped": int(n_skipped),
                       "step_time_s": round(time.perf_counter() - t0, 4)}
                if metrics is not None and (done % cfg.run.log_every == 0 or done == stop):
                    metrics.write(json.dumps(row) + "\n")
                    metrics.flush()
                    if tb is not None:
                        tb.add_scalar("train/loss", loss, done)
                        for k, v in lrs.items():
                            tb.add_scalar(f"lr/{k}", v, done)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                if bar.disable and env.is_main and done % cfg.run.log_every == 0:
                    log.info("step %d/%d loss %.4f (%.2f s)", done, self.total_steps, loss,
                             row["step_time_s"])
                if self.on_step is not None:
                    self.on_step(done, row)
                must_stop = stop_flag > 0
                if must_stop and env.is_main:
                    log.warning("stop signal%s: checkpoint at step %d, then stop",
                                f" ({self.stop_signal})" if self.stop_signal else "", done)
                every = cfg.run.save_every
                if (every and done % every == 0) or must_stop or done == stop:
                    _, self._last_saved = self._save(done)
                    saved = done
                step = done
                if must_stop:
                    break
        finally:
            bar.close()
            if metrics is not None:
                metrics.close()
            if tb is not None:
                tb.close()
        return last_loss, step, saved

    def _micro_step(self, b: Batch, a: int, n_tok: float, n_micro: float,
                    autocast) -> torch.Tensor:
        """Forward + backward of one micro-batch; returns its (detached) share of the step loss."""
        last = a == self.accum - 1
        sync = contextlib.nullcontext()
        if self.mode == "ddp" and not last:
            sync = self.fwd.no_sync()
        elif self.mode == "fsdp":
            self.model.set_requires_gradient_sync(last)
        with sync:
            with autocast:
                out = self.fwd(input_ids=b.input_ids, pixel_values=b.pixel_values,
                               attention_mask=b.attention_mask,
                               labels=b.labels if b.num_tokens else None,
                               image_used=b.image_used, drop_generator=self.drop_generator)
            if b.num_tokens:
                w = (b.num_tokens / n_tok if self.cfg.optim.loss_average == "tokens"
                     else 1.0 / n_micro)
                term = out["loss"] * w
            else:                                 # null micro-batch: touch everything, weight 0
                term = out["logits"].sum() * 0.0
            # DDP and FSDP2 average gradients over ranks; the weights already sum to 1 over all
            (term * self.env.world_size).backward()
        return term.detach().to(torch.float64)

    def _tensorboard(self):
        want = self.cfg.run.tensorboard
        if want is False or (want is None and not available("tensorboard")):
            return None
        tb = require("torch.utils.tensorboard")
        return tb.SummaryWriter(log_dir=str(self.out / "tensorboard"))

    def _report_skips(self) -> None:
        n = len(self.dataset)
        msg = self.skips.summary(n)
        if self.skips.total:
            log.warning("%s (details in %s)", msg, self.out / SKIPPED)
        else:
            log.info(msg)
        with ckpt.atomic_file(self.out / SKIPPED) as tmp:
            tmp.write_text(json.dumps({"records": n, "skipped": self.skips.total,
                                       "counts": self.skips.counts(),
                                       "by_reason": self.skips.to_dict()}, indent=1) + "\n")
