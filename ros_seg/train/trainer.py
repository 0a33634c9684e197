"""The training loop: data, forward, set criterion, AdamW step, logging, evaluation, checkpoints, resume.

One `Trainer` runs in every process (a single process, or each of torchrun's).
Per iteration: the next batch of the reproducible data stream, the model under
autocast when solver.amp is set (GPUs: bf16 where supported, else fp16 with a
GradScaler; CPUs: bf16 where the CPU has bf16 instructions, else full
precision), the set criterion in fp32, backward, clipping of the norm of all
gradients, the optimizer and learning-rate steps.

Rank 0 shows a progress bar (loss, learning rate, it/s, ETA), appends one JSON
line per logged iteration to `OUT/metrics.jsonl`, evaluates every
`eval_period` iterations and at the end (mIoU, PQ), and writes checkpoints
atomically: `OUT/model_{iteration:07d}.pt` every `checkpoint_period`
iterations and `OUT/model_final.pt` at the end; `OUT/last_checkpoint` names
the newest. With `best_metric` set, `OUT/model_best.pt` holds the weights of
the best evaluation so far (weights only; its extra names the iteration and
the score). A checkpoint holds the model config, class metadata and weights
(loadable by every ros_seg tool) and, under "extra", everything a resume
needs: iteration, optimizer, scheduler and scaler states, the random
generators of every process and the data position. Resuming restores all of
them, so the losses after a resume equal those of an uninterrupted run.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from ros_seg.data.cityscapes import CityscapesDataset
from ros_seg.data.transforms import TrainAugmentation
from ros_seg.models.backbones.imagenet_weights import load_imagenet_weights
from ros_seg.models.checkpoint import load_weights, read_checkpoint, save_checkpoint
from ros_seg.models.criteria.process_group_mean import all_reduce_mean
from ros_seg.models.families import model_family
from ros_seg.models.registry import load_model_config
from ros_seg.train.batching import PaddedBatchCollator, TrainSamples
from ros_seg.train.distributed import (
    DistributedContext,
    ShardedBatchSampler,
    barrier,
    init_distributed,
    wrap_model,
)
from ros_seg.train.evaluation import evaluate
from ros_seg.train.optimizer import WarmupSchedule, build_optimizer, build_scheduler, load_optimizer_state
from ros_seg.train.repeat_factors import describe_repeat_factors, image_repeat_factors
from ros_seg.train.rng_state import capture_rng_state, restore_rng_state
from ros_seg.train.train_config import TrainConfig

log = logging.getLogger(__name__)

LOG_FILE = "metrics.jsonl"
LAST_CHECKPOINT = "last_checkpoint"
FINAL_CHECKPOINT = "model_final.pt"
BEST_CHECKPOINT = "model_best.pt"
CONFIG_FILE = "train_config.json"


def checkpoint_name(iteration: int) -> str:
    """File name of the periodic checkpoint after `iteration` iterations."""
    return f"model_{iteration:07d}.pt"


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The checkpoint `out_dir/last_checkpoint` names, or None when there is none."""
    pointer = Path(out_dir) / LAST_CHECKPOINT
    if not pointer.is_file():
        return None
    return Path(out_dir) / pointer.read_text().strip()


