"""Networks with the MindSpore model zoo's parameter names and computation, for conversion tests.

Written for these tests from the zoo's published structure (official/cv/DeepLabv3 and
official/cv/ResNet in mindspore-ai/models), not copied: what matters is that every
parameter has the zoo's name and shape and that the forward pass computes what the zoo's
does, so a checkpoint saved from these is what the zoo's code would save.

- :class:`ZooStyleDeepLabV3`: ``resnet.*`` (stem, ``layerN.i.conv/bn``, ``downsample.{0,1}``,
  max pool padded 'same'), ``aspp.aspp1..4.aspp_conv.{0,1}`` (aspp1 a 1x1 conv),
  ``aspp.aspp_pooling.conv.{0,1}`` (average pool over the whole map, conv, BN, ReLU, nearest
  resize back), ``aspp.conv1``/``bn1`` projection, ``aspp.conv2`` classifier, bilinear
  (align corners) upsampling. ASPP rates 6/12/18 at both output strides.
- :class:`ZooStyleResNet`: the ImageNet ResNet's ``ResidualBlock`` naming
  (``down_sample_layer``, ``end_point``), 'same' padding everywhere, BN eps 1e-4, stride in
  the 3x3 convolution. ``layer4_dilations`` gives its last stage the atrous plan a DeepLab
  backbone uses (stride 1); None keeps the ImageNet stride 2.
Widths and unit counts are parameters so tests can use small networks.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from mindspore import Tensor, nn, ops


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1, bias: bool = False,
          same: bool = False) -> nn.Conv2d:
    if same:
        return nn.Conv2d(cin, cout, kernel, stride=stride, pad_mode="same", dilation=dilation, has_bias=bias)
    return nn.Conv2d(cin, cout, kernel, stride=stride, pad_mode="pad", padding=dilation * (kernel // 2),
                     dilation=dilation, has_bias=bias)


class _ZooBottleneck(nn.Cell):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, dilation: int, downsample: Optional[nn.Cell]):
        super().__init__()
        self.conv1 = _conv(cin, planes, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv(planes, planes * 4, 1)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def construct(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class _ZooResnetTrunk(nn.Cell):
    def __init__(self, layers: Sequence[int], width: int, output_stride: int):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, pad_mode="pad", padding=3)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="same")
        plans = {16: [(1, 1, None), (2, 1, None), (2, 1, None), (1, 2, (1, 2, 4))],
                 8: [(1, 1, None), (2, 1, None), (1, 2, None), (1, 4, (1, 2, 4))]}[output_stride]
        stages = []
        for index, (units, (stride, base, grids)) in enumerate(zip(layers, plans)):
            stages.append(self._stage(width * 2 ** index, units, stride, base, grids or (1,) * units))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

    def _stage(self, planes, units, stride, base, grids):
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.SequentialCell([_conv(self.inplanes, planes * 4, 1, stride), nn.BatchNorm2d(planes * 4)])
        blocks = []
        for unit in range(units):
            blocks.append(_ZooBottleneck(self.inplanes, planes, stride if unit == 0 else 1, base * grids[unit],
                                         downsample if unit == 0 else None))
            self.inplanes = planes * 4
        return nn.SequentialCell(blocks)

    def construct(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class _ZooASPPConv(nn.Cell):
    def __init__(self, cin: int, cout: int, rate: int):
        super().__init__()
        conv = _conv(cin, cout, 1) if rate == 1 else _conv(cin, cout, 3, dilation=rate)
        self.aspp_conv = nn.SequentialCell([conv, nn.BatchNorm2d(cout), nn.ReLU()])

    def construct(self, x):
        return self.aspp_conv(x)


class _ZooASPPPooling(nn.Cell):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.SequentialCell([_conv(cin, cout, 1), nn.BatchNorm2d(cout), nn.ReLU()])

    def construct(self, x):
        height, width = x.shape[2], x.shape[3]
        pooled = nn.AvgPool2d(kernel_size=height)(x)  # square maps: one window over the whole map
        return ops.ResizeNearestNeighbor((height, width), True)(self.conv(pooled))


class _ZooASPP(nn.Cell):
    def __init__(self, cin: int, channels: int, num_classes: int, rates=(1, 6, 12, 18)):
        super().__init__()
        self.aspp1 = _ZooASPPConv(cin, channels, rates[0])
        self.aspp2 = _ZooASPPConv(cin, channels, rates[1])
        self.aspp3 = _ZooASPPConv(cin, channels, rates[2])
        self.aspp4 = _ZooASPPConv(cin, channels, rates[3])
        self.aspp_pooling = _ZooASPPPooling(cin, channels)
        self.conv1 = _conv(channels * 5, channels, 1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.conv2 = _conv(channels, num_classes, 1, bias=True)
        self.drop = nn.Dropout(p=0.7)

    def construct(self, x):
        branches = (self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x), self.aspp_pooling(x))
        out = self.relu(self.bn1(self.conv1(ops.concat(branches, 1))))
        if self.training:
            out = self.drop(out)
        return self.conv2(out)


class ZooStyleDeepLabV3(nn.Cell):
    """The zoo's DeepLabV3 (``resnet.*``, ``aspp.*``); full size: layers (3, 4, 23, 3), width 64, 256."""

    def __init__(self, num_classes: int = 21, output_stride: int = 16, layers: Sequence[int] = (3, 4, 23, 3),
                 width: int = 64, aspp_channels: int = 256):
        super().__init__()
        self.resnet = _ZooResnetTrunk(layers, width, output_stride)
        self.aspp = _ZooASPP(width * 8 * 4, aspp_channels, num_classes)

    def construct(self, x):
        logits = self.aspp(self.resnet(x))
        return ops.interpolate(logits, size=(x.shape[2], x.shape[3]), mode="bilinear", align_corners=True)


