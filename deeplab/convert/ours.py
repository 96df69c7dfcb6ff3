"""This project's own layout: deeplab-train checkpoints, bare-network and bare-backbone saves.

``network.backbone.*`` / ``network.head.*`` (deeplab-train, with optimizer state),
``backbone.*`` / ``head.*`` (``mindspore.save_checkpoint`` of the network, deeplab-convert's
output) and the trunk names of ``deeplab.model.resnet101()`` saved on its own
(``conv1.weight``, ``layer1.0.downsample.0.weight``, ...), which become ``backbone.*``.
"""
from __future__ import annotations

from deeplab.convert.layout import Layout, Rule, any_match

MS_BN = r"(gamma|beta|moving_mean|moving_variance)"
# Our ResNet trunk: stem conv/BN and stage units with conv{1,2,3}/bn{1,2,3}/downsample.{0,1}.
TRUNK = (rf"conv1\.weight|bn1\.{MS_BN}|layer\d+\.\d+\.(conv\d\.weight|bn\d\.{MS_BN}|"
         rf"downsample\.0\.weight|downsample\.1\.{MS_BN})")


class OursNetwork(Layout):
    name = "deeplab"
    description = "this project's DeepLabV3 (deeplab-train checkpoints, saved networks)"
    rules = (Rule(r"(backbone|head)\..+", r"\g<0>"),)

    def matches(self, names: frozenset[str]) -> bool:
        return bool(names) and all(name.startswith(("backbone.", "head.")) for name in names) \
            and not any_match(names, r".*(running_mean|down_sample_layer).*")


class OursBackbone(Layout):
    name = "deeplab-backbone"
    description = "this project's ResNet trunk saved on its own (deeplab.model.resnet101())"
    rules = (Rule(TRUNK, r"backbone.\g<0>"),)

    def matches(self, names: frozenset[str]) -> bool:
        return bool(names) and all(any_match((name,), TRUNK) for name in names)
