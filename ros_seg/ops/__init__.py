"""Custom operators: one entry point each, a CUDA kernel when registered (our Triton kernels, registered
here where a GPU and Triton are present), else the pure-PyTorch reference."""
from ros_seg.ops.deform_conv import DeformConv2d, deform_conv2d, deform_conv2d_reference, register_cuda_kernel
from ros_seg.ops.gpu_kernels import register_gpu_kernels
from ros_seg.ops.ms_deform_attn import ms_deform_attn, ms_deform_attn_reference, register_ms_deform_attn_kernel

GPU_KERNELS = register_gpu_kernels()
"""Operators served by our Triton kernels on CUDA tensors in this process (empty without a GPU)."""

__all__ = [
    "GPU_KERNELS",
    "DeformConv2d",
    "deform_conv2d",
    "deform_conv2d_reference",
    "ms_deform_attn",
    "ms_deform_attn_reference",
    "register_cuda_kernel",
    "register_ms_deform_attn_kernel",
]
