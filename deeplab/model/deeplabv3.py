"""DeepLabV3: backbone -> head -> bilinear upsampling of the logits to the input size."""
from __future__ import annotations

from typing import Sequence

from mindspore import nn, ops


class DeepLabV3(nn.Cell):
    """Maps float32 NCHW images to NCHW logits (one channel per class) at the input's size."""

    def __init__(self, backbone: nn.Cell, head: nn.Cell) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def construct(self, x):
        logits = self.head(self.backbone(x))
        return ops.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=True)


def scaled_size(size: int, scale: float) -> int:
    """TF DeepLab's scale_dimension: keeps corner pixels aligned for align_corners resizing."""
    return int((size - 1) * scale + 1)


class ImagePyramid(nn.Cell):
    """Runs ``net`` on the input resized by each scale and merges the logits by maximum.

    This is the reference's ``image_pyramid`` (multi-scale inputs inside the model, trained
    end to end); each scale's logits are resized back to the input size before merging.
    """

    def __init__(self, net: nn.Cell, scales: Sequence[float]) -> None:
        super().__init__()
        if not scales or min(scales) <= 0:
            raise ValueError(f"image pyramid scales must be positive, got {scales}")
        self.net = net
        self.scales = tuple(float(scale) for scale in scales)

    def construct(self, x):
        height, width = x.shape[2], x.shape[3]
        merged = None
        for scale in self.scales:
            if scale == 1.0:
                logits = self.net(x)
            else:
                size = (scaled_size(height, scale), scaled_size(width, scale))
                scaled = ops.interpolate(x, size=size, mode="bilinear", align_corners=True)
                logits = ops.interpolate(self.net(scaled), size=(height, width), mode="bilinear",
                                         align_corners=True)
            merged = logits if merged is None else ops.maximum(merged, logits)
        return merged
