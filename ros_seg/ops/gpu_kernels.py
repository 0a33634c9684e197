"""Registering our Triton kernels with the operators' dispatchers, where a GPU can run them.

`ros_seg.ops` calls :func:`register_gpu_kernels` when it is imported: with CUDA
available and Triton importable (CUDA builds of PyTorch bring it), CUDA tensors
then go to the Triton kernels of deform_conv2d and ms_deform_attn; everywhere
else nothing changes and the pure-PyTorch references serve (CPU machines never
import Triton). ``ROS_SEG_GPU_KERNELS=0`` keeps the references on the GPU too,
for comparisons.
"""
from __future__ import annotations

import os

import torch

from ros_seg.ops.deform_conv import register_cuda_kernel
from ros_seg.ops.ms_deform_attn import register_ms_deform_attn_kernel


def gpu_kernels_wanted() -> bool:
    """Whether this process should serve CUDA tensors with the Triton kernels (CUDA present, not disabled)."""
    return os.environ.get("ROS_SEG_GPU_KERNELS", "1") != "0" and torch.cuda.is_available()


def register_gpu_kernels() -> list[str]:
    """Register the Triton kernels when wanted and Triton imports; returns the operators now served by them."""
    if not gpu_kernels_wanted():
        return []
    from ros_seg.ops import deform_conv_triton, ms_deform_attn_triton

    if not (deform_conv_triton.available() and ms_deform_attn_triton.available()):
        return []
    register_cuda_kernel(deform_conv_triton.deform_conv2d_triton)
    register_ms_deform_attn_kernel(ms_deform_attn_triton.ms_deform_attn_triton)
    return ["deform_conv2d", "ms_deform_attn"]
