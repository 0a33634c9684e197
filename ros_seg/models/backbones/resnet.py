"""ResNet-50 backbone in the detectron2 module layout.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, with the
stride of each downsampling bottleneck in its 3x3 conv (detectron2's
STRIDE_IN_1X1=False, the torchvision "v1.5" variant). Module names follow
detectron2 (`stem.conv1`, `res2.0.conv1`, `res3.0.shortcut`, each conv with a
`norm` child) so the PEM authors' detectron2 checkpoints load by key name once
their `backbone.` prefix is stripped.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

STAGE_NAMES = ("res2", "res3", "res4", "res5")


class Conv2dNorm(nn.Conv2d):
    """A bias-free conv followed by its BatchNorm, held as the `norm` child."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        """
        Args:
            in_channels: channels of the input map.
            out_channels: channels of the output map.
            kernel_size: square kernel size; padding is kernel_size // 2.
            stride: stride of the conv.
        """
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
        )
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class BasicStem(nn.Module):
    """7x7 stride-2 conv + BN + ReLU, then 3x3 stride-2 max-pool: stride 4 in total."""

    def __init__(self, out_channels: int) -> None:
        """
        Args:
            out_channels: channels produced by the stem conv.
        """
        super().__init__()
        self.conv1 = Conv2dNorm(3, out_channels, 7, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))  # (B, C, H/2, W/2)
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)  # (B, C, H/4, W/4)


class BottleneckBlock(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand, plus the residual."""

    def __init__(self, in_channels: int, out_channels: int, bottleneck_channels: int, stride: int) -> None:
        """
        Args:
            in_channels: channels of the block input.
            out_channels: channels of the block output.
            bottleneck_channels: channels of the inner 1x1 and 3x3 convs.
            stride: stride of the 3x3 conv and of the projection shortcut.
        """
        super().__init__()
        self.shortcut = (
            Conv2dNorm(in_channels, out_channels, 1, stride=stride) if in_channels != out_channels else None
        )
        self.conv1 = Conv2dNorm(in_channels, bottleneck_channels, 1)
        self.conv2 = Conv2dNorm(bottleneck_channels, bottleneck_channels, 3, stride=stride)
        self.conv3 = Conv2dNorm(bottleneck_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + identity)


class ResNet(nn.Module):
    """Bottleneck ResNet returning the stride 4/8/16/32 maps as `res2`..`res5`.

    Stage k (k = 0..3) has out channels 256 * 2^k and bottleneck width 64 * 2^k;
    its first block downsamples by 2 except in res2, which follows the stem's
    max-pool. Norms are plain BatchNorm2d (training may convert them to
    SyncBatchNorm).
    """

    def __init__(self, stage_depths: Sequence[int]) -> None:
        """
        Args:
            stage_depths: number of bottleneck blocks in res2, res3, res4, res5.
        """
        super().__init__()
        if len(stage_depths) != len(STAGE_NAMES):
            raise ValueError(f"ResNet needs {len(STAGE_NAMES)} stage depths, got {list(stage_depths)}")
        self.stem = BasicStem(64)
        self.out_channels: dict[str, int] = {}
        self.out_strides: dict[str, int] = {}
        in_channels = 64
        for index, (name, depth) in enumerate(zip(STAGE_NAMES, stage_depths)):
            out_channels = 256 * 2**index
            first_stride = 1 if index == 0 else 2
            blocks = [
                BottleneckBlock(
                    in_channels if block == 0 else out_channels,
                    out_channels,
                    64 * 2**index,
                    first_stride if block == 0 else 1,
                )
                for block in range(depth)
            ]
            self.add_module(name, nn.Sequential(*blocks))
            self.out_channels[name] = out_channels
            self.out_strides[name] = 4 * 2**index
            in_channels = out_channels
        # BatchNorm2d already starts at weight 1, bias 0.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) -> {"res2": (B, 256, H/4, W/4), ..., "res5": (B, 2048, H/32, W/32)}."""
        features = {}
        x = self.stem(x)
        for name in STAGE_NAMES:
            x = getattr(self, name)(x)
            features[name] = x
        return features


def resnet50() -> ResNet:
    """ResNet-50: 3, 4, 6, 3 bottleneck blocks (23,508,032 parameters)."""
    return ResNet((3, 4, 6, 3))
