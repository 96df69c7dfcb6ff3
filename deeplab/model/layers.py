"""Convolution and batch-norm building blocks shared by the backbone and the heads.

Batch norm has two behaviours, chosen once per model: ``fine_tune_batch_norm=True``
trains its statistics (batch statistics in training, moving averages in evaluation);
False freezes them: the layer always normalises with its stored moving mean/variance,
never updates them, and only gamma/beta learn (as the reference implementations do when
the per-device batch is too small for stable statistics).
"""
from __future__ import annotations

from mindspore import nn
from mindspore.common.initializer import HeNormal


def conv1x1(in_channels: int, out_channels: int, stride: int = 1, has_bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, has_bias=has_bias,
                     weight_init=HeNormal(mode="fan_out", nonlinearity="relu"))


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    # padding = dilation keeps "same" size at stride 1 and TF's (n - 1) / s + 1 at stride 2.
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, pad_mode="pad",
                     padding=dilation, dilation=dilation, has_bias=False,
                     weight_init=HeNormal(mode="fan_out", nonlinearity="relu"))


def conv7x7_stem(in_channels: int, out_channels: int) -> nn.Conv2d:
    """The ResNet stem: 7x7, stride 2."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=7, stride=2, pad_mode="pad", padding=3,
                     has_bias=False, weight_init=HeNormal(mode="fan_out", nonlinearity="relu"))


def batch_norm(num_features: int, train_statistics: bool) -> nn.BatchNorm2d:
    # use_batch_statistics=None: batch statistics in training, moving averages in eval.
    # False: moving averages always, and they are never updated (frozen BN).
    return nn.BatchNorm2d(num_features, eps=1e-5, momentum=0.9,
                          use_batch_statistics=None if train_statistics else False)


class ConvBNReLU(nn.SequentialCell):
    """conv -> batch norm -> ReLU, the unit every DeepLab head is made of."""

    def __init__(self, conv: nn.Conv2d, train_statistics: bool) -> None:
        super().__init__([conv, batch_norm(conv.out_channels, train_statistics), nn.ReLU()])
