"""Training checkpoints: atomic writes, rotation, finding the newest, loading with clear errors.

File names: ``<prefix>-step<global step, 6+ digits>.ckpt`` in the checkpoint directory
(prefix ``deeplab``; ``deeplab-rank<R>`` when every rank saves), so ``ls`` order is
step order. Evaluation during training keeps ``<prefix>-best.ckpt`` beside them: the
checkpoint of the highest validation mIoU so far (``deeplab_miou`` inside), never rotated
and never taken for ``--resume``. A checkpoint holds everything ``--resume`` needs: the model weights
(``network.*``), the optimizer state (momentum accumulators ``moments.*``, its
``global_step`` that indexes the per-step learning rates) and ``deeplab_step`` /
``deeplab_epoch``.

Atomicity: MindSpore writes the file inside a hidden directory ``.partial-<prefix>-<pid>/``
of the checkpoint directory (same file system); the file is fsync'ed, then
``os.replace``d to its final name and the directory entry fsync'ed. A process killed at
any moment leaves either the previous checkpoints or the complete new one under a
``*.ckpt`` name, never a truncated one; a leftover partial directory is removed by the
next save and never considered by :func:`list_checkpoints`. Every file carries
MindSpore's CRC32 trailer, checked before loading, so a file damaged later is reported
as such instead of half-loading.

Importing this module does not import MindSpore; the functions that need it import it.
"""
from __future__ import annotations

import binascii
import contextlib
import errno
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from deeplab.atomic_write import staged_file

DEFAULT_PREFIX = "deeplab"
STEP_KEY = "deeplab_step"
EPOCH_KEY = "deeplab_epoch"
MIOU_KEY = "deeplab_miou"
APPENDED_KEYS = (STEP_KEY, EPOCH_KEY, MIOU_KEY)  # written beside the weights; not model parameters
_PARTIAL_PREFIX = ".partial-"
_CRC_TAG = b"crc_num"
_CRC_TRAILER = len(_CRC_TAG) + 10  # tag + 10-byte big-endian CRC32, as MindSpore writes it
_CRC_CHUNK = 1 << 24


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message is the one line shown to the user."""


@dataclass(frozen=True)
class TrainingState:
    """Where a restored run continues from."""

    step: int
    epoch: int

    def __post_init__(self) -> None:
        if self.step < 0 or self.epoch < 0:
            raise ValueError(f"step and epoch must be >= 0, got step {self.step}, epoch {self.epoch}")


def checkpoint_prefix(rank_id: int, all_ranks_save: bool) -> str:
    """Rank 0 alone writes ``deeplab-*``; when every rank saves, names carry the rank."""
    return f"{DEFAULT_PREFIX}-rank{rank_id}" if all_ranks_save else DEFAULT_PREFIX


def checkpoint_name(step: int, prefix: str = DEFAULT_PREFIX) -> str:
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return f"{prefix}-step{step:06d}.ckpt"


def best_checkpoint_name(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}-best.ckpt"


def best_miou(directory: Path, prefix: str = DEFAULT_PREFIX) -> Optional[float]:
    """The mIoU recorded in ``<prefix>-best.ckpt``, None when there is none (a resumed run keeps a better one)."""
    path = Path(directory) / best_checkpoint_name(prefix)
    if not path.is_file():
        return None
    params = read_checkpoint(path)
    return float(params[MIOU_KEY].asnumpy()) if MIOU_KEY in params else None


def _name_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(prefix)}-step(\d+)\.ckpt$")


def list_checkpoints(directory: Path, prefix: str = DEFAULT_PREFIX) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint with this prefix under its final name, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    pattern = _name_pattern(prefix)
    found = []
    for entry in directory.iterdir():
        match = pattern.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def newest_checkpoint(directory: Path, prefix: str = DEFAULT_PREFIX) -> Optional[Path]:
    found = list_checkpoints(directory, prefix)
    return found[-1][1] if found else None


def check_checkpoint_file(path: Path, what: str = "checkpoint") -> Path:
    """path unchanged when it names a regular file (through symlinks); else CheckpointError saying what it is.

    os.stat does not open the file, so a FIFO here cannot block; "no such file" is only said
    when there is none.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise CheckpointError(f"{what} {path}: no such file") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise CheckpointError(f"{what} {path}: a loop of symbolic links, not a file") from None
        raise CheckpointError(f"{what} {path}: cannot read ({err.strerror})") from None
    if stat.S_ISDIR(mode):
        raise CheckpointError(f"{what} {path}: is a directory; give the checkpoint file in it")
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise CheckpointError(f"{what} {path}: is {kind}, not a regular file")
    return path


