"""The error of a checkpoint that cannot be converted or does not fit the model."""
from __future__ import annotations

from deeplab.checkpoints import CheckpointError


class ConversionError(CheckpointError):
    """A checkpoint whose layout is unknown or whose weights do not fit; the message is one line.

    A CheckpointError, so every deeplab command that already reports bad checkpoints with
    exit status 2 reports these too.
    """
