"""torchvision's ResNet-50/101 (ImageNet) and DeepLabV3-ResNet-50/101 state dicts.

Batch norms are the modules with ``running_mean``: ``weight``/``bias`` become gamma/beta,
``running_mean``/``running_var`` the moving statistics (both frameworks use eps 1e-5 and
the same normalisation); ``num_batches_tracked`` is not a weight. Convolution weights are
OIHW in both. torchvision's Bottleneck is "ResNet v1.5" (stride in the 3x3 convolution),
and so is ours, with the same symmetric padding: converted ImageNet weights give the same
features at every input size for the same stride/dilation plan.

The ResNet's ``fc`` (ImageNet classifier) is dropped. From ``deeplabv3_resnet*`` the backbone
and the ASPP load; torchvision's DeepLabHead then has a 3x3 conv + BN + ReLU before its 1x1
classifier, which this model does not have, so that block and the classifier that follows it
are dropped (the classifier is freshly initialised), as is the training-only ``aux_classifier``.
Dilations are not weights: torchvision's segmentation ResNet dilates without multi-grid and
uses ASPP rates 12/24/36 at output stride 8; the weights load into any of our plans.
"""
from __future__ import annotations

from deeplab.convert.layout import Layout, Rule, any_match

BN_SUFFIXES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
_TRUNK = r"(conv1\.weight|bn1\.\w+|layer\d+\.\d+\.(conv\d|bn\d|downsample\.[01])\.\w+)"


class TorchvisionResNet(Layout):
    name = "torchvision-resnet"
    description = "torchvision resnet50/resnet101 state dict (ImageNet)"
    bn_suffixes = BN_SUFFIXES
    non_weight_suffixes = (".num_batches_tracked",)
    rules = (
        Rule(_TRUNK, r"backbone.\1"),
        Rule(r"fc\.(weight|bias)", None, "ImageNet classifier (not part of DeepLabV3)"),
    )

    def matches(self, names: frozenset[str]) -> bool:
        return "conv1.weight" in names and "bn1.running_mean" in names


class TorchvisionDeepLabV3(Layout):
    name = "torchvision-deeplabv3"
    description = "torchvision deeplabv3_resnet50/101 state dict"
    bn_suffixes = BN_SUFFIXES
    non_weight_suffixes = (".num_batches_tracked",)
    _EXTRA = "torchvision's DeepLabHead 3x3 conv + BN between ASPP and classifier (not in this model)"
    rules = (
        Rule(rf"backbone\.{_TRUNK}", r"backbone.\1"),
        Rule(r"classifier\.0\.convs\.([0-3])\.([01])\.(\w+)", r"head.aspp.branches.\1.\2.\3"),
        # ASPPPooling is (AdaptiveAvgPool2d, conv, BN, ReLU): its conv and BN are items 1 and 2.
        Rule(r"classifier\.0\.convs\.4\.1\.(\w+)", r"head.aspp.branches.4.project.0.\1"),
        Rule(r"classifier\.0\.convs\.4\.2\.(\w+)", r"head.aspp.branches.4.project.1.\1"),
        Rule(r"classifier\.0\.project\.([01])\.(\w+)", r"head.aspp.project.\1.\2"),
        Rule(r"classifier\.[12]\.\w+", None, _EXTRA),
        Rule(r"classifier\.4\.\w+", None, "classifier after torchvision's extra 3x3 conv (freshly initialised)"),
        Rule(r"aux_classifier\..+", None, "auxiliary FCN head (training only)"),
    )
    notes = ("torchvision's head has a 3x3 conv + BN before its classifier that this model lacks: backbone "
             "and ASPP are loaded, the classifier is freshly initialised (fine-tune before evaluating)",)

    def matches(self, names: frozenset[str]) -> bool:
        return "backbone.conv1.weight" in names and "backbone.bn1.running_mean" in names \
            and any_match(names, r"classifier\..+")
