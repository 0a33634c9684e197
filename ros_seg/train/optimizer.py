"""AdamW with the Mask2Former parameter groups, and the warmup + cosine/poly learning-rate schedule.

Parameter groups: backbone parameters learn at `backbone_lr_multiplier` x the
base rate; normalization parameters (BatchNorm, SyncBatchNorm, LayerNorm,
GroupNorm, InstanceNorm) and embeddings (nn.Embedding: level embeddings, query
features and query positions) get no weight decay. The schedule is a LambdaLR
over iterations, so its state dict (the step count) resumes it exactly.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ros_seg.train.train_config import SolverConfig

NO_DECAY_MODULES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.Embedding)


def parameter_groups(model: nn.Module, config: SolverConfig) -> list[dict]:
    """AdamW groups {"params", "lr", "weight_decay", "name"}, each parameter in exactly one group.

    A parameter belongs to the backbone when its name starts with `backbone.`
    (after a DDP `module.` prefix).
    """
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        name = module_name.removeprefix("module.")
        in_backbone = name == "backbone" or name.startswith("backbone.")
        no_decay = isinstance(module, NO_DECAY_MODULES)
        for param in module.parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            groups.setdefault((in_backbone, no_decay), []).append(param)
    result = []
    for (in_backbone, no_decay), params in sorted(groups.items()):
        result.append(
            {
                "params": params,
                "lr": config.base_lr * (config.backbone_lr_multiplier if in_backbone else 1.0),
                "weight_decay": 0.0 if no_decay else config.weight_decay,
                "name": f"{'backbone' if in_backbone else 'head'}{'_no_decay' if no_decay else ''}",
            }
        )
    return result


def build_optimizer(model: nn.Module, config: SolverConfig) -> torch.optim.AdamW:
    """AdamW over `parameter_groups(model, config)`.

    PyTorch's fused implementation (one kernel over all parameters, CPU and CUDA):
    on 2 CPU cores it steps PEM-STDC1's 17 M parameters in 31 ms instead of
    the 89 ms of the default multi-tensor one. The update is the same AdamW.
    """
    return torch.optim.AdamW(
        parameter_groups(model, config), lr=config.base_lr, weight_decay=config.weight_decay, fused=True
    )


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Restore `state` (an optimizer state dict) into `optimizer`, keeping the optimizer's implementation.

    Which kernel steps the parameters (fused, foreach) is a property of this
    build, not training state: a checkpoint saved by another implementation
    (e.g. before training used the fused one) resumes with ours, its moments and
    step counts unchanged.
    """
    implementation = {key: optimizer.defaults.get(key) for key in ("fused", "foreach")}
    groups = [{**group, **implementation} for group in state["param_groups"]]
    optimizer.load_state_dict({**state, "param_groups": groups})


class WarmupSchedule:
    """Learning-rate factor of an iteration: linear warmup times a cosine or poly decay.

    factor(i) = warmup(i) * decay(i); warmup rises linearly from `warmup_factor`
    to 1 over `warmup_iters`; decay is 0.5 (1 + cos(pi i / max_iters)) (cosine)
    or (1 - i / max_iters) ** power (poly). A plain object, so LambdaLR stores it
    in its state dict.

    Args:
        schedule: "cosine" or "poly".
        max_iters: length of the run.
        warmup_iters: iterations of warmup (0: none).
        warmup_factor: factor at iteration 0 of the warmup.
        power: exponent of the poly schedule.
    """

    def __init__(
        self, schedule: str, max_iters: int, warmup_iters: int = 0, warmup_factor: float = 1.0, power: float = 0.9
    ) -> None:
        if schedule not in ("cosine", "poly"):
            raise ValueError(f"schedule must be 'cosine' or 'poly', got {schedule!r}")
        self.schedule = schedule
        self.max_iters = max_iters
        self.warmup_iters = warmup_iters
        self.warmup_factor = warmup_factor
        self.power = power

    def __call__(self, iteration: int) -> float:
        progress = min(iteration, self.max_iters) / self.max_iters
        if self.schedule == "cosine":
            decay = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            decay = (1.0 - progress) ** self.power
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            decay *= self.warmup_factor * (1.0 - alpha) + alpha
        return decay


def build_scheduler(optimizer: torch.optim.Optimizer, config: SolverConfig) -> LambdaLR:
    """LambdaLR stepping once per iteration with `WarmupSchedule` from the solver config."""
    schedule = WarmupSchedule(
        config.schedule, config.max_iters, config.warmup_iters, config.warmup_factor, config.poly_power
    )
    return LambdaLR(optimizer, schedule)
