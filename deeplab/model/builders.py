"""One builder per published configuration, and build_model(cfg) for a Config."""
from __future__ import annotations

from typing import Optional, Sequence

from mindspore import nn

from deeplab.config.schema import DEFAULT_ATROUS_RATES_OS16
from deeplab.model.backbone import ResNet, resnet50, resnet101, resnet_tiny
from deeplab.model.deeplabv3 import DeepLabV3, ImagePyramid
from deeplab.model.heads import DeepLabHead, DeepLabV3PlusHead

# decoder_output_stride -> index of the backbone stage whose features the decoder uses
DECODER_STAGE = {4: 0, 8: 1}


def default_atrous_rates(output_stride: int) -> tuple[int, ...]:
    """(6, 12, 18) at output stride 16, doubled at 8: the receptive field stays the same."""
    return tuple(rate * 16 // output_stride for rate in DEFAULT_ATROUS_RATES_OS16)


def deeplabv3(backbone: ResNet, num_classes: int, atrous_rates: Optional[Sequence[int]] = None,
              aspp_channels: int = 256, dropout: float = 0.1, decoder_output_stride: Optional[int] = None,
              image_pyramid: Optional[Sequence[float]] = None, train_statistics: bool = True) -> nn.Cell:
    """DeepLabV3 (or V3+ with ``decoder_output_stride``) on any backbone from deeplab.model.backbone."""
    output_stride = backbone.stage_strides[-1]
    rates = tuple(atrous_rates) if atrous_rates is not None else default_atrous_rates(output_stride)
    if decoder_output_stride is None:
        head = DeepLabHead(backbone.stage_channels[-1], num_classes, rates, aspp_channels, dropout,
                           train_statistics)
    else:
        if decoder_output_stride not in DECODER_STAGE or decoder_output_stride >= output_stride:
            raise ValueError(f"decoder_output_stride must be 4 or 8 and below the output stride "
                             f"{output_stride}, got {decoder_output_stride}")
        stage = DECODER_STAGE[decoder_output_stride]
        # The reference reduces low-level features to 48 channels next to 256 ASPP channels; keep that ratio.
        low_level_channels = max(8, round(48 * aspp_channels / 256))
        head = DeepLabV3PlusHead(backbone.stage_channels[-1], backbone.stage_channels[stage], stage, num_classes,
                                 rates, aspp_channels, low_level_channels, dropout, train_statistics)
    net = DeepLabV3(backbone, head)
    if image_pyramid is not None and tuple(image_pyramid) != (1.0,):
        net = ImagePyramid(net, image_pyramid)
    return net


def deeplabv3_resnet101(num_classes: int = 21, output_stride: int = 16, multi_grid: Sequence[int] = (1, 2, 4),
                        fine_tune_batch_norm: bool = True, **head_options) -> nn.Cell:
    backbone = resnet101(output_stride, multi_grid, train_statistics=fine_tune_batch_norm)
    return deeplabv3(backbone, num_classes, train_statistics=fine_tune_batch_norm, **head_options)


def deeplabv3_resnet50(num_classes: int = 21, output_stride: int = 16, multi_grid: Sequence[int] = (1, 2, 4),
                       fine_tune_batch_norm: bool = True, **head_options) -> nn.Cell:
    backbone = resnet50(output_stride, multi_grid, train_statistics=fine_tune_batch_norm)
    return deeplabv3(backbone, num_classes, train_statistics=fine_tune_batch_norm, **head_options)


def deeplabv3_tiny(num_classes: int = 21, output_stride: int = 16, multi_grid: Sequence[int] = (1, 2, 4),
                   fine_tune_batch_norm: bool = True, aspp_channels: int = 64, **head_options) -> nn.Cell:
    backbone = resnet_tiny(output_stride, multi_grid, train_statistics=fine_tune_batch_norm)
    return deeplabv3(backbone, num_classes, aspp_channels=aspp_channels, train_statistics=fine_tune_batch_norm,
                     **head_options)


BUILDERS = {"resnet101": deeplabv3_resnet101, "resnet50": deeplabv3_resnet50, "tiny": deeplabv3_tiny}


def build_model(cfg) -> nn.Cell:
    """The network a deeplab.config.Config describes (parameters freshly initialised)."""
    return BUILDERS[cfg.backbone](
        num_classes=cfg.seg_num_classes,
        output_stride=cfg.output_stride,
        multi_grid=tuple(cfg.multi_grid),
        fine_tune_batch_norm=cfg.fine_tune_batch_norm,
        atrous_rates=cfg.effective_atrous_rates,
        aspp_channels=cfg.aspp_channels,
        dropout=cfg.dropout,
        decoder_output_stride=cfg.decoder_output_stride,
        image_pyramid=cfg.image_pyramid,
    )
