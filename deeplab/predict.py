"""Multi-scale + flip prediction, as the reference DeepLabV3 evaluation does it.

For each scale s the image's long side is resized to ``int((crop_size - 1) * s) + 1``, the
image is normalised with the config's mean/std and zero-padded (i.e. padded with the mean)
at the bottom/right to a square of that size, and the network's softmax probabilities are
computed (and, with flip, those of the mirrored image mirrored back and added). The valid
region is cropped, resized to the original image size, and the probabilities are summed
over scales; the class is the argmax.

Pre- and post-processing are pure numpy/OpenCV functions; :class:`MultiScalePredictor` runs
the network (a cell returning NCHW probabilities, see :func:`softmax_network`). Images of
one scale share one input shape, so graph mode compiles once per scale; the last partial
batch is padded up to the batch size for the same reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np


def scaled_crop(crop_size: int, scale: float) -> int:
    """The square input side used at ``scale`` (reference formula)."""
    return int((crop_size - 1) * scale) + 1


def resize_long_side(image: np.ndarray, long_side: int) -> np.ndarray:
    height, width = image.shape[:2]
    if height > width:
        new_h, new_w = long_side, max(1, int(long_side * width / height))
    else:
        new_h, new_w = max(1, int(long_side * height / width)), long_side
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


def preprocess(image_bgr: np.ndarray, side: int, mean: Sequence[float], std: Sequence[float]
               ) -> tuple[np.ndarray, tuple[int, int]]:
    """CHW float32 input of ``side`` x ``side`` and the (height, width) of its valid region."""
    resized = resize_long_side(image_bgr, side).astype(np.float32)
    normalised = (resized - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    height, width = normalised.shape[:2]
    padded = np.zeros((side, side, 3), dtype=np.float32)
    padded[:height, :width] = normalised
    return np.ascontiguousarray(padded.transpose(2, 0, 1)), (height, width)


def restore_probabilities(probs_chw: np.ndarray, valid_hw: tuple[int, int], original_hw: tuple[int, int]
                          ) -> np.ndarray:
    """HWC probabilities of the valid region resized to the original image size."""
    valid = probs_chw[:, : valid_hw[0], : valid_hw[1]].transpose(1, 2, 0)
    height, width = original_hw
    resized = cv2.resize(np.ascontiguousarray(valid), (width, height), interpolation=cv2.INTER_LINEAR)
    if resized.ndim == 2:  # OpenCV drops a single channel axis
        resized = resized[:, :, None]
    return resized


@dataclass(frozen=True)
class PredictSettings:
    crop_size: int
    scales: tuple[float, ...]
    flip: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    batch_size: int = 1

    def __post_init__(self) -> None:
        if not self.scales or any(scale <= 0 for scale in self.scales):
            raise ValueError(f"scales must be a non-empty list of positive numbers, got {list(self.scales)}")
        if self.crop_size < 2 or self.batch_size < 1:
            raise ValueError("crop_size must be >= 2 and batch size >= 1")


class MultiScalePredictor:
    """Sums softmax probabilities over scales (and flips) and takes the argmax."""

    def __init__(self, run_network: Callable[[np.ndarray], np.ndarray], settings: PredictSettings) -> None:
        self.run_network = run_network  # float32 NCHW batch -> float32 NCHW probabilities
        self.settings = settings

    def _probabilities_at(self, images: Sequence[np.ndarray], side: int) -> list[np.ndarray]:
        settings = self.settings
        batch = np.zeros((settings.batch_size, 3, side, side), dtype=np.float32)
        valid = []
        for index, image in enumerate(images):
            batch[index], valid_hw = preprocess(image, side, settings.mean, settings.std)
            valid.append(valid_hw)
        probs = self.run_network(batch)
        if settings.flip:
            probs = probs + self.run_network(np.ascontiguousarray(batch[:, :, :, ::-1]))[:, :, :, ::-1]
        return [restore_probabilities(probs[index], valid[index], image.shape[:2])
                for index, image in enumerate(images)]

    def probabilities(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Summed HWC probabilities for up to batch_size BGR images."""
        if not 0 < len(images) <= self.settings.batch_size:
            raise ValueError(f"expected 1..{self.settings.batch_size} images, got {len(images)}")
        total = None
        for scale in self.settings.scales:
            probs = self._probabilities_at(images, scaled_crop(self.settings.crop_size, scale))
            total = probs if total is None else [acc + new for acc, new in zip(total, probs)]
        return total

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """HxW uint8 class maps for up to batch_size BGR images."""
        return [probs.argmax(axis=2).astype(np.uint8) for probs in self.probabilities(images)]


def softmax_network(network):
    """A cell mapping NCHW images to NCHW class probabilities; parameters keep the ``network.*``
    names of the training checkpoint."""
    from mindspore import nn, ops

    class SoftmaxNetwork(nn.Cell):
        def __init__(self, inner):
            super().__init__()
            self.network = inner

        def construct(self, images):
            return ops.softmax(self.network(images), axis=1)

    return SoftmaxNetwork(network)


def absorb_numpy2_first_call_error() -> bool:
    """Run once, before the network, what MindSpore 2.10 fails the first time under NumPy 2.

    In PyNative mode MindSpore's first op call that converts a tuple argument (``ops.mean``
    over axes (2, 3), ``broadcast_to``, ``interpolate(size=...)``) looks up NumPy 1's C API,
    gets NumPy 2's ImportError (printed to stderr) and raises SystemError; later calls work
    (FIELD_NOTES). One throw-away reduction takes that first call. Graph mode is not affected,
    so this does nothing there (MindSpore's own "Numpy init failed" warning would be the only
    effect). True when a failure was absorbed.
    """
    import contextlib
    import io

    import mindspore as ms
    from mindspore import ops

    if ms.get_context("mode") != ms.PYNATIVE_MODE:
        return False
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            ops.ReduceMean(keep_dims=True)(ms.Tensor(np.ones((1, 1), np.float32)), (0, 1))
        except SystemError:
            return True
    return False


def load_network(cfg, ckpt, what: str = "checkpoint"):
    """The model of ``cfg`` with every parameter from ``ckpt`` (any layout deeplab.convert knows),
    in inference mode; CheckpointError when it does not fit."""
    from deeplab.convert import load_weights
    from deeplab.model import build_model

    network = build_model(cfg)
    load_weights(network, ckpt, complete=True, what=what)
    network.set_train(False)
    return network


def load_predictor(cfg, ckpt, settings: PredictSettings) -> MultiScalePredictor:
    """Build the model of ``cfg``, load ``ckpt`` (CheckpointError when it does not fit) and wrap it."""
    import mindspore as ms

    net = softmax_network(load_network(cfg, ckpt))
    net.set_train(False)
    absorb_numpy2_first_call_error()  # after loading: a bad checkpoint fails with one clean line

    def run(batch: np.ndarray) -> np.ndarray:
        return net(ms.Tensor(batch)).asnumpy()

    return MultiScalePredictor(run, settings)
