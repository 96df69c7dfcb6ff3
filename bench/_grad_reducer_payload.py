"""One compile of one reducer variant, for bench/grad_reducer_compile.py (MindSpore parses cells from a file)."""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops
from deeplab.config import load_config
from deeplab.grad_fusion import FusedGradReducer
from deeplab.model.builders import build_model

ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
variant, config = sys.argv[1], sys.argv[2]
params = build_model(load_config(config)).trainable_params()
shapes = tuple(tuple(p.shape) for p in params)
sizes = tuple(int(np.prod(s)) for s in shapes)


class ComprehensionsSplit(nn.Cell):
    def construct(self, grads):
        flat = ops.concat([ops.reshape(g, (-1,)) for g in grads]) * 0.5
        parts = ops.split(flat, sizes)
        return tuple(ops.reshape(p, s) for p, s in zip(parts, shapes))


_half = ops.MultitypeFuncGraph("half")


@_half.register("Tensor")
def _half_tensor(grad):
    return grad * 0.5


class NoReducer(nn.Cell):
    def __init__(self):
        super().__init__()
        self.map = ops.HyperMap()

    def construct(self, grads):
        return self.map(_half, grads)


if variant == "hypermap_slices":
    cell = FusedGradReducer(params, rank_size=2)
    cell.all_reduce = ops.Identity()
elif variant == "comprehensions_split":
    cell = ComprehensionsSplit()
else:
    cell = NoReducer()
rng = np.random.default_rng(0)
grads = tuple(Tensor(rng.random(s, dtype=np.float32)) for s in shapes)
start = time.perf_counter()
out = cell(grads)
compile_s = time.perf_counter() - start
assert all(np.allclose(o.asnumpy(), g.asnumpy() * 0.5) for o, g in zip(out, grads))
print(f"{compile_s:.4f} {len(shapes)} {sum(sizes)}")
