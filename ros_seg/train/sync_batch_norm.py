"""BatchNorm synchronized across processes on any device and backend (gloo on CPUs included).

PyTorch's SyncBatchNorm runs on GPUs only. `ProcessGroupBatchNorm2d` computes
the training statistics of the union of every process's batch with one
differentiable all-reduce of (sum, sum of squares, count) per layer, so the
forward pass, the gradients and the running statistics equal those of one
BatchNorm2d over the concatenated batch. Used for data-parallel CPU training;
GPUs use PyTorch's SyncBatchNorm.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_functional
from torch import nn


class ProcessGroupBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics cover the batches of all processes.

    Outside training, or without a process group of more than one process, it is
    a plain BatchNorm2d. Parameters, buffers and state-dict keys are BatchNorm2d's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        channels = x.shape[1]
        xf = x.float()
        count = torch.full((1,), xf.numel() / channels, dtype=torch.float32, device=x.device)
        local = torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count])  # (2C + 1,)
        total = dist_functional.all_reduce(local)  # summed over processes; backward sums gradients too
        n = total[-1]
        mean = total[:channels] / n  # (C,)
        var = (total[channels : 2 * channels] / n - mean * mean).clamp(min=0.0)  # (C,) biased
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean, factor)
                self.running_var.lerp_(var * n / (n - 1).clamp(min=1.0), factor)
        scale = torch.rsqrt(var + self.eps)  # (C,)
        if self.affine:
            scale = scale * self.weight
            shift = self.bias - mean * scale
        else:
            shift = -mean * scale
        return (xf * scale[None, :, None, None] + shift[None, :, None, None]).to(x.dtype)


def convert_to_process_group_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every nn.BatchNorm2d in `module` by a ProcessGroupBatchNorm2d sharing its parameters and buffers."""
    if type(module) is nn.BatchNorm2d:
        synced = ProcessGroupBatchNorm2d(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            synced.weight = module.weight
            synced.bias = module.bias
        if module.track_running_stats:
            synced.running_mean = module.running_mean
            synced.running_var = module.running_var
            synced.num_batches_tracked = module.num_batches_tracked
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        module.add_module(name, convert_to_process_group_batchnorm(child))
    return module
