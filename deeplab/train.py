"""deeplab-train: train DeepLabV3 on a PASCAL VOC 2012-layout data set with MindSpore.

Usage:
    deeplab-train --config NAME|FILE.yaml --data-root DIR [--set key=value ...]
                  [--train-steps N] [--ckpt-dir DIR] [--resume] [--device-target CPU|GPU|Ascend]
                  [--eval-split NAME]
    python -m deeplab.train ...            (what launch-train runs in each LOG<rank>/)

--config        a preset (voc_r101_os16, voc_r101_os8, voc_r50_os16, tiny_synthetic) or a YAML file
--data-root     a VOC2012-layout root (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/)
                or a deeplab-prepare-voc output directory
--set k=v       override any config field (repeatable), e.g. --set learning_rate=0.01
--train-steps   stop after N global steps (default: epoch_size x steps per epoch); the
                learning-rate schedule spans these N steps
--ckpt-dir      where checkpoints go (default $LAUNCH_TRAIN_CKPT_DIR, else ./ckpt); it must not
                already hold checkpoints unless --resume is given
--resume        continue from the newest checkpoint in --ckpt-dir: weights, momentum
                accumulators, global step (and so the learning rate) are restored and the run
                ends at the same final step as an uninterrupted one; starts from step 0 when
                the directory holds no checkpoint yet. In a distributed run every rank loads
                rank 0's newest checkpoint, so give all ranks one shared --ckpt-dir (or use
                save_ckpt_all_ranks=true); ranks that find different steps stop with exit 2.
                Implied when LAUNCH_TRAIN_RESTART_COUNT > 0 (launch-train's restarts).
--device-target CPU, GPU or Ascend (default $DEVICE_TARGET, which launch-train sets for every
                rank; else what the start-up implies: RANK_TABLE_FILE -> Ascend, Open MPI ->
                GPU; else CPU)

Under launch-train (see launcher/job/rank_env.py) every rank also gets DEVICE_TARGET,
LAUNCH_TRAIN_CKPT_DIR (one directory for all ranks) and LAUNCH_TRAIN_RESTART_COUNT, so the
same arguments work on every platform and every restart resumes by itself.

Distributed runs: the program reads the environment MindSpore's start-ups define (see
deeplab/distributed.py): dynamic cluster (MS_ROLE=MS_WORKER, MS_WORKER_NUM, MS_NODE_ID,
MS_SCHED_HOST, MS_SCHED_PORT; CPU/GPU/Ascend), rank table (RANK_TABLE_FILE, RANK_ID,
RANK_SIZE, DEVICE_ID; Ascend) or Open MPI (OMPI_COMM_WORLD_*; GPU/Ascend, refused on CPU
where MindSpore cannot initialise under mpirun). With none of them it is one process.
Gradients are averaged over ranks (data parallel); each rank reads its own shard.

CPU threads: cfg.threads when > 0; otherwise OMP_NUM_THREADS when set (launch-train sets it
per rank); otherwise the usable cores divided by the ranks on this host. ONEDNN_MAX_CPU_ISA
is capped at AVX2 on AVX-512 CPUs before MindSpore loads (deeplab/cpu_tuning.py).

Output (stdout, flushed per line; every rank prints its own):
    deeplab-train: rank 0 of 2 (...), ... batch 4 per rank x 2 rank(s) = global batch 8, learning rate ...
    epoch: 1 step: 20, loss is 0.11594                     every log_every_steps steps (step within
                                                           the epoch; also each epoch's last step)
    Epoch time: 78748.379, per step time: 107.378          at each epoch end, milliseconds
    eval at step 370 (epoch 10, 'val', 60 images, scale 1.5, 2.1 s): mIoU = 0.81234
                                                           rank 0, every eval_every_epochs epochs and
                                                           at the end (single scale train_eval_scale)

Batch and learning rate: global_batch_size (split over the ranks; must divide) or batch_size
per rank; learning_rate is stated for lr_reference_batch and scaled linearly to the global
batch, with linear warm-up over warmup_steps or warmup_epochs (deeplab/batch_plan.py).
Evaluation during training (--set eval_every_epochs=N, --eval-split NAME): rank 0 keeps
<ckpt-dir>/deeplab-best.ckpt, the checkpoint of the highest mIoU so far.
Compile cache (compile_cache=true): compiled graphs are kept under <job ckpt dir>/compile_cache/
(LAUNCH_TRAIN_CKPT_DIR when set, else --ckpt-dir), keyed by config and step count, so a
restart or --resume of the same run skips the graph compile (deeplab/compile_cache.py).
Checkpoints <ckpt-dir>/deeplab-step<NNNNNN>.ckpt every save_checkpoint_steps steps and at the
end, the newest save_checkpoint_num kept, written atomically by rank 0 only (every rank with
--set save_ckpt_all_ranks=true: deeplab-rank<R>-step<NNNNNN>.ckpt). The resolved
configuration is written to <ckpt-dir>/config.yaml by the ranks that save checkpoints.

Exit status: 0 done; 2 bad input (missing data root, bad label file, unknown config key,
corrupt checkpoint, unusable distributed environment), one line on stderr; 143 stopped by
SIGTERM (130 by Ctrl-C) - the launcher stops ranks with SIGTERM. SIGUSR1 asks for "save and
stop" (launch-train sends it on a preemption): the current step is finished, every rank stops at
the same step, the ranks that save write a checkpoint of it, and the program exits 0 after
"deeplab-train: saved and stopped at step N ..."; a later --resume (or launch-train restart,
launch-train --resume JOB_DIR) continues at step N + 1. Checkpoints are also written every
save_checkpoint_seconds (when > 0), so a crash loses half that interval on average.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from deeplab import checkpoints, runtime
from deeplab.checkpoints import CheckpointError
from deeplab.config import ConfigError
from deeplab.data.errors import DataError
from deeplab.distributed import DistributedError

DEVICE_TARGETS = runtime.DEVICE_TARGETS
EXIT_BAD_INPUT = 2


class UsageError(ValueError):
    """A bad flag or path; the message is the one line shown to the user."""


class Terminated(Exception):
    """The process received SIGTERM/SIGINT; training stops where it is."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


