"""Convolution -> BatchNorm -> ReLU, the building block of the PEM pixel decoder."""
from __future__ import annotations

from torch import nn


class ConvNormAct(nn.Sequential):
    """Conv2d without bias, BatchNorm2d, optional ReLU (children `conv`, `norm`, `act`).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size; padding keeps the spatial size.
        act: append a ReLU.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        if act:
            self.act = nn.ReLU(inplace=True)
        nn.init.kaiming_normal_(self.conv.weight, a=1)
