"""One all-reduce per step instead of one per gradient tensor (data parallel on the CPU).

MindSpore's DistributedGradReducer issues an AllReduce per parameter and relies on the
backend to fuse those with the same ``fusion`` id; on the CPU backend they are not fused.
Measured (bench/allreduce_cost.py, tiny_synthetic's 74 gradients = 4.7 MB, 2 ranks over
loopback): 98-106 ms per step per-tensor, fusion attribute or not, vs 23 ms for the same
floats as one tensor. This reducer concatenates the gradients into one flat buffer,
all-reduces it once, divides by the rank count (``gradients_mean``) and slices it back.

Both ways are HyperMaps over the gradients (and their constant offsets, sizes, shapes),
as DistributedGradReducer itself does, not Python comprehensions or loops: the graph
compiler unrolls those, which took 9.6 s to compile for tiny_synthetic's 74 gradients
(with one 74-way ``ops.split``) and exceeded MindSpore's call depth limit for the 332 of
ResNet-101; HyperMaps compile in about 1 s and 4.4 s (bench/grad_reducer_compile.py).

Importing this module imports MindSpore: train.py imports it after the CPU tuning.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from mindspore import nn, ops

_flatten = ops.MultitypeFuncGraph("flatten")
_slice_back = ops.MultitypeFuncGraph("slice_back")


@_flatten.register("Tensor")
def _flatten_tensor(grad):
    return ops.reshape(grad, (-1,))


@_slice_back.register("Tensor", "Number", "Number", "Tuple")
def _slice_back_tensor(flat, offset, size, shape):
    return ops.reshape(ops.slice(flat, (offset,), (size,)), shape)


class FusedGradReducer(nn.Cell):
    """Mean over the ranks of a tuple of gradients, in one AllReduce of their concatenation."""

    def __init__(self, parameters: Sequence, rank_size: int) -> None:
        super().__init__(auto_prefix=False)
        if rank_size < 1:
            raise ValueError(f"rank_size must be >= 1, got {rank_size}")
        dtypes = {param.dtype for param in parameters}
        if len(dtypes) != 1:
            raise ValueError(f"one flat buffer needs one gradient dtype, got {sorted(map(str, dtypes))}")
        self.shapes = tuple(tuple(param.shape) for param in parameters)
        self.sizes = tuple(int(np.prod(shape)) for shape in self.shapes)
        self.offsets = tuple(int(offset) for offset in np.cumsum((0,) + self.sizes[:-1]))
        self.map = ops.HyperMap()
        self.all_reduce = ops.AllReduce(ops.ReduceOp.SUM)
        self.scale = 1.0 / rank_size

    def construct(self, grads):
        flat = ops.concat(self.map(_flatten, grads))
        flat = self.all_reduce(flat) * self.scale
        return self.map(ops.partial(_slice_back, flat), self.offsets, self.sizes, self.shapes)
