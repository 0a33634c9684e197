"""Custom operators: one entry point each, a CUDA kernel when registered, else the pure-PyTorch reference."""
from ros_seg.ops.deform_conv import DeformConv2d, deform_conv2d, deform_conv2d_reference, register_cuda_kernel
from ros_seg.ops.ms_deform_attn import ms_deform_attn, ms_deform_attn_reference, register_ms_deform_attn_kernel

__all__ = [
    "DeformConv2d",
    "deform_conv2d",
    "deform_conv2d_reference",
    "ms_deform_attn",
    "ms_deform_attn_reference",
    "register_cuda_kernel",
    "register_ms_deform_attn_kernel",
]
