"""ResNet v1 backbones with atrous convolution, returning the features of every stage.

Output stride 16 replaces the stride of the last stage by dilation 2; output stride 8
does the same to the last two stages (dilation 2 and 4). The last stage's three units
multiply their dilation by the multi-grid rates (1, 2, 4), as in "Rethinking Atrous
Convolution for Semantic Image Segmentation" (Chen et al., 2017).
"""
from __future__ import annotations

from typing import Optional, Sequence, Type, Union

from mindspore import nn, ops

from deeplab.model.layers import batch_norm, conv1x1, conv3x3, conv7x7_stem


class BasicBlock(nn.Cell):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34 unit)."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int, dilation: int,
                 downsample: Optional[nn.Cell], train_statistics: bool) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, planes, stride, dilation)
        self.bn1 = batch_norm(planes, train_statistics)
        self.conv2 = conv3x3(planes, planes, 1, dilation)
        self.bn2 = batch_norm(planes, train_statistics)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def construct(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(ops.add(out, identity))


class Bottleneck(nn.Cell):
    """1x1 reduce -> 3x3 (strided/dilated) -> 1x1 expand, with a residual connection."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int, dilation: int,
                 downsample: Optional[nn.Cell], train_statistics: bool) -> None:
        super().__init__()
        self.conv1 = conv1x1(in_channels, planes)
        self.bn1 = batch_norm(planes, train_statistics)
        self.conv2 = conv3x3(planes, planes, stride, dilation)
        self.bn2 = batch_norm(planes, train_statistics)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = batch_norm(planes * self.expansion, train_statistics)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def construct(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(ops.add(out, identity))


Block = Type[Union[BasicBlock, Bottleneck]]


class ResNet(nn.Cell):
    """ResNet v1 trunk (no classifier). ``construct`` returns the four stage outputs.

    Stage strides are 4, 8, 16, 32 without atrous convolution; ``output_stride`` caps
    them (16: last stage dilated, 8: last two dilated). ``stage_channels`` tells the
    heads how many channels each stage produces.
    """

    def __init__(self, block: Block, layers: Sequence[int], widths: Sequence[int] = (64, 128, 256, 512),
                 output_stride: int = 16, multi_grid: Sequence[int] = (1, 2, 4),
                 train_statistics: bool = True, stem_channels: Optional[int] = None) -> None:
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
        if len(multi_grid) != layers[3]:
            raise ValueError(f"multi_grid needs one rate per unit of the last stage ({layers[3]}), got {multi_grid}")
        self._train_statistics = train_statistics
        stem_channels = stem_channels or widths[0]
        self.in_channels = stem_channels
        self.conv1 = conv7x7_stem(3, stem_channels)
        self.bn1 = batch_norm(stem_channels, train_statistics)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)
        # (stride, dilation) per stage for the requested output stride
        if output_stride == 16:
            plan = [(1, 1), (2, 1), (2, 1), (1, 2)]
        else:
            plan = [(1, 1), (2, 1), (1, 2), (1, 4)]
        self.layer1 = self._make_layer(block, widths[0], layers[0], *plan[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], *plan[1])
        self.layer3 = self._make_layer(block, widths[2], layers[2], *plan[2])
        self.layer4 = self._make_layer(block, widths[3], layers[3], *plan[3], grids=multi_grid)
        self.stage_channels = tuple(width * block.expansion for width in widths)
        self.stage_strides = (4, 8, min(16, output_stride), output_stride)

    def _make_layer(self, block: Block, planes: int, units: int, stride: int, dilation: int,
                    grids: Optional[Sequence[int]] = None) -> nn.SequentialCell:
        grids = grids or [1] * units
        downsample = None
        if stride != 1 or self.in_channels != planes * block.expansion:
            downsample = nn.SequentialCell([
                conv1x1(self.in_channels, planes * block.expansion, stride),
                batch_norm(planes * block.expansion, self._train_statistics),
            ])
        cells = []
        for index in range(units):
            cells.append(block(self.in_channels, planes, stride if index == 0 else 1, dilation * grids[index],
                               downsample if index == 0 else None, self._train_statistics))
            self.in_channels = planes * block.expansion
        return nn.SequentialCell(cells)

    def construct(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return c1, c2, c3, c4


def resnet101(output_stride: int = 16, multi_grid: Sequence[int] = (1, 2, 4),
              train_statistics: bool = True) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 23, 3), output_stride=output_stride, multi_grid=multi_grid,
                  train_statistics=train_statistics)


def resnet50(output_stride: int = 16, multi_grid: Sequence[int] = (1, 2, 4),
             train_statistics: bool = True) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), output_stride=output_stride, multi_grid=multi_grid,
                  train_statistics=train_statistics)


def resnet_tiny(output_stride: int = 16, multi_grid: Sequence[int] = (1, 2, 4),
                train_statistics: bool = True) -> ResNet:
    """A narrow basic-block ResNet (~1.2M parameters) for tests and the synthetic data set."""
    return ResNet(BasicBlock, (1, 1, 2, len(multi_grid)), widths=(16, 32, 64, 128), output_stride=output_stride,
                  multi_grid=multi_grid, train_statistics=train_statistics)
