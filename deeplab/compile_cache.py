"""MindSpore's graph compile cache for restarts: where it lives and when it may be reused.

A restart (``--resume``, or the launcher's ``--max-restarts`` with
LAUNCH_TRAIN_RESTART_COUNT > 0) builds the same graphs again; MindSpore can save the
compiled graph (``MS_COMPILER_CACHE_ENABLE=1``, ``MS_COMPILER_CACHE_PATH``; the
``set_context(enable_compile_cache=...)`` spelling is deprecated in 2.x) and load it
instead of compiling. It writes ``<path>/rank_<RANK_ID>/graph_cache/compile_cache_<n>.mindir``
(RANK_ID from the environment, 0 when unset: so every rank gets a path of its own here).

MindSpore invalidates its cache only when the Python sources change, not when shapes do:
measured on 2.10, a graph cached for a 6-step run reloaded in a 9-step run failed with
"For 'Gather', the 'input_indices' should be in the range [0, 6)" (the per-step learning
rate array is baked in). So the cache directory is keyed by everything that shapes the
graphs: the resolved configuration, the step count, the rank count, the device and the
MindSpore version. A restart of the same job finds its key; anything else compiles anew.

Layout: ``<job checkpoint dir>/compile_cache/<key>/rank<R>/rank_*/graph_cache/``; the job's
checkpoint dir is LAUNCH_TRAIN_CKPT_DIR when set, else --ckpt-dir.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, MutableMapping, Optional

CACHE_DIR_NAME = "compile_cache"
ENABLE_VAR = "MS_COMPILER_CACHE_ENABLE"
PATH_VAR = "MS_COMPILER_CACHE_PATH"


# Config fields that never reach a graph: a resume that changes them still finds its cache.
BOOKKEEPING_FIELDS = frozenset({
    "enable_save_ckpt", "save_checkpoint_steps", "save_checkpoint_num", "save_ckpt_all_ranks", "ckpt_pre_trained",
    "data_root", "train_split", "val_split", "log_every_steps", "eval_every_epochs", "compile_cache",
    "num_parallel_workers",
})


def cache_key(config: Mapping[str, Any], total_steps: int, rank_size: int, device_target: str,
              mindspore_version: str) -> str:
    """16 hex digits identifying the graphs one training run compiles."""
    shaping = {name: value for name, value in config.items() if name not in BOOKKEEPING_FIELDS}
    doc = {"config": shaping, "total_steps": total_steps, "rank_size": rank_size,
           "device_target": device_target, "mindspore": mindspore_version}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def job_checkpoint_dir(ckpt_dir: Path, environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get("LAUNCH_TRAIN_CKPT_DIR") or ckpt_dir)


def cache_dir(ckpt_dir: Path, key: str, rank_id: int, environ: Mapping[str, str] = os.environ) -> Path:
    """This rank's cache directory for graphs of ``key``."""
    return job_checkpoint_dir(ckpt_dir, environ) / CACHE_DIR_NAME / key / f"rank{rank_id}"


def cached_graphs(directory: Path) -> list[Path]:
    """The compiled graphs MindSpore saved under a rank's cache directory."""
    return sorted(Path(directory).glob("rank_*/graph_cache/*.mindir"))


def enable(directory: Path, environ: Optional[MutableMapping[str, str]] = None) -> bool:
    """Point MindSpore's compile cache at ``directory`` (read when a graph compiles).

    A user's MS_COMPILER_CACHE_ENABLE=0 wins (returns False); their own MS_COMPILER_CACHE_PATH
    is replaced, because an unkeyed cache can hand back a graph of other shapes.
    """
    target = os.environ if environ is None else environ
    if target.get(ENABLE_VAR, "").strip() == "0":
        return False
    Path(directory).mkdir(parents=True, exist_ok=True)
    target[ENABLE_VAR] = "1"
    target[PATH_VAR] = str(Path(directory).resolve())
    return True
