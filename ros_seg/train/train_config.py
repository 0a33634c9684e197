"""Training configuration: a YAML file under config/train/ parsed into typed, checked sections.

Every key is known: an unknown key, a value of the wrong type or out of range
is an error naming the key and the file. A config may extend another with
`_base_: other.yaml` and give only what differs. Sections: top level (model, seed,
periods), `data`, `solver`, `loss`. Missing keys take the defaults below,
which are the Mask2Former / PEM recipe where it has one.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ros_seg.models.quoted_excerpt import excerpt
from ros_seg.models.strict_config import ConfigError, build_dataclass, read_yaml_with_bases

SCHEDULES = ("cosine", "poly")
TASKS = ("panoptic", "semantic")
# Accuracy figures a run can keep its best weights by; the PQ ones need the panoptic task.
BEST_METRICS = ("miou", "pq", "pq_things", "pq_stuff")


@dataclass
class DataConfig:
    """Where the images come from and how they are augmented.

    root: Cityscapes-layout data folder (`ros-seg train --data` overrides it).
    val_split: split evaluated during training; null: no evaluation.
    crop_size / eval_size: [height, width]; eval_size null evaluates at full resolution.
    repeat_factor_threshold: null samples every image equally often; a fraction
        t in (0, 1] draws images of classes present in fewer than t of the
        training images more often (LVIS repeat factors, see
        `ros_seg.train.repeat_factors`).
    """

    root: str | None = None
    task: str = "panoptic"
    train_split: str = "train"
    val_split: str | None = "val"
    crop_size: list[int] = field(default_factory=lambda: [512, 1024])
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    flip_probability: float = 0.5
    color_jitter: bool = True
    eval_size: list[int] | None = None
    num_workers: int = 4
    repeat_factor_threshold: float | None = None


@dataclass
class SolverConfig:
    """AdamW, learning-rate schedule, clipping and mixed precision.

    batch_size is the total over all processes. clip_grad_norm clips the norm of
    all gradients together (detectron2 CLIP_TYPE full_model); 0 disables it.
    amp: mixed precision where the hardware computes it (GPUs; CPUs with bf16
    instructions, AVX512-BF16 or AMX); full precision elsewhere.
    """

    batch_size: int = 16
    max_iters: int = 90000
    base_lr: float = 0.0001
    weight_decay: float = 0.05
    backbone_lr_multiplier: float = 0.1
    schedule: str = "poly"
    poly_power: float = 0.9
    warmup_iters: int = 0
    warmup_factor: float = 1.0
    clip_grad_norm: float = 0.01
    amp: bool = True


@dataclass
class LossConfig:
    """Matching costs and loss weights (the same weights serve both), point sampling."""

    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    deep_supervision: bool = True


@dataclass
class TrainConfig:
    """A whole training run.

    model: model name (e.g. pem_r50) or model config path.
    imagenet_weights: optional file of ImageNet backbone weights.
    init_weights: optional ros_seg checkpoint of the same model whose weights
    start the run (fine-tuning; imagenet_weights is then not loaded); optimizer,
    schedule and iteration start fresh.
    eval_period / checkpoint_period: iterations between evaluations / checkpoints
    (0: only at the end). keep_checkpoints: how many periodic checkpoints
    (model_NNNNNNN.pt) stay on disk, the newest; older ones are deleted as new
    ones are written (0: keep all; model_final.pt and model_best.pt are never
    deleted). log_period: iterations between log lines.
    best_metric: null, or one of BEST_METRICS: after each evaluation that beats
    the previous ones on it, the weights are also written to model_best.pt.
    """

    model: str = "pem_r50"
    seed: int = 0
    imagenet_weights: str | None = None
    init_weights: str | None = None
    eval_period: int = 5000
    checkpoint_period: int = 5000
    keep_checkpoints: int = 3
    log_period: int = 20
    best_metric: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> TrainConfig:
        config = build_dataclass(cls, data, source)
        _validate(config, source)
        return config

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """The config in `path`; `_base_: other.yaml` in it extends that file (see read_yaml_with_bases)."""
        data, source = read_yaml_with_bases(path, "training config")
        return cls.from_dict(data, source=source)


def _validate(config: TrainConfig, source: str) -> None:
    """Ranges and choices the types cannot express."""

    def fail(key: str, requirement: str, value: Any) -> None:
        raise ConfigError(f"'{key}' in {source} must be {requirement}, got {excerpt(value)}")

    data, solver, loss = config.data, config.solver, config.loss
    if data.task not in TASKS:
        fail("data.task", f"one of {TASKS}", data.task)
    for key, size in (("data.crop_size", data.crop_size), ("data.eval_size", data.eval_size)):
        if size is not None and (len(size) != 2 or min(size) < 1):
            fail(key, "[height, width] of positive integers", size)
    if len(data.scale_range) != 2 or not 0 < data.scale_range[0] <= data.scale_range[1]:
        fail("data.scale_range", "[low, high] with 0 < low <= high", data.scale_range)
    if not 0.0 <= data.flip_probability <= 1.0:
        fail("data.flip_probability", "in [0, 1]", data.flip_probability)
    if data.num_workers < 0:
        fail("data.num_workers", ">= 0", data.num_workers)
    threshold = data.repeat_factor_threshold
    if threshold is not None and not 0.0 < threshold <= 1.0:
        fail("data.repeat_factor_threshold", "null or in (0, 1]", threshold)
    if solver.schedule not in SCHEDULES:
        fail("solver.schedule", f"one of {SCHEDULES}", solver.schedule)
    for key in ("batch_size", "max_iters"):
        if getattr(solver, key) < 1:
            fail(f"solver.{key}", ">= 1", getattr(solver, key))
    for key in ("base_lr", "weight_decay", "backbone_lr_multiplier", "clip_grad_norm", "warmup_iters", "poly_power"):
        if getattr(solver, key) < 0:
            fail(f"solver.{key}", ">= 0", getattr(solver, key))
    if not 0.0 < solver.warmup_factor <= 1.0:
        fail("solver.warmup_factor", "in (0, 1]", solver.warmup_factor)
    if loss.num_points < 1:
        fail("loss.num_points", ">= 1", loss.num_points)
    if loss.oversample_ratio < 1.0:
        fail("loss.oversample_ratio", ">= 1", loss.oversample_ratio)
    if not 0.0 <= loss.importance_sample_ratio <= 1.0:
        fail("loss.importance_sample_ratio", "in [0, 1]", loss.importance_sample_ratio)
    for key in ("eval_period", "checkpoint_period", "keep_checkpoints", "log_period"):
        if getattr(config, key) < 0:
            fail(key, ">= 0", getattr(config, key))
    if config.best_metric is not None:
        if config.best_metric not in BEST_METRICS:
            fail("best_metric", f"null or one of {BEST_METRICS}", config.best_metric)
        if data.val_split is None:
            fail("best_metric", "null when data.val_split is null (nothing is evaluated)", config.best_metric)
        if config.best_metric != "miou" and data.task != "panoptic":
            fail("best_metric", "miou when data.task is semantic (no PQ)", config.best_metric)
