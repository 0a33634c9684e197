"""STDC1 / STDC2 backbones (Short-Term Dense Concatenate network).

Fan et al., "Rethinking BiSeNet For Real-time Semantic Segmentation", CVPR 2021,
as used by the PEM authors: base width 64, 4 convs per "cat" block, no
`conv_last` and no classifier. All modules live in one `features` Sequential,
so state-dict keys read `features.N.*` as in the authors' checkpoints (which
also repeat every tensor under `x2`..`x32` aliases; importers drop those).
"""

from collections.abc import Sequence

import torch
from torch import nn

STAGE_NAMES = ("res3", "res4", "res5")


class ConvX(nn.Module):
    """Conv (no bias, padding kernel // 2) + BatchNorm + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        """
        Args:
            in_channels: channels of the input map.
            out_channels: channels of the output map.
            kernel_size: square kernel size.
            stride: stride of the conv.
        """
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class CatBottleneck(nn.Module):
    """STDC module: a chain of convs with halving widths whose outputs are concatenated.

    With out channels C and 4 convs the chain is 1x1 -> C/2, 3x3 -> C/4,
    3x3 -> C/8, 3x3 -> C/8, and the block outputs their concatenation (C).
    A stride-2 block downsamples the first conv's output with a depthwise
    3x3 conv + BN (`avd_layer`) before the chain and with a 3x3 average pool
    (`skip`) for its own slot of the concatenation.
    """

    def __init__(self, in_channels: int, out_channels: int, block_num: int = 4, stride: int = 1) -> None:
        """
        Args:
            in_channels: channels of the block input.
            out_channels: channels of the concatenated output.
            block_num: number of convs in the chain (at least 2).
            stride: 1, or 2 to halve the resolution.
        """
        super().__init__()
        if block_num < 2 or stride not in (1, 2):
            raise ValueError(
                f"CatBottleneck needs block_num >= 2 and stride 1 or 2, got {block_num} and {stride}"
            )
        self.stride = stride
        convs = [ConvX(in_channels, out_channels // 2, kernel_size=1)]
        for index in range(1, block_num):
            if index == 1:
                chain_out = out_channels // 2 if block_num == 2 else out_channels // 4
                convs.append(ConvX(out_channels // 2, chain_out))
            elif index < block_num - 1:
                convs.append(ConvX(out_channels // 2**index, out_channels // 2 ** (index + 1)))
            else:
                convs.append(ConvX(out_channels // 2**index, out_channels // 2**index))
        self.conv_list = nn.ModuleList(convs)
        if stride == 2:
            half = out_channels // 2
            self.avd_layer = nn.Sequential(
                nn.Conv2d(half, half, 3, stride=2, padding=1, groups=half, bias=False),
                nn.BatchNorm2d(half),
            )
            self.skip = nn.AvgPool2d(3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.conv_list[0](x)  # (B, C/2, H, W)
        out = self.avd_layer(first) if self.stride == 2 else first  # (B, C/2, H/s, W/s)
        outputs = [self.skip(first) if self.stride == 2 else first]
        for conv in self.conv_list[1:]:
            out = conv(out)
            outputs.append(out)
        return torch.cat(outputs, dim=1)  # (B, C, H/s, W/s)


class STDCNet(nn.Module):
    """STDC backbone returning the stride 4/8/16/32 maps as `res2`..`res5`.

    `features` holds two stride-2 ConvX (3 -> base/2 -> base), then three
    stages of CatBottlenecks (base -> 4 base -> 8 base -> 16 base), each
    stage opening with a stride-2 block.
    """

    def __init__(self, stage_depths: Sequence[int], base_channels: int = 64, block_num: int = 4) -> None:
        """
        Args:
            stage_depths: number of CatBottlenecks in the stride 8, 16 and 32 stages.
            base_channels: channels of the stride-4 map; stages have 4x, 8x, 16x.
            block_num: number of convs in each CatBottleneck.
        """
        super().__init__()
        if len(stage_depths) != len(STAGE_NAMES):
            raise ValueError(f"STDCNet needs {len(STAGE_NAMES)} stage depths, got {list(stage_depths)}")
        layers: list[nn.Module] = [
            ConvX(3, base_channels // 2, 3, stride=2),
            ConvX(base_channels // 2, base_channels, 3, stride=2),
        ]
        self.out_channels = {"res2": base_channels}
        self.out_strides = {"res2": 4}
        # Index in `features` after which each output is taken.
        self._taps = {len(layers) - 1: "res2"}
        in_channels = base_channels
        for index, (name, depth) in enumerate(zip(STAGE_NAMES, stage_depths)):
            out_channels = base_channels * 2 ** (index + 2)
            layers.append(CatBottleneck(in_channels, out_channels, block_num, stride=2))
            layers.extend(CatBottleneck(out_channels, out_channels, block_num) for _ in range(depth - 1))
            self._taps[len(layers) - 1] = name
            self.out_channels[name] = out_channels
            self.out_strides[name] = 2 ** (index + 3)
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        # BatchNorm2d already starts at weight 1, bias 0.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) -> {"res2": (B, 64, H/4, W/4), ..., "res5": (B, 1024, H/32, W/32)}."""
        features = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self._taps:
                features[self._taps[index]] = x
        return features


def stdc1(**kwargs: int) -> STDCNet:
    """STDC1 (STDCNet813): 2, 2, 2 blocks per stage; 5,318,304 parameters at the defaults."""
    return STDCNet((2, 2, 2), **kwargs)


def stdc2(**kwargs: int) -> STDCNet:
    """STDC2 (STDCNet1446): 4, 5, 3 blocks per stage; 9,348,768 parameters at the defaults."""
    return STDCNet((4, 5, 3), **kwargs)