def verify_crc(path: Path) -> bool:
    """Check the CRC32 trailer MindSpore appends with ``crc_check=True``.

    True when it matches, False when the file has no trailer (written elsewhere);
    raises CheckpointError when the trailer is present but wrong, or the file is
    too short to be a checkpoint. The file is read in chunks: a checkpoint can be
    larger than the memory of the machine that checks it.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size <= _CRC_TRAILER:
                raise CheckpointError(f"checkpoint {path}: file is truncated or empty ({size} bytes)")
            handle.seek(size - _CRC_TRAILER)
            trailer = handle.read(_CRC_TRAILER)
            if trailer[: len(_CRC_TAG)] != _CRC_TAG:
                return False
            handle.seek(0)
            crc, left = 0, size - _CRC_TRAILER
            while left > 0:
                chunk = handle.read(min(_CRC_CHUNK, left))
                if not chunk:
                    raise CheckpointError(f"checkpoint {path}: file shrank while it was read")
                crc = binascii.crc32(chunk, crc)
                left -= len(chunk)
    except OSError as err:
        raise CheckpointError(f"checkpoint {path}: cannot read ({err.strerror})") from None
    if crc != int.from_bytes(trailer[len(_CRC_TAG):], byteorder="big"):
        raise CheckpointError(f"checkpoint {path}: CRC check failed, the file is corrupt or truncated")
    return True


@contextlib.contextmanager
def _mindspore_logger_silenced() -> Iterator[None]:
    """MindSpore logs its own multi-line error before raising; the user gets our one line instead."""
    from mindspore import log as ms_log

    logger = ms_log._get_logger()  # pylint: disable=protected-access
    was_disabled = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = was_disabled


def read_checkpoint(path: Path) -> dict:
    """name -> Parameter of a checkpoint file; CheckpointError on anything unusable."""
    path = check_checkpoint_file(path)
    has_crc = verify_crc(path)
    import mindspore as ms

    try:
        with _mindspore_logger_silenced():
            params = ms.load_checkpoint(str(path), crc_check=has_crc)
    except (ValueError, RuntimeError, TypeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path}: not a readable MindSpore checkpoint ({reason})") from None
    if not params:
        raise CheckpointError(f"checkpoint {path}: contains no parameters")
    return params


def load_into(cell, path: Path, params: Optional[dict] = None, may_lack: tuple[str, ...] = ()) -> None:
    """Load a checkpoint into ``cell``; every parameter of the cell (but ``may_lack``) must be in the file."""
    import mindspore as ms

    params = read_checkpoint(path) if params is None else params
    try:
        with _mindspore_logger_silenced():
            missing, _unused = ms.load_param_into_net(cell, params)
    except (ValueError, RuntimeError, TypeError) as err:
        reason = str(err).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {path}: does not fit this model ({reason})") from None
    missing = [name for name in missing if name not in may_lack]
    if missing:
        raise CheckpointError(
            f"checkpoint {path}: lacks {len(missing)} parameter(s) of this model, e.g. {missing[0]} "
            "(trained with another config?)"
        )


def restore_training(train_cell, path: Path) -> TrainingState:
    """Load weights and optimizer state into the train-one-step cell; return where to continue."""
    params = read_checkpoint(path)
    if STEP_KEY not in params:
        raise CheckpointError(f"checkpoint {path}: has no training step ({STEP_KEY}); not a training checkpoint")
    # The learning-rate array is rebuilt from the config for this run's step count; the
    # optimizer's restored global_step indexes it, so the schedule continues where it was.
    params = {name: value for name, value in params.items() if name != "learning_rate"}
    load_into(train_cell, path, params, may_lack=("learning_rate",))
    step = int(params[STEP_KEY].asnumpy())
    epoch = int(params[EPOCH_KEY].asnumpy()) if EPOCH_KEY in params else 0
    return TrainingState(step=step, epoch=epoch)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CheckpointSaver:
    """Writes ``<prefix>-stepN.ckpt`` atomically and keeps the newest ``keep`` of them."""

    def __init__(self, directory: Path, keep: int = 1, prefix: str = DEFAULT_PREFIX) -> None:
        if keep < 1:
            raise ValueError(f"save_checkpoint_num must be >= 1, got {keep}")
        self.directory = Path(directory)
        self.keep = keep
        self.prefix = prefix

    def remove_stale_partials(self) -> list[Path]:
        """Delete partial-write directories of this prefix left by processes that died."""
        removed = []
        if not self.directory.is_dir():
            return removed
        pattern = re.compile(rf"^{re.escape(_PARTIAL_PREFIX + self.prefix)}-(\d+)$")
        for entry in self.directory.iterdir():
            match = pattern.match(entry.name)
            if match and entry.is_dir() and not _pid_alive(int(match.group(1))):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        return removed

    def save(self, cell, step: int, epoch: int) -> Path:
        final = self._write(cell, checkpoint_name(step, self.prefix), {STEP_KEY: int(step), EPOCH_KEY: int(epoch)})
        self._rotate()
        return final

    def save_best(self, cell, step: int, epoch: int, miou: float) -> Path:
        """Replace ``<prefix>-best.ckpt`` (atomically) with this state and its mIoU."""
        return self._write(cell, best_checkpoint_name(self.prefix),
                           {STEP_KEY: int(step), EPOCH_KEY: int(epoch), MIOU_KEY: float(miou)})

    def _write(self, cell, name: str, append: dict) -> Path:
        import mindspore as ms

        self.directory.mkdir(parents=True, exist_ok=True)
        self.remove_stale_partials()
        final = self.directory / name
        with staged_file(final, f"{_PARTIAL_PREFIX}{self.prefix}-{os.getpid()}") as partial:
            ms.save_checkpoint(cell, str(partial), crc_check=True, append_dict=append)
        return final

    def _rotate(self) -> None:
        for _step, path in list_checkpoints(self.directory, self.prefix)[: -self.keep]:
            path.unlink(missing_ok=True)


def write_weights(entries: list, final: Path) -> Path:
    """Write ``[{"name": str, "data": Tensor}, ...]`` as a CRC-carrying checkpoint, atomically.

    The same procedure as :class:`CheckpointSaver`: written inside a hidden partial directory
    next to ``final``, fsync'ed, renamed into place; an existing ``final`` is replaced only by
    the complete new file.
    """
    import mindspore as ms

    final = Path(final)
    with staged_file(final, f"{_PARTIAL_PREFIX}{final.stem}-{os.getpid()}") as partial:
        ms.save_checkpoint(entries, str(partial), crc_check=True)
    return final
