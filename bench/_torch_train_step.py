"""Worker of bench/train_throughput.py: times torchvision DeepLabV3 training steps (PyTorch, CPU).

Runs under bench/.venv-torch/bin/python (torch is not a project dependency); prints one
JSON line. Output stride 8 is torchvision's own builder (deeplabv3_resnet*); output stride
16 is the same torchvision DeepLabV3 + DeepLabHead on a ResNet whose last stage only is
dilated, which is what the MindSpore side runs at OS16.
"""
import argparse
import json
import time


def build(backbone: str, output_stride: int, num_classes: int):
    from torchvision.models import resnet50, resnet101
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation import deeplabv3_resnet50, deeplabv3_resnet101
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3

    if output_stride == 8:
        builder = {"resnet101": deeplabv3_resnet101, "resnet50": deeplabv3_resnet50}[backbone]
        return builder(weights=None, weights_backbone=None, num_classes=num_classes)
    trunk = {"resnet101": resnet101, "resnet50": resnet50}[backbone](
        weights=None, replace_stride_with_dilation=[False, False, True])
    return DeepLabV3(IntermediateLayerGetter(trunk, {"layer4": "out"}), DeepLabHead(2048, num_classes), None)


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--backbone", choices=["resnet101", "resnet50"], required=True)
    parser.add_argument("--output-stride", type=int, choices=[8, 16], required=True)
    parser.add_argument("--num-classes", type=int, required=True)
    parser.add_argument("--crop", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--lr", type=float, default=0.0014)
    parser.add_argument("--momentum", type=float, default=0.97)
    parser.add_argument("--weight-decay", type=float, default=5e-5)
    args = parser.parse_args()

    import torch
    import torchvision

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args.backbone, args.output_stride, args.num_classes)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)
    images = torch.randn(args.batch, 3, args.crop, args.crop)
    labels = torch.randint(0, args.num_classes, (args.batch, args.crop, args.crop))

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images)["out"], labels)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    start = time.perf_counter()
    step()
    first_step_s = time.perf_counter() - start
    for _ in range(args.warmup):
        step()
    step_times, cpu_times = [], []
    for _ in range(args.steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = step()
        step_times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    print(json.dumps({
        "framework": "torch", "version": f"torch {torch.__version__}, torchvision {torchvision.__version__}",
        "mode": "eager", "model": f"torchvision deeplabv3 {args.backbone} os{args.output_stride}",
        "params": sum(p.numel() for p in model.parameters()),
        "images_per_s": args.batch * len(step_times) / sum(step_times),
        "images_per_cpu_s": args.batch * len(cpu_times) / sum(cpu_times),
        "step_s_median": sorted(step_times)[len(step_times) // 2], "first_step_s": first_step_s,
        "graph_compile_s": 0.0, "loss": loss,
    }))


if __name__ == "__main__":
    main()
