"""PEM pixel decoder (Cavagnero et al., "PEM: Prototype-based Efficient MaskFormer
for Image Segmentation", CVPR 2024).

A light multi-scale decoder: every backbone level is projected to a common width
and re-weighted by context-based self-modulation (CSM); from 1/32 down to 1/8 a
modulated deformable 3x3 convolution refines the features and a transposed
convolution brings them to the next finer level, where they are added. The 1/4
result becomes the mask features, the 1/32, 1/16 and 1/8 maps feed the
transformer decoder.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ros_seg.models.conv_norm_act import ConvNormAct
from ros_seg.ops import DeformConv2d

LEVELS = ("res2", "res3", "res4", "res5")


class ContextSelfModulation(nn.Module):
    """CSM: x + x * w with w = sigmoid(sigmoid(MLP(global average of x))).

    The double sigmoid follows the authors' code, which trained models expect.

    Args:
        channels: feature width.
        reduction: channel reduction of the MLP's hidden layer.
    """

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        hidden = channels // reduction
        self.reduce = nn.Conv2d(channels, hidden, 1, bias=False)
        self.norm = nn.BatchNorm2d(hidden)
        self.expand = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        weight = self.expand(torch.relu(self.norm(self.reduce(context)))).sigmoid().sigmoid()
        return x + x * weight


class DeformableUpsample(nn.Module):
    """Modulated deformable 3x3 conv + BN + ReLU, then a 2x transposed conv + BN + ReLU.

    The offset conv predicts 27 channels: 0..17 are the (dy, dx) offsets of the 9
    taps in torchvision's interleaved layout, 18..26 pass a sigmoid to become the
    modulation mask. It starts at zero, so training starts from a plain conv.

    Args:
        channels: feature width (kept throughout).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.offset = nn.Conv2d(channels, 27, 3, padding=1)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.deform = DeformConv2d(channels, channels, 3, padding=1, bias=False)
        nn.init.kaiming_normal_(self.deform.weight, mode="fan_out", nonlinearity="relu")
        self.deform_norm = nn.BatchNorm2d(channels)
        self.upsample = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=False)
        self._bilinear_init(self.upsample)
        self.upsample_norm = nn.BatchNorm2d(channels)

    @staticmethod
    def _bilinear_init(layer: nn.ConvTranspose2d) -> None:
        """Start as per-channel bilinear 2x upsampling."""
        k = layer.weight.shape[-1]
        f = math.ceil(k / 2)
        center = (2 * f - 1 - f % 2) / (2.0 * f)
        ramp = 1 - (torch.arange(k, dtype=torch.float32) / f - center).abs()  # (k,)
        kernel = ramp[:, None] * ramp[None, :]  # (k, k)
        with torch.no_grad():
            layer.weight.zero_()
            channels = min(layer.weight.shape[0], layer.weight.shape[1])
            idx = torch.arange(channels)
            layer.weight[idx, idx] = kernel

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        offset_mask = self.offset(x)  # (B, 27, H, W)
        offset = offset_mask[:, :18]
        mask = offset_mask[:, 18:].sigmoid()
        x = torch.relu(self.deform_norm(self.deform(x, offset, mask)))
        up = torch.relu(self.upsample_norm(self.upsample(x)))  # (B, C, 2H, 2W)
        return x, up


class PEMPixelDecoder(nn.Module):
    """Multi-scale features (1/32, 1/16, 1/8) and 1/4 mask features from res2..res5.

    Args:
        in_channels: channels of res2, res3, res4, res5.
        conv_dim: width of the decoder (128 in PEM).
        mask_dim: channels of the mask features (256 in PEM).
    """

    def __init__(self, in_channels: tuple[int, int, int, int], conv_dim: int = 128, mask_dim: int = 256) -> None:
        super().__init__()
        if len(in_channels) != len(LEVELS):
            raise ValueError(f"PEMPixelDecoder needs channels for {LEVELS}, got {in_channels}")
        self.in_projections = nn.ModuleList(ConvNormAct(c, conv_dim) for c in in_channels)
        self.global_context = ConvNormAct(in_channels[-1], conv_dim)
        self.csm = nn.ModuleList(ContextSelfModulation(conv_dim) for _ in LEVELS)  # res5, res4, res3, res2
        self.deformable = nn.ModuleList(DeformableUpsample(conv_dim) for _ in LEVELS[1:])  # 1/32, 1/16, 1/8
        self.mask_features = ConvNormAct(conv_dim, mask_dim)
        self.conv_dim = conv_dim
        self.mask_dim = mask_dim

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Returns (mask features (B, mask_dim, H/4, W/4), [x32, x16, x8] each (B, conv_dim, h, w))."""
        projected = [proj(features[name]) for proj, name in zip(self.in_projections, LEVELS)]
        context = self.global_context(features["res5"].mean(dim=(2, 3), keepdim=True))  # (B, C, 1, 1)
        multi_scale = []
        x = self.csm[0](projected[3]) + context
        for i, level in enumerate((2, 1, 0)):  # res4, res3, res2
            refined, up = self.deformable[i](x)
            multi_scale.append(refined)
            x = self.csm[i + 1](projected[level]) + up
        return self.mask_features(x), multi_scale
