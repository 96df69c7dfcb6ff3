"""Payload of bench/allreduce_cost.py: one rank of a 2-rank dynamic cluster timing the gradient
all-reduce of a model alone (no forward/backward). Prints one JSON line (rank 0)."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from deeplab import runtime  # noqa: E402

ms = runtime.start_mindspore("CPU", int(os.environ.get("OMP_NUM_THREADS", "1")))
import numpy as np  # noqa: E402
from mindspore import nn, ops  # noqa: E402
from mindspore.communication import get_rank, init  # noqa: E402

from deeplab.config import load_config  # noqa: E402
from deeplab.model import build_model  # noqa: E402

init()
cfg = load_config(os.environ.get("BENCH_CONFIG", "tiny_synthetic"))
shapes = [p.shape for p in build_model(cfg).trainable_params()]
iters = int(os.environ.get("BENCH_ITERS", "30"))


class PerTensor(nn.Cell):
    """One AllReduce per gradient tensor, each with its own fusion id (never merged)."""

    def __init__(self, count, fused):
        super().__init__()
        self.ops = [ops.AllReduce(ops.ReduceOp.SUM).add_prim_attr("fusion", 1 if fused else 0) for _ in range(count)]

    def construct(self, *tensors):
        return tuple(op(t) for op, t in zip(self.ops, tensors))


class Flat(nn.Cell):
    def __init__(self):
        super().__init__()
        self.op = ops.AllReduce(ops.ReduceOp.SUM)

    def construct(self, flat):
        return self.op(flat)


def timed(cell, args):
    out = cell(*args)
    for item in (out if isinstance(out, tuple) else (out,)):
        item.asnumpy()
    start = time.perf_counter()
    for _ in range(iters):
        out = cell(*args)
        for item in (out if isinstance(out, tuple) else (out,)):
            item.asnumpy()
    return (time.perf_counter() - start) * 1000 / iters


tensors = [ms.Tensor(np.ones(s, np.float32)) for s in shapes]
total = sum(int(np.prod(s)) for s in shapes)
result = {
    "tensors": len(shapes), "floats": total, "megabytes": round(total * 4 / 2**20, 2),
    "per_tensor_unfused_ms": timed(PerTensor(len(shapes), False), tensors),
    "per_tensor_fusion_attr_ms": timed(PerTensor(len(shapes), True), tensors),
    "one_flat_tensor_ms": timed(Flat(), [ms.Tensor(np.ones(total, np.float32))]),
}
if get_rank() == 0:
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}), flush=True)
