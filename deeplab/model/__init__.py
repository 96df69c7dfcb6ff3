"""DeepLabV3 / DeepLabV3+ in MindSpore: ResNet backbones with atrous convolution, ASPP, decoder.

    from deeplab.model import build_model, deeplabv3_resnet101
    net = build_model(cfg)                       # from a deeplab.config.Config
    net = deeplabv3_resnet101(num_classes=21, output_stride=16)

Networks map float32 NCHW images to NCHW logits at the input size. Importing this
package imports MindSpore: call deeplab.cpu_tuning.apply_to_environ() first.
"""
from deeplab.model.aspp import ASPP, ASPPConv, ASPPPooling
from deeplab.model.backbone import BasicBlock, Bottleneck, ResNet, resnet50, resnet101, resnet_tiny
from deeplab.model.builders import (build_model, deeplabv3, deeplabv3_resnet50, deeplabv3_resnet101,
                                    deeplabv3_tiny, default_atrous_rates)
from deeplab.model.deeplabv3 import DeepLabV3, ImagePyramid
from deeplab.model.heads import DeepLabHead, DeepLabV3PlusHead
from deeplab.model.parameters import count_parameters

__all__ = [
    "ASPP", "ASPPConv", "ASPPPooling", "BasicBlock", "Bottleneck", "DeepLabHead", "DeepLabV3",
    "DeepLabV3PlusHead", "ImagePyramid", "ResNet", "build_model", "count_parameters", "deeplabv3",
    "deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3_tiny", "default_atrous_rates",
    "resnet50", "resnet101", "resnet_tiny",
]
