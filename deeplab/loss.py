"""Pixel-wise softmax cross-entropy that ignores void pixels (label 255 in VOC).

Importing this module imports MindSpore: entry points import it only after
``deeplab.cpu_tuning.apply_to_environ()``.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops


class SoftmaxCrossEntropyLoss(nn.Cell):
    """Mean cross-entropy over the pixels whose label is not ``ignore_label``.

    logits: float NCHW (C = num_classes) at the label's size; labels: int NHW.
    A batch with no valid pixel has loss 0 (not NaN), so one all-void crop cannot poison
    the weights.
    """

    def __init__(self, num_classes: int, ignore_label: int = 255) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.cross_entropy = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="none")

    def construct(self, logits, labels):
        # The loss stays float32 under mixed precision: log-sum-exp in float16 overflows.
        logits = ops.cast(logits, ms.float32)
        logits = ops.transpose(logits, (0, 2, 3, 1)).reshape((-1, self.num_classes))
        labels = ops.cast(labels, ms.int32).reshape((-1,))
        valid = ops.not_equal(labels, self.ignore_label)
        # Void pixels get class 0 so the kernel sees an in-range index; their weight is 0.
        safe_labels = ops.select(valid, labels, ops.zeros_like(labels))
        weights = ops.cast(valid, ms.float32)
        per_pixel = self.cross_entropy(logits, safe_labels)
        total = ops.reduce_sum(per_pixel * weights)
        count = ops.maximum(ops.reduce_sum(weights), 1.0)
        return total / count


class NetWithLoss(nn.Cell):
    """model + loss as one cell; its parameter names (``network.*``) are the checkpoint's."""

    def __init__(self, network: nn.Cell, criterion: nn.Cell) -> None:
        super().__init__()
        self.network = network
        self.criterion = criterion

    def construct(self, images, labels):
        return self.criterion(self.network(images), labels)
