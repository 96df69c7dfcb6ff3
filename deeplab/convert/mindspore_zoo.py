"""The MindSpore model zoo's checkpoints: its DeepLabV3 and its ImageNet ResNet-50/101.

DeepLabV3 (official/cv/DeepLabv3; ``network.``-prefixed when saved by its train.py, bare
when saved from the network; the same names at output stride 16 and 8): the backbone is
``resnet.*`` with our names; ASPP branch k (1..4) is ``aspp.aspp{k}.aspp_conv.{0,1}``, the
image-pooling branch ``aspp.aspp_pooling.conv.{0,1}``, the projection ``aspp.conv1``/``aspp.bn1``
and the classifier ``aspp.conv2``. Same 552 parameters and shapes as ours.

ResNet (official/cv/ResNet, ImageNet; backbone only): ``down_sample_layer`` for the
projection shortcut and a 1001-class ``end_point`` classifier, which is dropped. Its batch
norms use eps 1e-4 where ours use 1e-5: the moving variance is raised by the difference so
that normalising with the moving statistics gives the zoo network's values exactly. Its
convolutions pad 'same', which equals our symmetric padding on odd input sizes (DeepLab's
513, 321, ... are all odd through every stride) and shifts strided layers by one pixel on
even ones; the stride sits in the 3x3 convolution, as in ours.
"""
from __future__ import annotations

import numpy as np

from deeplab.convert.layout import Layout, Rule, any_match

MS_BN = r"(gamma|beta|moving_mean|moving_variance)"
ZOO_RESNET_BN_EPS = 1e-4
OUR_BN_EPS = 1e-5  # deeplab/model/layers.py batch_norm


class ZooDeepLabV3(Layout):
    name = "mindspore-zoo-deeplabv3"
    description = "MindSpore model zoo DeepLabV3 (resnet.*, aspp.*)"
    rules = (
        Rule(r"resnet\.(.+)", r"backbone.\1"),
        # The zoo counts its ASPP branches from 1 (aspp1 is the 1x1 conv); ours from 0.
        *(Rule(rf"aspp\.aspp{k}\.aspp_conv\.([01])\.(.+)", rf"head.aspp.branches.{k - 1}.\1.\2") for k in range(1, 5)),
        Rule(r"aspp\.aspp_pooling\.conv\.([01])\.(.+)", r"head.aspp.branches.4.project.\1.\2"),
        Rule(r"aspp\.conv1\.(.+)", r"head.aspp.project.0.\1"),
        Rule(r"aspp\.bn1\.(.+)", r"head.aspp.project.1.\1"),
        Rule(r"aspp\.conv2\.(.+)", r"head.classifier.\1"),
    )
    notes = ("the zoo's network keeps ASPP rates 6/12/18 at output stride 8 too: evaluate an OS8 "
             "checkpoint with a *_zoo preset (or atrous_rates=[6,12,18])",)

    def matches(self, names: frozenset[str]) -> bool:
        return "resnet.conv1.weight" in names and any(name.startswith("aspp.") for name in names)


class ZooResNet(Layout):
    name = "mindspore-zoo-resnet"
    description = "MindSpore model zoo ResNet-50/101 ImageNet checkpoint (down_sample_layer, end_point)"
    rules = (
        Rule(r"(conv1\.weight|bn1\.\w+)", r"backbone.\1"),
        Rule(r"(layer\d+\.\d+)\.down_sample_layer\.([01])\.(.+)", r"backbone.\1.downsample.\2.\3"),
        Rule(r"(layer\d+\.\d+\.(conv|bn)\d\.\w+)", r"backbone.\1"),
        Rule(r"end_point\.(weight|bias)", None, "ImageNet classifier (not part of DeepLabV3)"),
    )
    notes = (f"batch-norm eps {ZOO_RESNET_BN_EPS:g} -> {OUR_BN_EPS:g}: moving variances raised by the "
             "difference, so frozen-BN features equal the zoo network's",)

    def matches(self, names: frozenset[str]) -> bool:
        return "conv1.weight" in names and any_match(names, r".*(down_sample_layer|end_point).*") \
            and not any_match(names, r".*running_mean")

    def adjust(self, our_name: str, value: np.ndarray) -> np.ndarray:
        if our_name.endswith(".moving_variance"):
            return (value.astype(np.float64) + (ZOO_RESNET_BN_EPS - OUR_BN_EPS)).astype(value.dtype)
        return value
