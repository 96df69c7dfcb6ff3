"""Atrous Spatial Pyramid Pooling (DeepLabV3, section 3.3).

Five parallel branches over the backbone's last features, concatenated and projected:
a 1x1 convolution, three 3x3 convolutions at the atrous rates, and image pooling
(global average -> 1x1 convolution -> broadcast back), each with batch norm and ReLU.
"""
from __future__ import annotations

from typing import Sequence

from mindspore import nn, ops

from deeplab.model.layers import ConvBNReLU, conv1x1, conv3x3


class ASPPConv(ConvBNReLU):
    """One atrous 3x3 branch."""

    def __init__(self, in_channels: int, out_channels: int, rate: int, train_statistics: bool) -> None:
        super().__init__(conv3x3(in_channels, out_channels, dilation=rate), train_statistics)


class ASPPPooling(nn.Cell):
    """Image-level features: global average pooling, 1x1 conv, BN, ReLU, spread over the map."""

    def __init__(self, in_channels: int, out_channels: int, train_statistics: bool) -> None:
        super().__init__()
        self.project = ConvBNReLU(conv1x1(in_channels, out_channels), train_statistics)

    def construct(self, x):
        pooled = self.project(ops.mean(x, (2, 3), True))
        # Bilinear upsampling of a 1x1 map is a broadcast; broadcasting is exact and cheaper.
        return ops.broadcast_to(pooled, (x.shape[0], pooled.shape[1], x.shape[2], x.shape[3]))


class ASPP(nn.Cell):
    """The five branches, concatenated, then 1x1 projection + BN + ReLU + dropout."""

    def __init__(self, in_channels: int, atrous_rates: Sequence[int], out_channels: int = 256,
                 dropout: float = 0.1, train_statistics: bool = True) -> None:
        super().__init__()
        branches = [ConvBNReLU(conv1x1(in_channels, out_channels), train_statistics)]
        branches += [ASPPConv(in_channels, out_channels, rate, train_statistics) for rate in atrous_rates]
        branches.append(ASPPPooling(in_channels, out_channels, train_statistics))
        self.branches = nn.CellList(branches)
        self.project = ConvBNReLU(conv1x1(out_channels * len(branches), out_channels), train_statistics)
        self.dropout = nn.Dropout(p=dropout)
        self.out_channels = out_channels

    def construct(self, x):
        outputs = ()
        for branch in self.branches:
            outputs = outputs + (branch(x),)
        return self.dropout(self.project(ops.concat(outputs, 1)))
