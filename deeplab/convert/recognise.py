"""Which layout a checkpoint is in, from its parameter names alone."""
from __future__ import annotations

from deeplab.convert.errors import ConversionError
from deeplab.convert.layout import Layout, local_names
from deeplab.convert.mindspore_zoo import ZooDeepLabV3, ZooResNet
from deeplab.convert.ours import OursBackbone, OursNetwork
from deeplab.convert.torchvision import TorchvisionDeepLabV3, TorchvisionResNet

LAYOUTS: tuple[Layout, ...] = (OursNetwork(), OursBackbone(), ZooDeepLabV3(), ZooResNet(), TorchvisionResNet(),
                               TorchvisionDeepLabV3())


def recognise(names) -> Layout:
    """The one layout whose recogniser accepts these names; ConversionError when none or several do."""
    local = local_names(names)
    found = [layout for layout in LAYOUTS if layout.matches(local)]
    if len(found) == 1:
        return found[0]
    if not found:
        sample = ", ".join(sorted(local)[:3]) or "no weights"
        known = ", ".join(layout.name for layout in LAYOUTS)
        raise ConversionError(f"unknown checkpoint layout (first names: {sample}); known layouts: {known}")
    raise ConversionError(f"ambiguous checkpoint layout: {', '.join(layout.name for layout in found)} all match")
