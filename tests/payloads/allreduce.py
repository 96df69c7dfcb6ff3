"""A MindSpore data-parallel smoke payload: init() under the dynamic cluster, one AllReduce.

Prints ``allreduce rank R of N: S`` where S must be N*(N+1)/2, and writes allreduce.json.
"""
from __future__ import annotations

import json
import os
import sys


def main() -> int:
    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
    import mindspore as ms
    import numpy as np
    from mindspore import ops
    from mindspore.communication import get_group_size, get_rank, init

    ms.set_device("CPU")
    init()
    rank, size = get_rank(), get_group_size()
    total = float(ops.AllReduce()(ms.Tensor(np.array([rank + 1.0], np.float32))).asnumpy()[0])
    print(f"allreduce rank {rank} of {size}: {total}", flush=True)
    with open("allreduce.json", "w") as handle:
        json.dump({"rank": rank, "size": size, "sum": total}, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