def cpu_computes_bf16() -> bool:
    """True when this CPU has bf16 instructions (AVX512-BF16 or AMX), where bf16 autocast pays off.

    Without them PyTorch emulates bf16 and autocast would only cost time.
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast_precision(device: torch.device, amp: bool) -> tuple[bool, torch.dtype]:
    """(enabled, dtype) of the model's autocast when training with solver.amp = `amp` on `device`.

    GPUs: bf16 where supported, else fp16 (with a GradScaler). CPUs: bf16 when the
    CPU computes it natively (PEM-STDC1's training step 1.06 -> 0.73 s on one
    core of an AVX512-BF16 EPYC), else full precision.
    """
    if device.type == "cuda":
        return amp, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return amp and cpu_computes_bf16(), torch.bfloat16


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Trainer:
    """Trains one model from a `TrainConfig`.

    Args:
        config: the training configuration (its data.root must be set).
        out_dir: where logs and checkpoints go.
        device: "cpu" or "cuda".
        resume: continue from `out_dir/last_checkpoint` instead of starting afresh.
    """

    def __init__(self, config: TrainConfig, out_dir: str | Path, device: str = "cpu", resume: bool = False) -> None:
        if config.data.root is None:
            raise ValueError("no training data: give --data DIR or set data.root in the training config")
        self.config = config
        self.out_dir = Path(out_dir)
        self.context: DistributedContext = init_distributed(device)
        solver = config.solver
        if solver.batch_size % self.context.world_size:
            raise ValueError(
                f"solver.batch_size {solver.batch_size} is not divisible by the {self.context.world_size} processes"
            )
        self.batch_per_process = solver.batch_size // self.context.world_size

        self.model_config = load_model_config(config.model)
        torch.manual_seed(config.seed)  # the same initial weights in every process
        self.family = model_family(self.model_config)
        self.model, self.metadata = self.family.build(), self.family.metadata
        if not resume:  # a resume loads its own weights below
            if config.init_weights:  # the whole model, backbone included: ImageNet weights would be overwritten
                self._load_init_weights(config.init_weights)
            elif config.imagenet_weights:
                load_imagenet_weights(self.model.backbone, config.imagenet_weights)
        self.model.to(self.context.device).train()
        self.ddp_model = wrap_model(self.model, self.context)
        self.optimizer = build_optimizer(self.ddp_model, solver)
        self.scheduler = build_scheduler(self.optimizer, solver)
        self.amp_enabled, self.amp_dtype = autocast_precision(self.context.device, solver.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_enabled and self.amp_dtype == torch.float16)
        self.criterion = self.family.criterion(config.loss).to(self.context.device)

        data = config.data
        self.train_set = CityscapesDataset(data.root, data.train_split, data.task, metadata=self.metadata)
        self.val_set = (
            CityscapesDataset(data.root, data.val_split, data.task, metadata=self.metadata)
            if data.val_split is not None and self.context.is_main
            else None
        )
        self.start_iteration = 0
        if resume:
            self._load_training_state()
        else:
            self._check_fresh_output()
        # Each process draws its own random points from here on, reproducibly.
        if not resume:
            torch.manual_seed(config.seed * 1000 + self.context.rank)
            np.random.seed(config.seed * 1000 + self.context.rank)

    def _load_init_weights(self, path: str) -> None:
        """Start from the weights of a ros_seg checkpoint of the same model and label set."""
        checkpoint = read_checkpoint(path)
        if checkpoint.metadata.names != self.metadata.names:
            raise ValueError(
                f"init_weights {path} was trained on other classes ({len(checkpoint.metadata.names)}: "
                f"{', '.join(checkpoint.metadata.names[:5])}, ...) than {self.config.model} "
                f"({len(self.metadata.names)}: {', '.join(self.metadata.names[:5])}, ...): "
                "fine-tune from a checkpoint of the same label set"
            )
        load_weights(self.model, checkpoint.state_dict, f"init_weights {path}")
        log.info("initialized %s from the weights of %s", self.config.model, path)

    def _check_fresh_output(self) -> None:
        if latest_checkpoint(self.out_dir) is not None:
            raise ValueError(
                f"{self.out_dir} already holds a training run ({LAST_CHECKPOINT} exists): "
                "continue it with --resume or choose another --out"
            )

    def _data_loader(self) -> tuple[torch.utils.data.DataLoader, ShardedBatchSampler]:
        """Loader of the data stream from `start_iteration` on."""
        data = self.config.data
        augmentation = TrainAugmentation(
            crop_size=tuple(data.crop_size),
            scale_range=tuple(data.scale_range),
            flip_probability=data.flip_probability,
            jitter=(0.3, 0.3, 0.3, 0.03) if data.color_jitter else None,
            ignore_id=self.metadata.ignore_id,
        )
        samples = TrainSamples(self.train_set, augmentation, self.config.seed)
        sampler = ShardedBatchSampler(
            len(self.train_set),
            self.batch_per_process,
            self.config.seed,
            self.context.rank,
            self.context.world_size,
            start_iteration=self.start_iteration,
            weights=self._sampling_weights(),
        )
        loader = torch.utils.data.DataLoader(
            samples,
            batch_sampler=sampler,
            collate_fn=PaddedBatchCollator(self.model.size_divisibility, self.model_config.input.pixel_mean),
            num_workers=data.num_workers,
            pin_memory=self.context.device.type == "cuda",
            persistent_workers=data.num_workers > 0,
            # A private generator: creating the loader must not draw from the global one.
            generator=torch.Generator().manual_seed(self.config.seed),
        )
        return loader, sampler

    def _sampling_weights(self) -> np.ndarray | None:
        """Repeat factors of the training images, or None when the config does not ask for them."""
        threshold = self.config.data.repeat_factor_threshold
        if threshold is None:
            return None
        factors = image_repeat_factors(self.train_set.classes_per_image(), self.metadata.num_classes, threshold)
        log.info("repeat-factor sampling (threshold %g): %s", threshold, describe_repeat_factors(factors))
        return factors

    def train_step(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """One optimization step on a batch; returns the (detached) loss terms and "grad_norm"."""
        device = self.context.device
        images = images.to(device, non_blocking=True)
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        deep_supervision = self.config.loss.deep_supervision
        with torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp_enabled):
            outputs = self.ddp_model(images, all_predictions=deep_supervision)
        if not deep_supervision:
            outputs = {**outputs, "aux_outputs": []}
        losses = self.criterion(outputs, targets)
        total = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.config.solver.clip_grad_norm
        norm = nn.utils.clip_grad_norm_(self.ddp_model.parameters(), clip if clip > 0 else math.inf)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {**{k: v.detach() for k, v in losses.items()}, "loss": total.detach(), "grad_norm": norm.detach()}

    def _training_state(self, iteration: int, sampler: ShardedBatchSampler) -> dict[str, Any]:
        """The "extra" of a checkpoint after `iteration` iterations (collective: every process calls it)."""
        rng = capture_rng_state()
        if self.context.distributed:
            states: list[Any] = [None] * self.context.world_size
            dist.all_gather_object(states, rng)
        else:
            states = [rng]
        return {
            "iteration": iteration,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": states,
            "data_position": {**sampler.position(iteration), "world_size": self.context.world_size},
            "train_config": self.config.to_dict(),
        }

    def save(self, name: str, iteration: int, sampler: ShardedBatchSampler) -> None:
        """Write checkpoint `OUT/name` atomically and point `last_checkpoint` at it (rank 0 writes)."""
        extra = self._training_state(iteration, sampler)
        if self.context.is_main:
            save_checkpoint(self.out_dir / name, self.model, self.model_config, self.metadata, extra=extra)
            _atomic_write_text(self.out_dir / LAST_CHECKPOINT, name + "\n")
        barrier()

    def _load_training_state(self) -> None:
        path = latest_checkpoint(self.out_dir)
        if path is None:
            raise ValueError(f"nothing to resume: {self.out_dir} has no {LAST_CHECKPOINT} file")
        checkpoint = read_checkpoint(path)
        extra = checkpoint.extra
        if "optimizer" not in extra:
            raise ValueError(f"{path} holds weights only, no training state to resume from")
        load_weights(self.model, checkpoint.state_dict, str(path))
        load_optimizer_state(self.optimizer, extra["optimizer"])
        schedule = vars(self.scheduler.lr_lambdas[0]).copy()
        self.scheduler.load_state_dict(extra["scheduler"])
        restored: WarmupSchedule = self.scheduler.lr_lambdas[0]
        if vars(restored) != schedule:
            log.warning("the solver schedule changed since %s (%s -> %s): following the config", path,
                        vars(restored), schedule)
            restored.__dict__.update(schedule)
        self.scaler.load_state_dict(extra["scaler"])
        states = extra["rng"]
        if len(states) == self.context.world_size:
            restore_rng_state(states[self.context.rank])
        else:
            log.warning("resuming %d processes from a run of %d: random draws differ from the original run",
                        self.context.world_size, len(states))
            torch.manual_seed(self.config.seed * 1000 + self.context.rank + extra["iteration"])
        self.start_iteration = int(extra["iteration"])
        if self.context.is_main:
            self._truncate_log(self.start_iteration)
        log.info("resumed from %s at iteration %d", path, self.start_iteration)

    def _truncate_log(self, iteration: int) -> None:
        """Drop log lines of iterations after `iteration` (written by the run that was interrupted)."""
        path = self.out_dir / LOG_FILE
        if not path.is_file():
            return
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line).get("iter", 0) <= iteration]
        _atomic_write_text(path, "".join(line + "\n" for line in kept))

    def evaluate(self) -> dict[str, Any] | None:
        """Accuracy on the validation split (rank 0; the others wait), or None without one."""
        report = None
        if self.val_set is not None:
            size = tuple(self.config.data.eval_size) if self.config.data.eval_size else None
            report = evaluate(self.model, self.val_set, self.family, self.context.device, size=size, progress=True)
            self.model.train()
        barrier()
        return report

    def _is_due(self, period: int, done: int) -> bool:
        return period > 0 and done % period == 0

    def run(self) -> dict[str, Any]:
        """Train to solver.max_iters; returns {"iteration", "checkpoint", "eval"} (eval on rank 0), and
        "best" {"checkpoint", "iteration", "metric", "score"} when best_metric is set and an evaluation scored."""
        config, main = self.config, self.context.is_main
        max_iters = config.solver.max_iters
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(self.out_dir / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")
        loader, sampler = self._data_loader()
        batches = iter(loader)
        self.best = self._best_in_log() if main else None
        log_file = open(self.out_dir / LOG_FILE, "a") if main else None
        bar = tqdm(total=max_iters, initial=self.start_iteration, disable=not main, desc="train",
                   dynamic_ncols=True, mininterval=1.0)
        report = None
        try:
            window_start, window_data, window_iters = time.perf_counter(), 0.0, 0
            for iteration in range(self.start_iteration, max_iters):
                t0 = time.perf_counter()
                images, targets = next(batches)
                window_data += time.perf_counter() - t0
                terms = self.train_step(images, targets)
                done = iteration + 1
                window_iters += 1
                bar.update(1)
                if self._is_due(config.log_period, done) or done == max_iters:
                    names = sorted(terms)
                    values = all_reduce_mean(torch.stack([terms[n].float() for n in names])).tolist()
                    entry = dict(zip(names, values))
                    if not math.isfinite(entry["loss"]):
                        raise FloatingPointError(f"loss became {entry['loss']} at iteration {done}")
                    elapsed = time.perf_counter() - window_start
                    record = {"iter": done, **entry, "lr": self.scheduler.get_last_lr()[0],
                              "time": elapsed / window_iters, "data_time": window_data / window_iters}
                    if main:
                        log_file.write(json.dumps(record) + "\n")
                        log_file.flush()
                        bar.set_postfix(loss=f"{entry['loss']:.3f}", lr=f"{record['lr']:.2e}")
                    window_start, window_data, window_iters = time.perf_counter(), 0.0, 0
                if done < max_iters and self._is_due(config.checkpoint_period, done):
                    self.save(checkpoint_name(done), done, sampler)
                if done < max_iters and self._is_due(config.eval_period, done):
                    report = self._log_eval(done, log_file)
            self.save(FINAL_CHECKPOINT, max_iters, sampler)
            report = self._log_eval(max_iters, log_file)
        finally:
            bar.close()
            if log_file is not None:
                log_file.close()
        result = {"iteration": max_iters, "checkpoint": str(self.out_dir / FINAL_CHECKPOINT), "eval": report}
        if self.best is not None:
            result["best"] = {"checkpoint": str(self.out_dir / BEST_CHECKPOINT), **self.best}
        return result

    def _log_eval(self, iteration: int, log_file: Any) -> dict[str, Any] | None:
        report = self.evaluate()
        if report is not None and log_file is not None:
            log_file.write(json.dumps({"iter": iteration, "eval": report}) + "\n")
            log_file.flush()
            log.info("iteration %d: mIoU %s, PQ %s", iteration, report["miou"], report["pq"])
            self._keep_if_best(iteration, report)
        return report

    def _best_in_log(self) -> dict[str, Any] | None:
        """{"iteration", "metric", "score"} of the best evaluation already in the log (a resumed run), or None."""
        metric, path = self.config.best_metric, self.out_dir / LOG_FILE
        if metric is None or not path.is_file():
            return None
        best = None
        for line in path.read_text().splitlines():
            record = json.loads(line) if line.strip() else {}
            score = (record.get("eval") or {}).get(metric)
            if score is not None and (best is None or score > best["score"]):
                best = {"iteration": record["iter"], "metric": metric, "score": score}
        return best

    def _keep_if_best(self, iteration: int, report: dict[str, Any]) -> None:
        """Write model_best.pt when this evaluation beats the previous ones on `best_metric` (rank 0)."""
        metric = self.config.best_metric
        score = report.get(metric) if metric is not None else None
        if score is None or (self.best is not None and score <= self.best["score"]):
            return
        self.best = {"iteration": iteration, "metric": metric, "score": score}
        save_checkpoint(self.out_dir / BEST_CHECKPOINT, self.model, self.model_config, self.metadata,
                        extra=dict(self.best))
        log.info("best %s so far (%.2f): weights of iteration %d written to %s", metric, score, iteration,
                 BEST_CHECKPOINT)


def train(config: TrainConfig, out_dir: str | Path, device: str = "cpu", resume: bool = False,
          max_iters: int | None = None) -> dict[str, Any]:
    """Run a training (see `Trainer`); `max_iters` overrides solver.max_iters."""
    if max_iters is not None:
        config = replace(config, solver=replace(config.solver, max_iters=max_iters))
    return Trainer(config, out_dir, device=device, resume=resume).run()