USER_ERRORS = (UsageError, ConfigError, DataError, CheckpointError, DistributedError)


@dataclass(frozen=True)
class TrainOptions:
    config: str
    data_root: Path
    overrides: tuple[str, ...] = ()
    train_steps: Optional[int] = None
    ckpt_dir: Path = Path("ckpt")
    resume: bool = False
    device_target: str = "CPU"
    eval_split: Optional[str] = None  # evaluation during training (eval_every_epochs); None: cfg.val_split

    def __post_init__(self) -> None:
        if self.device_target not in DEVICE_TARGETS:
            raise UsageError(f"--device-target {self.device_target!r}: must be one of {', '.join(DEVICE_TARGETS)}")
        if self.train_steps is not None and self.train_steps < 1:
            raise UsageError(f"--train-steps {self.train_steps}: must be >= 1")
        if not Path(self.data_root).is_dir():
            raise UsageError(f"--data-root {self.data_root}: no such directory")


@dataclass
class TrainResult:
    final_step: int
    start_step: int
    rank_id: int
    rank_size: int
    stopped_at: Optional[int] = None  # the step a "save and stop" request (SIGUSR1) ended the run at
    losses: list[float] = field(default_factory=list)  # the logged ones (every log_every_steps)
    checkpoints: list[Path] = field(default_factory=list)
    evaluations: list[tuple[int, float]] = field(default_factory=list)  # (step, mIoU) during training