class _ZooResidualBlock(nn.Cell):
    expansion = 4

    def __init__(self, cin: int, cout: int, stride: int, dilation: int = 1):
        super().__init__()
        mid = cout // 4
        self.conv1 = _conv(cin, mid, 1, same=True)
        self.bn1 = nn.BatchNorm2d(mid, eps=1e-4, momentum=0.9)
        self.conv2 = _conv(mid, mid, 3, stride, dilation, same=True)
        self.bn2 = nn.BatchNorm2d(mid, eps=1e-4, momentum=0.9)
        self.conv3 = _conv(mid, cout, 1, same=True)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-4, momentum=0.9)
        self.relu = nn.ReLU()
        self.down_sample = stride != 1 or cin != cout
        self.down_sample_layer = None
        if self.down_sample:
            self.down_sample_layer = nn.SequentialCell([_conv(cin, cout, 1, stride, same=True),
                                                        nn.BatchNorm2d(cout, eps=1e-4, momentum=0.9)])

    def construct(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = self.down_sample_layer(x) if self.down_sample else x
        return self.relu(out + identity)


class ZooStyleResNet(nn.Cell):
    """The zoo's ImageNet ResNet (ResidualBlock); ``construct`` returns the four stage outputs."""

    def __init__(self, layers: Sequence[int] = (3, 4, 23, 3), width: int = 64, num_classes: int = 1001,
                 layer4_dilations: Optional[Sequence[int]] = None):
        super().__init__()
        self.conv1 = _conv(3, width, 7, stride=2, same=True)
        self.bn1 = nn.BatchNorm2d(width, eps=1e-4, momentum=0.9)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="same")
        cin = width
        stages = []
        for index, units in enumerate(layers):
            cout = width * 4 * 2 ** index
            stride = 1 if index == 0 else 2
            dilations = [1] * units
            if index == 3 and layer4_dilations is not None:
                stride, dilations = 1, list(layer4_dilations)
            blocks = []
            for unit in range(units):
                blocks.append(_ZooResidualBlock(cin, cout, stride if unit == 0 else 1, dilations[unit]))
                cin = cout
            stages.append(nn.SequentialCell(blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.end_point = nn.Dense(cin, num_classes, has_bias=True)

    def construct(self, x):
        c1 = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        return c1, c2, c3, self.layer4(c3)


def randomise_batch_norms(cell: nn.Cell, seed: int) -> None:
    """Give every BN non-trivial statistics and affine parameters (defaults would hide mistakes)."""
    rng = np.random.default_rng(seed)
    for name, param in cell.parameters_and_names():
        shape = tuple(param.shape)
        if name.endswith(("gamma", "moving_variance")):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(("beta", "moving_mean", "bias")):
            value = rng.normal(0.0, 0.1, shape)
        else:
            continue
        param.set_data(Tensor(value.astype(np.float32)))
