"""Reference outputs from torchvision, run with the optional PyTorch venv (bench/.venv-torch).

    bench/.venv-torch/bin/python tests/torch_reference.py OUT_DIR

Writes into OUT_DIR, from randomly initialised networks (BN statistics randomised too) on
one seeded 65x65 input (input.npy):
- resnet101.safetensors / resnet101.pth: torchvision ``resnet101()`` state dict;
  resnet101_features.npz: c1..c4, where layer4 uses this project's output-stride-16 plan
  (stride 1, dilations 2, 4, 8: dilation and stride are not weights, so this is the same
  weights in the DeepLab configuration; c1..c3 are torchvision's own, unmodified).
- deeplabv3_resnet101.safetensors: torchvision ``deeplabv3_resnet101(num_classes=21,
  aux_loss=True)``; deeplabv3_features.npz: the backbone output with this project's
  output-stride-8 plan (layer3 dilation 2, layer4 4, 8, 16) and torchvision's ASPP output
  on it (its rates 12, 24, 36).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torchvision
from safetensors.torch import save_file

SIZE = 65


def randomise_batch_norms(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            count = module.num_features
            module.running_mean.copy_(torch.randn(count, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(count, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(count, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(count, generator=generator) * 0.1)


def set_plan(stage: torch.nn.Sequential, dilations) -> None:
    """Stride 1 and the given dilation per unit (what DeepLab's atrous backbone does to a stage)."""
    for block, dilation in zip(stage, dilations):
        block.conv2.stride = (1, 1)
        block.conv2.dilation = (dilation, dilation)
        block.conv2.padding = (dilation, dilation)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)


def stages(backbone, x):
    x = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(x))))
    c1 = backbone.layer1(x)
    c2 = backbone.layer2(c1)
    c3 = backbone.layer3(c2)
    return c1, c2, c3, backbone.layer4(c3)


def main(out: Path) -> None:
    torch.manual_seed(0)
    image = np.random.default_rng(0).normal(size=(1, 3, SIZE, SIZE)).astype(np.float32)
    np.save(out / "input.npy", image)
    x = torch.from_numpy(image)

    resnet = torchvision.models.resnet101(weights=None).eval()
    randomise_batch_norms(resnet, 1)
    state = {name: value.contiguous() for name, value in resnet.state_dict().items()}
    save_file(state, str(out / "resnet101.safetensors"))
    torch.save(state, out / "resnet101.pth")
    set_plan(resnet.layer4, (2, 4, 8))
    with torch.no_grad():
        features = stages(resnet, x)
    np.savez(out / "resnet101_features.npz", **{f"c{i + 1}": f.numpy() for i, f in enumerate(features)})

    deeplab = torchvision.models.segmentation.deeplabv3_resnet101(
        weights=None, weights_backbone=None, num_classes=21, aux_loss=True).eval()
    randomise_batch_norms(deeplab, 2)
    save_file({name: value.contiguous() for name, value in deeplab.state_dict().items()},
              str(out / "deeplabv3_resnet101.safetensors"))
    backbone = deeplab.backbone  # IntermediateLayerGetter keeps the ResNet's stage names
    set_plan(backbone.layer3, [2] * len(backbone.layer3))
    set_plan(backbone.layer4, (4, 8, 16))
    with torch.no_grad():
        c4 = stages(backbone, x)[-1]
        aspp = deeplab.classifier[0](c4)
    np.savez(out / "deeplabv3_features.npz", c4=c4.numpy(), aspp=aspp.numpy())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
