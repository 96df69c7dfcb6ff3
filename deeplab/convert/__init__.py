"""Checkpoint layouts and their conversion onto this project's parameter names.

    from deeplab.convert import load_weights
    report = load_weights(network, "resnet101_imagenet.ckpt", complete=False)
    print("\\n".join(report.summary()))

Layouts (deeplab/convert/*.py, one module each): this project's own (``ours``), the
MindSpore model zoo's DeepLabV3 and ResNet ImageNet checkpoints (``mindspore_zoo``),
torchvision's ResNet and DeepLabV3 state dicts (``torchvision``). ``recognise`` picks the
layout from the names, ``fit`` checks shapes against the model; ``deeplab-convert``
(``cli``) writes the result as a checkpoint of ours. Importing this package does not import
MindSpore.
"""
from deeplab.convert.errors import ConversionError
from deeplab.convert.fit import Conversion, fit
from deeplab.convert.load import convert_file, load_weights, model_shapes
from deeplab.convert.recognise import LAYOUTS, recognise

__all__ = ["LAYOUTS", "Conversion", "ConversionError", "convert_file", "fit", "load_weights", "model_shapes",
           "recognise"]
