"""Parameter counting, the way papers and model zoos report model size."""
from __future__ import annotations

from mindspore import nn


def count_parameters(net: nn.Cell, trainable_only: bool = True) -> int:
    """Number of scalar parameters; by default only trainable ones (BN moving statistics excluded)."""
    params = net.trainable_params() if trainable_only else net.get_parameters()
    return sum(int(param.size) for param in params)
