"""Building a training run: the model, optimizer, data and state one training needs, fresh or resumed.

`build_training_run` makes, in this order (the random draws depend on it): the
process group, the model (seeded with config.seed, so every process starts
from the same weights) with its starting weights (init_weights, or ImageNet
weights of the backbone), DDP, the optimizer, schedule and gradient scaler, the
family's criterion and the datasets; then either the state of the newest
checkpoint in OUT (a resume) or per-process random seeds (a fresh run); last
the data loader from the first iteration to run on. `ros_seg.train.loop`
runs what it built.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ros_seg.data.cityscapes import CityscapesDataset
from ros_seg.data.transforms import TrainAugmentation
from ros_seg.models.backbones.imagenet_weights import load_imagenet_weights
from ros_seg.models.checkpoint import load_weights, read_checkpoint
from ros_seg.models.class_metadata import ClassMetadata
from ros_seg.models.families import model_family
from ros_seg.models.meta_architecture import MetaArchitecture
from ros_seg.models.model_config import ModelConfig
from ros_seg.models.registry import load_model_config
from ros_seg.train.batching import PaddedBatchCollator, TrainSamples
from ros_seg.train.distributed import DistributedContext, ShardedBatchSampler, init_distributed, wrap_model
from ros_seg.train.mixed_precision import autocast_precision
from ros_seg.train.optimizer import build_optimizer, build_scheduler
from ros_seg.train.repeat_factors import describe_repeat_factors, image_repeat_factors
from ros_seg.train.run_files import LAST_CHECKPOINT, latest_checkpoint
from ros_seg.train.train_config import TrainConfig
from ros_seg.train.training_state import resume_training_state

log = logging.getLogger(__name__)


@dataclass
class TrainingRun:
    """The parts of one training as `build_training_run` made them in this process.

    Args:
        config: the training configuration.
        out_dir: the output folder (logs, checkpoints).
        context: this process's place in the job and its device.
        family: the model family (build, criterion, post-processing) bound to the model config and label set.
        model: the model being trained (checkpoints and evaluation use it).
        ddp_model: the model the training step runs: `model` wrapped in DDP when distributed, else `model`.
        optimizer: AdamW over the model's parameter groups.
        scheduler: the learning-rate schedule, stepped once per iteration.
        scaler: the gradient scaler (enabled only for fp16 autocast).
        autocast: (enabled, dtype) of the model's autocast.
        criterion: the family's training loss.
        train_set: the training split.
        val_set: the validation split on rank 0 when the config names one, else None.
        sampler: this process's stream of training batches from `start_iteration` on.
        loader: the data loader over `sampler`.
        start_iteration: iterations done before this run (0 for a fresh run).
    """

    config: TrainConfig
    out_dir: Path
    context: DistributedContext
    family: MetaArchitecture
    model: nn.Module
    ddp_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    scaler: torch.amp.GradScaler
    autocast: tuple[bool, torch.dtype]
    criterion: nn.Module
    train_set: CityscapesDataset
    val_set: CityscapesDataset | None
    sampler: ShardedBatchSampler
    loader: torch.utils.data.DataLoader
    start_iteration: int

    @property
    def model_config(self) -> ModelConfig:
        return self.family.config

    @property
    def metadata(self) -> ClassMetadata:
        return self.family.metadata


def build_training_run(
    config: TrainConfig, out_dir: str | Path, device: str = "cpu", resume: bool = False
) -> TrainingRun:
    """Everything a training from `config` into `out_dir` needs, in this process.

    Args:
        config: the training configuration (its data.root must be set).
        out_dir: where logs and checkpoints go; a fresh run refuses one that holds a run already.
        device: "cpu" or "cuda".
        resume: continue from `out_dir/last_checkpoint` instead of starting afresh.
    """
    if config.data.root is None:
        raise ValueError("no training data: give --data DIR or set data.root in the training config")
    out_dir = Path(out_dir)
    context = init_distributed(device)
    solver = config.solver
    if solver.batch_size % context.world_size:
        raise ValueError(
            f"solver.batch_size {solver.batch_size} is not divisible by the {context.world_size} processes"
        )

    model_config = load_model_config(config.model)
    torch.manual_seed(config.seed)  # the same initial weights in every process
    family = model_family(model_config)
    model = family.build()
    if not resume:  # a resume loads its own weights below
        if config.init_weights:  # the whole model, backbone included: ImageNet weights would be overwritten
            _load_init_weights(model, family.metadata, config)
        elif config.imagenet_weights:
            load_imagenet_weights(model.backbone, config.imagenet_weights)
    model.to(context.device).train()
    ddp_model = wrap_model(model, context)
    optimizer = build_optimizer(ddp_model, solver)
    scheduler = build_scheduler(optimizer, solver)
    autocast = autocast_precision(context.device, solver.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=autocast[0] and autocast[1] == torch.float16)
    criterion = family.criterion(config.loss).to(context.device)

    data = config.data
    train_set = CityscapesDataset(data.root, data.train_split, data.task, metadata=family.metadata)
    val_set = (
        CityscapesDataset(data.root, data.val_split, data.task, metadata=family.metadata)
        if data.val_split is not None and context.is_main
        else None
    )
    if resume:
        start_iteration = resume_training_state(out_dir, model, optimizer, scheduler, scaler, context, config.seed)
    else:
        if latest_checkpoint(out_dir) is not None:
            raise ValueError(
                f"{out_dir} already holds a training run ({LAST_CHECKPOINT} exists): "
                "continue it with --resume or choose another --out"
            )
        start_iteration = 0
        # Each process draws its own random points from here on, reproducibly.
        torch.manual_seed(config.seed * 1000 + context.rank)
        np.random.seed(config.seed * 1000 + context.rank)

    batch_per_process = solver.batch_size // context.world_size
    sampler = ShardedBatchSampler(
        len(train_set),
        batch_per_process,
        config.seed,
        context.rank,
        context.world_size,
        start_iteration=start_iteration,
        weights=_sampling_weights(train_set, family.metadata, config),
    )
    augmentation = TrainAugmentation(
        crop_size=tuple(data.crop_size),
        scale_range=tuple(data.scale_range),
        flip_probability=data.flip_probability,
        jitter=(0.3, 0.3, 0.3, 0.03) if data.color_jitter else None,
        ignore_id=family.metadata.ignore_id,
    )
    loader = torch.utils.data.DataLoader(
        TrainSamples(train_set, augmentation, config.seed),
        batch_sampler=sampler,
        collate_fn=PaddedBatchCollator(model.size_divisibility, model_config.input.pixel_mean),
        num_workers=data.num_workers,
        pin_memory=context.device.type == "cuda",
        persistent_workers=data.num_workers > 0,
        # A private generator: creating the loader must not draw from the global one.
        generator=torch.Generator().manual_seed(config.seed),
    )
    return TrainingRun(config, out_dir, context, family, model, ddp_model, optimizer, scheduler, scaler, autocast,
                       criterion, train_set, val_set, sampler, loader, start_iteration)


def _load_init_weights(model: nn.Module, metadata: ClassMetadata, config: TrainConfig) -> None:
    """Start from the weights of a ros_seg checkpoint of the same model and label set."""
    path = config.init_weights
    checkpoint = read_checkpoint(path)
    if checkpoint.metadata.names != metadata.names:
        raise ValueError(
            f"init_weights {path} was trained on other classes ({len(checkpoint.metadata.names)}: "
            f"{', '.join(checkpoint.metadata.names[:5])}, ...) than {config.model} "
            f"({len(metadata.names)}: {', '.join(metadata.names[:5])}, ...): "
            "fine-tune from a checkpoint of the same label set"
        )
    load_weights(model, checkpoint.state_dict, f"init_weights {path}")
    log.info("initialized %s from the weights of %s", config.model, path)


def _sampling_weights(train_set: CityscapesDataset, metadata: ClassMetadata, config: TrainConfig) -> np.ndarray | None:
    """Repeat factors of the training images, or None when the config does not ask for them."""
    threshold = config.data.repeat_factor_threshold
    if threshold is None:
        return None
    factors = image_repeat_factors(train_set.classes_per_image(), metadata.num_classes, threshold)
    log.info("repeat-factor sampling (threshold %g): %s", threshold, describe_repeat_factors(factors))
    return factors
