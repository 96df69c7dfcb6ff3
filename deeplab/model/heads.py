"""Segmentation heads: features of the backbone's stages -> class logits at feature resolution.

``DeepLabHead`` is DeepLabV3's (ASPP + 1x1 classifier on the last stage).
``DeepLabV3PlusHead`` adds the DeepLabV3+ decoder (Chen et al., 2018): the ASPP output
is upsampled to an earlier, finer stage (stride 4 or 8), concatenated with that stage's
features reduced to a few channels, refined by two 3x3 convolutions, then classified.
"""
from __future__ import annotations

from typing import Sequence

from mindspore import nn, ops

from deeplab.model.aspp import ASPP
from deeplab.model.layers import ConvBNReLU, conv1x1, conv3x3


class DeepLabHead(nn.Cell):
    def __init__(self, in_channels: int, num_classes: int, atrous_rates: Sequence[int],
                 aspp_channels: int = 256, dropout: float = 0.1, train_statistics: bool = True) -> None:
        super().__init__()
        self.aspp = ASPP(in_channels, atrous_rates, aspp_channels, dropout, train_statistics)
        self.classifier = conv1x1(aspp_channels, num_classes, has_bias=True)

    def construct(self, features):
        return self.classifier(self.aspp(features[-1]))


class DeepLabV3PlusHead(nn.Cell):
    """ASPP on the last stage + decoder on stage ``low_level_index`` (0: stride 4, 1: stride 8)."""

    def __init__(self, in_channels: int, low_level_in_channels: int, low_level_index: int, num_classes: int,
                 atrous_rates: Sequence[int], aspp_channels: int = 256, low_level_channels: int = 48,
                 dropout: float = 0.1, train_statistics: bool = True) -> None:
        super().__init__()
        self.low_level_index = low_level_index
        self.aspp = ASPP(in_channels, atrous_rates, aspp_channels, dropout, train_statistics)
        self.reduce = ConvBNReLU(conv1x1(low_level_in_channels, low_level_channels), train_statistics)
        self.refine = nn.SequentialCell([
            ConvBNReLU(conv3x3(aspp_channels + low_level_channels, aspp_channels), train_statistics),
            ConvBNReLU(conv3x3(aspp_channels, aspp_channels), train_statistics),
        ])
        self.classifier = conv1x1(aspp_channels, num_classes, has_bias=True)

    def construct(self, features):
        low_level = self.reduce(features[self.low_level_index])
        context = self.aspp(features[-1])
        context = ops.interpolate(context, size=low_level.shape[2:], mode="bilinear", align_corners=True)
        return self.classifier(self.refine(ops.concat((context, low_level), 1)))