@dataclass(frozen=True)
class StepPosition:
    """Where global step ``step`` (1-based) falls: its epoch and its step within the epoch."""

    epoch: int
    step_in_epoch: int

    @classmethod
    def of(cls, step: int, steps_per_epoch: int) -> "StepPosition":
        return cls(epoch=(step - 1) // steps_per_epoch + 1, step_in_epoch=(step - 1) % steps_per_epoch + 1)


def format_step_line(epoch: int, step_in_epoch: int, loss: float) -> str:
    return f"epoch: {epoch} step: {step_in_epoch}, loss is {loss:.5f}"


def format_epoch_line(epoch_ms: float, steps: int) -> str:
    return f"Epoch time: {epoch_ms:.3f}, per step time: {epoch_ms / max(steps, 1):.3f}"


def plan_epochs(start_step: int, total_steps: int, steps_per_epoch: int) -> list[tuple[int, int, int]]:
    """(epoch, first step in epoch, steps to run) for every epoch left between start_step and total_steps."""
    plan = []
    step = start_step
    while step < total_steps:
        position = StepPosition.of(step + 1, steps_per_epoch)
        run = min(steps_per_epoch - position.step_in_epoch + 1, total_steps - step)
        plan.append((position.epoch, position.step_in_epoch, run))
        step += run
    return plan


def _print(line: str) -> None:
    print(line, flush=True)


def _raise_terminated(signum, _frame) -> None:
    raise Terminated(signum)


def keep_global_batch(cfg, rank_size: int, environ: Mapping[str, str]):
    """On fewer ranks than the job was planned for (LAUNCH_TRAIN_PLANNED_RANKS: hosts were lost and
    the launcher went on without them), keep the job's global batch, and with it the learning rate
    and the steps per epoch: a larger batch per rank. (cfg, what the start-up line says about it)."""
    raw = environ.get("LAUNCH_TRAIN_PLANNED_RANKS", "").strip()
    if not (raw.isascii() and raw.isdigit() and 0 < len(raw) < 8) or int(raw) == rank_size:
        return cfg, ""
    planned = int(raw)
    global_batch = cfg.global_batch_size or cfg.batch_size * planned
    if global_batch % rank_size:
        raise UsageError(f"LAUNCH_TRAIN_PLANNED_RANKS={planned}: the job's global batch {global_batch} does not "
                         f"divide over the {rank_size} rank(s) left; set global_batch_size to a multiple of both")
    return cfg.replace(global_batch_size=global_batch), (
        f" (the job's global batch of {planned} planned ranks, kept with a larger batch per rank)")


def data_workers(cfg_workers: int, threads: int) -> int:
    """Data workers for one rank: num_parallel_workers when set, else one per thread (core) it owns.

    More workers than cores only add processes that preempt the training threads (several
    workers are processes, bound to the rank's cores by the launcher): bench/dp_overhead.py.
    """
    return int(cfg_workers) if cfg_workers > 0 else max(1, int(threads))


def should_log(step: int, step_in_epoch: int, steps_per_epoch: int, total_steps: int, every: int) -> bool:
    """Read the loss back at every ``every``-th global step, at each epoch's last step and the final one."""
    return every <= 1 or step % every == 0 or step_in_epoch == steps_per_epoch or step == total_steps


class SaveAndStop:
    """SIGUSR1 asks for "save a checkpoint and stop" (launch-train sends it before a preemption).

    The step under way is finished; then every rank must stop at the same step, or a rank still
    training would wait forever in the next all-reduce for one that left: in a distributed run
    the ranks vote after every step (one all-reduce of one number), and all stop when any was asked.
    """

    def __init__(self) -> None:
        self.asked = False
        self._vote = None

    def __call__(self, signum, frame) -> None:
        self.asked = True

    def agreed(self, distributed: bool) -> bool:
        if not distributed:
            return self.asked
        if self._vote is None:
            self._vote = _AllSum()
        import numpy as np
        import mindspore as ms

        return float(self._vote(ms.Tensor(np.array([1.0 if self.asked else 0.0], dtype=np.float32))).asnumpy()[0]) > 0


SAVE_AND_STOP = SaveAndStop()


@dataclass
class Training:
    """Everything build_training made for one run: config, where this rank stands, data, network, saver."""

    opts: TrainOptions
    cfg: Any
    start: Any  # deeplab.distributed's view of this rank (joined)
    ms: Any  # the mindspore module, imported once the CPU tuning is in place
    dataset: Any
    steps_per_epoch: int
    total_steps: int
    network: Any
    train_step: Any  # the network with loss, optimizer and gradient reducer: one call is one step
    saver: Optional[checkpoints.CheckpointSaver]
    prefix: str
    evaluator: Any = None
    eval_split: str = ""

    last_save: float = field(default_factory=time.monotonic)
    timer: Optional["StepTimer"] = None

    @property
    def ckpt_dir(self) -> Path:
        return Path(self.opts.ckpt_dir)

    def checkpoint_due(self, step: int) -> bool:
        """Every save_checkpoint_steps steps, every save_checkpoint_seconds (when > 0), and at the end."""
        cfg = self.cfg
        due = step % cfg.save_checkpoint_steps == 0 or step == self.total_steps or (
            cfg.save_checkpoint_seconds > 0 and time.monotonic() - self.last_save >= cfg.save_checkpoint_seconds)
        if due:
            self.last_save = time.monotonic()
        return due


def build_training(opts: TrainOptions) -> Training:
    """Config, distributed start, MindSpore, data, model, optimizer, evaluator and saver; no step run yet."""
    from deeplab import distributed
    from deeplab.batch_plan import plan_batch
    from deeplab.config import load_config

    cfg = load_config(opts.config, overrides=opts.overrides)
    start = distributed.detect()
    cfg, kept = keep_global_batch(cfg, start.rank_size, os.environ)
    batch_plan = plan_batch(cfg, start.rank_size)  # a global batch that does not divide stops here
    threads = runtime.resolve_threads(cfg.threads, start.ranks_on_host)
    # The resolved config: what this rank really runs (config.yaml and collect-results read it).
    cfg = cfg.replace(batch_size=batch_plan.per_rank_batch, lr_reference_batch=batch_plan.reference_batch,
                      num_parallel_workers=data_workers(cfg.num_parallel_workers, threads))
    # MindSpore is imported only now: the CPU tuning must be in the environment first. So are the
    # modules below, which import it.
    ms = runtime.start_mindspore(opts.device_target, threads, seed=cfg.seed)
    from mindspore import nn

    from deeplab import compile_cache
    from deeplab.data.pipeline import build_train_dataset
    from deeplab.loss import NetWithLoss, SoftmaxCrossEntropyLoss
    from deeplab.lr_schedule import schedule_from_config
    from deeplab.model import build_model
    from deeplab.train_eval import TrainingEvaluator

    start = distributed.join(start, opts.device_target)
    saves = cfg.enable_save_ckpt and (start.rank_id == 0 or cfg.save_ckpt_all_ranks)
    prefix = checkpoints.checkpoint_prefix(start.rank_id, cfg.save_ckpt_all_ranks)
    ckpt_dir = Path(opts.ckpt_dir)
    if not opts.resume and saves and checkpoints.list_checkpoints(ckpt_dir, prefix):
        raise UsageError(
            f"--ckpt-dir {ckpt_dir}: already holds checkpoints ({checkpoints.newest_checkpoint(ckpt_dir, prefix).name}); "
            "pass --resume to continue from them or choose another directory"
        )

    dataset = build_train_dataset(cfg, opts.data_root, rank_id=start.rank_id, rank_size=start.rank_size)
    steps_per_epoch = dataset.get_dataset_size()
    if steps_per_epoch < 1:
        raise UsageError(
            f"--data-root {opts.data_root}: too few '{cfg.train_split}' images for one batch of "
            f"{cfg.batch_size} per rank over {start.rank_size} rank(s)"
        )
    total_steps = opts.train_steps or cfg.epoch_size * steps_per_epoch
    cache = None
    if cfg.compile_cache:
        key = compile_cache.cache_key(cfg.to_dict(), total_steps, start.rank_size, opts.device_target, ms.__version__)
        cache = compile_cache.cache_dir(ckpt_dir, key, start.rank_id)
        cache = cache if compile_cache.enable(cache) else None
    how = f"{start.mode} start" if start.is_distributed else "single process"
    _print(f"deeplab-train: rank {start.rank_id} of {start.rank_size} ({how}), "
           f"{opts.device_target} with {threads} thread(s) and {cfg.num_parallel_workers} data worker(s), "
           f"{total_steps} steps ({steps_per_epoch} per epoch), {batch_plan.describe()}{kept}, "
           f"checkpoints {'in ' + str(ckpt_dir) if saves else 'off on this rank'}")
    if cache is not None:
        found = compile_cache.cached_graphs(cache)
        _print(f"compile cache {cache}: {'reusing ' + str(len(found)) + ' graph(s)' if found else 'empty, filling it'}")

    network = build_model(cfg)
    train_net = NetWithLoss(network, SoftmaxCrossEntropyLoss(cfg.seg_num_classes, cfg.ignore_label))
    if cfg.ckpt_pre_trained and not (opts.resume and checkpoints.newest_checkpoint(ckpt_dir, prefix)):
        _load_pretrained(train_net, Path(cfg.ckpt_pre_trained))
    rates = schedule_from_config(cfg, total_steps, steps_per_epoch, lr_scale=batch_plan.lr_scale).rates()
    # BN gamma/beta are left out of weight decay by MindSpore's default filter (as in the reference).
    optimizer = nn.Momentum(train_net.trainable_params(), learning_rate=ms.Tensor(rates),
                            momentum=cfg.momentum, weight_decay=cfg.weight_decay, loss_scale=cfg.loss_scale)
    # Fixed loss scale: the loss is multiplied by loss_scale for the backward pass and the
    # optimizer divides the gradients by it again (no overflow skipping, like the reference).
    train_step = ms.amp.build_train_network(
        train_net, optimizer, level=cfg.amp_level,
        loss_scale_manager=ms.amp.FixedLossScaleManager(cfg.loss_scale, drop_overflow_update=False),
    )
    if start.is_distributed and cfg.fuse_allreduce and opts.device_target == "CPU":
        # The CPU backend does not fuse the per-gradient all-reduces (deeplab/grad_fusion.py).
        from deeplab.grad_fusion import FusedGradReducer

        train_step.grad_reducer = FusedGradReducer(optimizer.parameters, start.rank_size)
    train_step.set_train(True)
    # Rank 0 alone evaluates (the others wait for it in the next step's all-reduce).
    eval_split = opts.eval_split or cfg.val_split
    evaluates = cfg.eval_every_epochs > 0 and start.rank_id == 0
    evaluator = TrainingEvaluator(cfg, network, Path(opts.data_root), eval_split) if evaluates else None
    saver = checkpoints.CheckpointSaver(ckpt_dir, keep=cfg.save_checkpoint_num, prefix=prefix) if saves else None
    return Training(opts=opts, cfg=cfg, start=start, ms=ms, dataset=dataset, steps_per_epoch=steps_per_epoch,
                    total_steps=total_steps, network=network, train_step=train_step, saver=saver, prefix=prefix,
                    evaluator=evaluator, eval_split=eval_split, timer=StepTimer(cfg.timing_every_steps))


def resume(training: Training) -> int:
    """The step to continue from: the newest checkpoint's with --resume (every rank the same), else 0.

    Every rank resumes from the checkpoints of the rank(s) that save: the prefix of a rank that
    does not save is rank 0's, so all ranks load the same weights when they share --ckpt-dir;
    _agree_on_start_step refuses a run whose ranks found different steps.
    """
    opts, ckpt_dir = training.opts, training.ckpt_dir
    resume_from = checkpoints.newest_checkpoint(ckpt_dir, training.prefix) if opts.resume else None
    start_step = 0
    if resume_from is not None:
        state = checkpoints.restore_training(training.train_step, resume_from)
        start_step = state.step
        _print(f"resumed from {resume_from} at step {start_step}")
    elif opts.resume:
        _print(f"no checkpoint in {ckpt_dir}; starting from step 0")
    if training.start.is_distributed:
        _agree_on_start_step(start_step, ckpt_dir)
    if start_step > training.total_steps:
        raise UsageError(f"--train-steps {training.total_steps}: the checkpoint {resume_from} is already at step "
                         f"{start_step}")
    return start_step


class StepTimer:
    """Where this rank's time goes, for telling a slow rank apart (launch-train names stragglers).

    In synchronous data parallel every rank's step takes as long as the slowest one's, so the step
    time names no one. What differs is a rank's own share: how long it waited for its next batch
    (a slow data disk, a starved data worker) and how fast its device is when nothing waits on
    anyone (a fixed piece of local work, timed: a throttled CPU or device). Every ``every`` steps
    one line gives the medians of the window:

        timing: steps 21-40, data wait 0.0012 s, step 0.1801 s, device probe 0.0031 s
    """

    # A 160x160 float32 matmul, 240 times: about 20 ms on one core, no communication. Long enough to
    # span several of the OS scheduler's time slices, so a rank that gets only part of its CPU (a
    # throttled or shared core) takes visibly longer; short enough to cost under 1% every 20 steps.
    PROBE_SIZE = 160
    PROBE_REPEATS = 240

    def __init__(self, every: int) -> None:
        self.every = every
        self.data: list[float] = []
        self.steps: list[float] = []
        self.first_step: Optional[int] = None
        import numpy as np

        rng = np.random.default_rng(0)
        self._probe_a = rng.standard_normal((self.PROBE_SIZE, self.PROBE_SIZE)).astype(np.float32)

    def record(self, step: int, data_s: float, step_s: float) -> None:
        if self.every <= 0:
            return
        if self.first_step is None:
            self.first_step = step
        self.data.append(data_s)
        self.steps.append(step_s)
        if len(self.steps) >= self.every:
            _print(f"timing: steps {self.first_step}-{step}, data wait {_median(self.data):.4f} s, "
                   f"step {_median(self.steps):.4f} s, device probe {self.probe():.4f} s")
            self.data, self.steps, self.first_step = [], [], None

    def probe(self) -> float:
        """The wall time of the same local work, every time."""
        start = time.perf_counter()
        product = self._probe_a
        for _ in range(self.PROBE_REPEATS):
            product = (product @ self._probe_a) * 0.01
        return time.perf_counter() - start


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def train_one_epoch(training: Training, batches, epoch: int, first_in_epoch: int, steps_to_run: int, step: int,
                    result: TrainResult) -> int:
    """``steps_to_run`` steps of ``epoch`` from global step ``step``: log, checkpoint; the step reached."""
    cfg, saver = training.cfg, training.saver
    epoch_start = time.perf_counter()
    for offset in range(steps_to_run):
        fetch_start = time.perf_counter()
        images, labels = next(batches)
        step_start = time.perf_counter()
        loss_tensor = training.train_step(images, labels)
        training.timer.record(step + 1, step_start - fetch_start, time.perf_counter() - step_start)
        step += 1
        result.final_step = step
        in_epoch = first_in_epoch + offset
        # Reading the loss back waits for the step to finish; skipping it lets the host
        # fetch the next batch meanwhile. Step numbers in the line stay exact.
        if should_log(step, in_epoch, training.steps_per_epoch, training.total_steps, cfg.log_every_steps):
            loss = float(loss_tensor.asnumpy())
            result.losses.append(loss)
            _print(format_step_line(epoch, in_epoch, loss))
        saved = None
        if saver is not None and training.checkpoint_due(step):
            saved = saver.save(training.train_step, step=step, epoch=epoch)
            result.checkpoints.append(saved)
        if SAVE_AND_STOP.agreed(training.start.is_distributed):
            if saver is not None and saved is None:
                saved = saver.save(training.train_step, step=step, epoch=epoch)
                result.checkpoints.append(saved)
            result.stopped_at = step
            where = f": {saved}" if saved is not None else " (this rank saves no checkpoints)"
            _print(f"deeplab-train: saved and stopped at step {step} as asked (SIGUSR1){where}")
            return step
    _print(format_epoch_line((time.perf_counter() - epoch_start) * 1000.0, steps_to_run))
    return step


def evaluate(training: Training, epoch: int, step: int, best: Optional[float], result: TrainResult) -> Optional[float]:
    """Rank 0's mIoU on the eval split now; keeps deeplab-best.ckpt when it beats ``best``; the best so far."""
    from deeplab.train_eval import format_eval_line, is_better

    eval_start = time.perf_counter()
    miou, images_seen = training.evaluator.evaluate()
    training.train_step.set_train(True)
    result.evaluations.append((step, miou))
    _print(format_eval_line(step, epoch, training.eval_split, images_seen, training.evaluator.scale,
                            time.perf_counter() - eval_start, miou))
    if training.saver is not None and is_better(miou, best):
        best = miou
        path = training.saver.save_best(training.train_step, step=step, epoch=epoch, miou=miou)
        _print(f"best so far (step {step}): saved {path}")
    return best


def train(opts: TrainOptions) -> TrainResult:
    """Train as the options say; usable from Python and tests without argv."""
    from deeplab.train_eval import eval_due

    training = build_training(opts)
    start_step = resume(training)
    if training.saver is not None:
        training.ckpt_dir.mkdir(parents=True, exist_ok=True)
        training.cfg.dump_yaml(training.ckpt_dir / "config.yaml")
    # A resumed run only replaces deeplab-best.ckpt with a better one.
    best = (checkpoints.best_miou(training.ckpt_dir, training.prefix)
            if (training.evaluator is not None and training.saver is not None) else None)
    result = TrainResult(final_step=start_step, start_step=start_step, rank_id=training.start.rank_id,
                         rank_size=training.start.rank_size)
    epochs = plan_epochs(start_step, training.total_steps, training.steps_per_epoch)
    if not epochs:
        _print(f"already at the final step {training.total_steps}; nothing to train")
        return result
    batches = _endless_batches(training.dataset)
    step = start_step
    for epoch, first_in_epoch, steps_to_run in epochs:
        step = train_one_epoch(training, batches, epoch, first_in_epoch, steps_to_run, step, result)
        if result.stopped_at is not None:
            break
        epoch_ends = first_in_epoch + steps_to_run - 1 == training.steps_per_epoch
        if training.evaluator is not None and eval_due(epoch, step, epoch_ends, training.total_steps,
                                                       training.cfg.eval_every_epochs):
            best = evaluate(training, epoch, step, best, result)
    return result


def _AllSum():
    """A cell that sums a tensor over every rank (MindSpore's CPU AllReduce only sums)."""
    from mindspore import nn, ops

    class AllSum(nn.Cell):
        def __init__(self):
            super().__init__()
            self.all_reduce = ops.AllReduce(ops.ReduceOp.SUM)

        def construct(self, values):
            return self.all_reduce(values)

    return AllSum()


def _agree_on_start_step(step: int, ckpt_dir: Path) -> None:
    """All ranks must continue from the same step (and so the same checkpoint)."""
    import numpy as np
    import mindspore as ms
    from mindspore.communication import get_group_size

    all_sum = _AllSum()
    mean = float(all_sum(ms.Tensor(np.array([step], dtype=np.float32))).asnumpy()[0]) / get_group_size()
    # Every rank sees the same spread, so either all continue or all stop here.
    spread = float(all_sum(ms.Tensor(np.array([(step - mean) ** 2], dtype=np.float32))).asnumpy()[0])
    if spread > 0:
        raise UsageError(
            f"--resume: ranks found checkpoints of different steps (this rank: {step} in {ckpt_dir}, "
            f"mean over ranks {mean:g}); give all ranks one shared --ckpt-dir or --set save_ckpt_all_ranks=true"
        )


def _endless_batches(dataset):
    """Batches across dataset epochs; our epochs are counted in steps, so a run resumed
    mid-epoch simply continues with fresh batches."""
    iterator = dataset.create_tuple_iterator()
    while True:
        try:
            yield from iterator  # one pass is one dataset epoch
        except RuntimeError as err:
            raise _data_error_from(err) from None


def _data_error_from(err: RuntimeError) -> Exception:
    """A DataError raised in a data worker reaches us wrapped in MindSpore's RuntimeError."""
    text = str(err)
    marker = "DataError: "
    if marker in text:
        return DataError(text.split(marker, 1)[1].splitlines()[0].strip())
    return err


def _load_pretrained(train_net, path: Path):
    """Initialise from ckpt_pre_trained: any layout deeplab.convert knows (ours, the MindSpore model
    zoo's DeepLabV3 or ResNet ImageNet checkpoints, torchvision's); what it lacks (the head of a
    backbone-only checkpoint, a classifier for another class count) stays freshly initialised."""
    from deeplab.convert import load_weights

    conversion = load_weights(train_net.network, path, complete=False, what="ckpt_pre_trained")
    _print(f"ckpt_pre_trained {path}: initialised {len(conversion.weights)} of {conversion.model_size} "
           f"parameters (layout {conversion.layout})")
    for line in conversion.summary()[1:]:
        _print(line)
    return conversion


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="deeplab-train", description="Train DeepLabV3 with MindSpore.",
                                     epilog="See the module docstring (python -m pydoc deeplab.train) for details.")
    parser.add_argument("--config", required=True, help="preset name or YAML file")
    parser.add_argument("--data-root", required=True, type=Path, help="VOC2012-layout or prepared data directory")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field (repeatable)")
    parser.add_argument("--train-steps", type=int, default=None, help="stop after N global steps")
    parser.add_argument("--ckpt-dir", type=Path, default=None,
                        help="checkpoint directory (default $LAUNCH_TRAIN_CKPT_DIR, else ./ckpt)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest checkpoint in --ckpt-dir (implied on launch-train restarts)")
    parser.add_argument("--device-target", default=None, choices=DEVICE_TARGETS,
                        help="default $DEVICE_TARGET, else implied by the start-up (rank table: Ascend; mpirun: GPU), else CPU")
    parser.add_argument("--eval-split", default=None, help="split evaluated during training (default: val_split)")
    return parser


