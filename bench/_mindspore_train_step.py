"""Worker of bench/train_throughput.py: times DeepLabV3 training steps in MindSpore GRAPH_MODE.

Run in its own process (so its peak RSS is its own); prints one JSON line.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deeplab import cpu_tuning  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--config", required=True)
    parser.add_argument("--crop", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()

    cpu_tuning.apply_to_environ(args.threads)
    import mindspore as ms
    import numpy as np
    from mindspore import nn

    from deeplab.config import load_config
    from deeplab.model import build_model, count_parameters

    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    cpu_tuning.set_mindspore_threads(args.threads)
    ms.set_seed(0)
    cfg = load_config(args.config, [f"crop_size={args.crop}", f"batch_size={args.batch}", *args.overrides])
    net = build_model(cfg)
    loss_fn = nn.CrossEntropyLoss(ignore_index=cfg.ignore_label)
    optimizer = nn.Momentum(net.trainable_params(), learning_rate=cfg.learning_rate, momentum=cfg.momentum,
                            weight_decay=cfg.weight_decay)
    train_step = nn.TrainOneStepCell(nn.WithLossCell(net, loss_fn), optimizer)
    train_step.set_train(True)

    rng = np.random.default_rng(0)
    images = ms.Tensor(rng.normal(size=(args.batch, 3, args.crop, args.crop)).astype(np.float32))
    labels = ms.Tensor(rng.integers(0, cfg.seg_num_classes, size=(args.batch, args.crop, args.crop)).astype(np.int32))

    start = time.perf_counter()
    loss = train_step(images, labels).asnumpy()
    first_step_s = time.perf_counter() - start
    for _ in range(args.warmup):
        train_step(images, labels).asnumpy()
    step_times, cpu_times = [], []
    for _ in range(args.steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = train_step(images, labels).asnumpy()
        step_times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    median = sorted(step_times)[len(step_times) // 2]
    print(json.dumps({
        "framework": "mindspore", "version": ms.__version__, "mode": "GRAPH_MODE",
        "model": f"deeplabv3 {cfg.backbone} os{cfg.output_stride}", "params": count_parameters(net),
        "images_per_s": args.batch * len(step_times) / sum(step_times),
        "images_per_cpu_s": args.batch * len(cpu_times) / sum(cpu_times),
        "step_s_median": median, "first_step_s": first_step_s,
        "graph_compile_s": max(0.0, first_step_s - median), "loss": float(loss),
        "env": cpu_tuning.tuned_cpu_env(args.threads),
    }))


if __name__ == "__main__":
    main()
