"""Throughput of the DeepLabV3 train pipeline (decode + scale + pad + crop + flip + normalise).

Usage:
    python bench/data_pipeline.py [--workers 1,2] [--crop 513] [--n 200] [--size 375] [--batch 2]

Generates a synthetic VOC-layout set (deeplab-synth, images --size pixels high like VOC's
~375x500) in a temporary directory, then for each worker count times --n augmented samples
through ``deeplab.data.pipeline.build_train_dataset`` and prints one JSON object:

    {"crop": 513, "image_height": 375, "n": 200, "cpus": 2,
     "results": [{"workers": 1, "python_multiprocessing": false, "samples_per_s": ...}, ...]}

Worker counts above 1 are measured both with worker processes (python_multiprocessing)
and with threads. The first batch (worker start-up) is not timed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deeplab.cpu_tuning import apply_to_environ  # noqa: E402

apply_to_environ()

from deeplab.data.pipeline import build_train_dataset  # noqa: E402
from deeplab.data.synth import write_synthetic_voc  # noqa: E402


def measure(data_root: Path, crop: int, workers: int, multiprocessing: bool, n: int, batch: int) -> float:
    cfg = SimpleNamespace(crop_size=crop, min_scale=0.5, max_scale=2.0, image_mean=[103.53, 116.28, 123.675],
                          image_std=[57.375, 57.120, 58.395], ignore_label=255, batch_size=batch,
                          num_parallel_workers=workers, seed=1, train_split="train", val_split="val")
    dataset = build_train_dataset(cfg, data_root, python_multiprocessing=multiprocessing)
    iterator = dataset.create_tuple_iterator(output_numpy=True, num_epochs=-1)
    next(iterator)
    done, start = 0, time.perf_counter()
    while done < n:
        try:
            done += next(iterator)[0].shape[0]
        except StopIteration:  # end of an epoch; the next call starts the next one
            continue
    elapsed = time.perf_counter() - start
    del iterator, dataset
    return done / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default %(default)s)")
    parser.add_argument("--crop", type=int, default=513)
    parser.add_argument("--n", type=int, default=200, help="augmented samples timed per setting")
    parser.add_argument("--size", type=int, default=375, help="synthetic image height (VOC: ~375)")
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-data-") as temp:
        started = time.perf_counter()
        root = write_synthetic_voc(Path(temp) / "voc", train=min(args.n, 100), val=1, size=args.size, seed=0)
        synth_s = time.perf_counter() - started
        results = []
        for count in workers:
            for multiprocessing in ([False] if count == 1 else [True, False]):
                rate = measure(root, args.crop, count, multiprocessing, args.n, args.batch)
                results.append({"workers": count, "python_multiprocessing": multiprocessing,
                                 "samples_per_s": round(rate, 1)})
    print(json.dumps({"crop": args.crop, "image_height": args.size, "n": args.n, "batch": args.batch,
                      "cpus": len(os.sched_getaffinity(0)), "synth_images": min(args.n, 100) + 1,
                      "synth_seconds": round(synth_s, 2), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