def restart_count(environ: Mapping[str, str] = os.environ) -> int:
    """LAUNCH_TRAIN_RESTART_COUNT: 0 (or unset) on a first run, N on the launcher's N-th restart."""
    raw = environ.get("LAUNCH_TRAIN_RESTART_COUNT", "").strip()
    if not raw:
        return 0
    if not raw.isdigit():
        raise UsageError(f"LAUNCH_TRAIN_RESTART_COUNT={raw!r}: expected a whole number")
    return int(raw)


def options_from_args(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> TrainOptions:
    """Flags first; what they leave open comes from the environment the launcher (or a person) set."""
    from deeplab import distributed

    ckpt_dir = args.ckpt_dir if args.ckpt_dir is not None else Path(environ.get("LAUNCH_TRAIN_CKPT_DIR") or "ckpt")
    return TrainOptions(config=args.config, data_root=args.data_root, overrides=tuple(args.overrides),
                        train_steps=args.train_steps, ckpt_dir=ckpt_dir,
                        resume=args.resume or restart_count(environ) > 0,
                        device_target=args.device_target or distributed.device_target_from_env(environ),
                        eval_split=args.eval_split)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGINT, _raise_terminated)
    signal.signal(signal.SIGUSR1, SAVE_AND_STOP)
    try:
        opts = options_from_args(args)
        result = train(opts)
    except USER_ERRORS as err:
        print(f"deeplab-train: {err}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    except Terminated as stop:
        print(f"deeplab-train: stopped by {stop}", file=sys.stderr, flush=True)
        return 128 + stop.signum
    if result.stopped_at is None:
        _print(f"training done at step {result.final_step}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
