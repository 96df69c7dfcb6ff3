"""deeplab.convert: every checkpoint layout is proved by outputs, not names.

Each test builds a network with the other layout's names and computation (tests/zoo_networks.py
for the MindSpore model zoo; torchvision itself in the optional bench/.venv-torch, see
tests/torch_reference.py), saves it, converts it and compares logits or backbone features on
the same input. Differences are reported relative to the largest magnitude of the reference
(random BN statistics let activations grow into the millions through 23 blocks).
In-process comparisons run in PyNative mode (no graph compile for the many small networks);
the commands run as real processes.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.data import synthetic_voc  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]
TORCH_PYTHON = Path(os.environ.get("DEEPLAB_TORCH_PYTHON", REPO / "bench" / ".venv-torch" / "bin" / "python"))
SMALL_LAYERS = (1, 1, 1, 3)
SMALL_WIDTH = 8
SMALL_ASPP = 16
SIZE = 65  # odd at every stride, like DeepLab's 513: 'same' and symmetric padding agree there
TOLERANCE = 1e-5
MAX_DIFFS: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def pynative():
    import mindspore as ms

    from deeplab import cpu_tuning
    from deeplab.predict import absorb_numpy2_first_call_error

    cpu_tuning.apply_to_environ(2)
    # Before any op runs: a runtime started without set_device() refuses every later
    # set_device() in this pytest process (the model and export tests call it).
    ms.set_device("CPU")
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(0)  # the same random conv weights every run, so the reported differences repeat
    absorb_numpy2_first_call_error()
    yield ms
    ms.set_context(mode=previous)
    for name, diff in MAX_DIFFS.items():
        print(f"max relative difference {name}: {diff:.2e}")


def relative_diff(ours, reference) -> float:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    assert ours.shape == reference.shape
    return float(np.abs(ours - reference).max() / max(np.abs(reference).max(), 1e-12))


def record(name: str, diff: float) -> float:
    MAX_DIFFS[name] = max(diff, MAX_DIFFS.get(name, 0.0))
    return diff


def image(seed: int = 0, size: int = SIZE):
    import mindspore as ms

    return ms.Tensor(np.random.default_rng(seed).normal(size=(1, 3, size, size)).astype(np.float32))


def save_cell(cell, path: Path, prefix: str = "", extra: dict | None = None) -> Path:
    """What MindSpore writes for ``cell`` (names optionally prefixed) plus extra entries."""
    import mindspore as ms

    entries = [{"name": prefix + name, "data": param.data} for name, param in cell.parameters_and_names()]
    for name, value in (extra or {}).items():
        entries.append({"name": name, "data": ms.Tensor(value)})
    ms.save_checkpoint(entries, str(path))
    return path


def small_ours(num_classes: int = 5, output_stride: int = 16, rates=(6, 12, 18)):
    from deeplab.model import Bottleneck, ResNet, deeplabv3

    backbone = ResNet(Bottleneck, SMALL_LAYERS, widths=tuple(SMALL_WIDTH * 2 ** i for i in range(4)),
                      output_stride=output_stride)
    return deeplabv3(backbone, num_classes, atrous_rates=rates, aspp_channels=SMALL_ASPP)


def small_zoo_deeplab(num_classes: int = 5, output_stride: int = 16):
    from tests.zoo_networks import ZooStyleDeepLabV3, randomise_batch_norms

    net = ZooStyleDeepLabV3(num_classes, output_stride, SMALL_LAYERS, SMALL_WIDTH, SMALL_ASPP)
    randomise_batch_norms(net, seed=output_stride)
    net.set_train(False)
    return net


def logits(net, x) -> np.ndarray:
    net.set_train(False)
    return net(x).asnumpy()


# --- (a) the MindSpore model zoo's DeepLabV3 -------------------------------------------------------

@pytest.mark.parametrize("output_stride", [16, 8])
def test_zoo_deeplabv3_checkpoints_bare_and_training_give_the_zoo_logits(output_stride, tmp_path):
    from deeplab.convert import load_weights

    zoo = small_zoo_deeplab(output_stride=output_stride)
    x = image(output_stride)
    expected = logits(zoo, x)
    bare = save_cell(zoo, tmp_path / "bare.ckpt")
    # A training checkpoint: network.-prefixed weights, momentum accumulators, lr and step.
    state = {f"moments.network.{name}": np.zeros(param.shape, np.float32) for name, param in zoo.parameters_and_names()}
    state.update(learning_rate=np.zeros(10, np.float32), global_step=np.array([7], np.int32))
    training = save_cell(zoo, tmp_path / "train.ckpt", prefix="network.", extra=state)
    for path in (bare, training):
        ours = small_ours(output_stride=output_stride)
        report = load_weights(ours, path, complete=True)
        assert report.layout == "mindspore-zoo-deeplabv3"
        assert len(report.weights) == report.model_size and not report.fresh
        assert report.ignored == (len(state) if path == training else 0)
        assert record(f"zoo DeepLabV3 OS{output_stride} logits", relative_diff(logits(ours, x), expected)) < TOLERANCE


def test_zoo_os8_checkpoint_in_the_zoo_preset_gives_the_zoo_logits_the_paper_preset_does_not(tmp_path):
    """Full-size ResNet-101: the preset voc_r101_os8_zoo is the zoo's OS8 network; voc_r101_os8 is not."""
    from deeplab.config import load_config
    from deeplab.convert import load_weights
    from deeplab.model import build_model
    from tests.zoo_networks import ZooStyleDeepLabV3, randomise_batch_norms

    zoo = ZooStyleDeepLabV3(num_classes=21, output_stride=8)
    randomise_batch_norms(zoo, seed=3)
    x = image(3, size=65)  # 9x9 features at OS8: rates 6 and 12 reach different pixels
    expected = logits(zoo, x)
    path = save_cell(zoo, tmp_path / "deeplab_v3_s8.ckpt", prefix="network.")
    preset = build_model(load_config("voc_r101_os8_zoo"))
    report = load_weights(preset, path, complete=True)
    assert len(report.weights) == 552 and report.model_size == 552
    assert record("zoo DeepLabV3-R101 OS8 logits in voc_r101_os8_zoo",
                  relative_diff(logits(preset, x), expected)) < TOLERANCE
    paper = build_model(load_config("voc_r101_os8"))  # rates 12/24/36: same shapes, other network
    load_weights(paper, path, complete=True)
    assert relative_diff(logits(paper, x), expected) > 1e-3


# --- (b) the zoo's ResNet ImageNet checkpoints ------------------------------------------------------

def test_zoo_resnet_imagenet_checkpoint_gives_the_zoo_features(tmp_path):
    from deeplab.convert import load_weights
    from tests.zoo_networks import ZooStyleResNet, randomise_batch_norms

    # The zoo's trunk with the DeepLab plan on its last stage (stride 1, dilations 2, 4, 8 = OS16).
    zoo = ZooStyleResNet(SMALL_LAYERS, SMALL_WIDTH, num_classes=1001, layer4_dilations=(2, 4, 8))
    randomise_batch_norms(zoo, seed=5)
    zoo.set_train(False)
    x = image(5)
    expected = [feature.asnumpy() for feature in zoo(x)]
    path = save_cell(zoo, tmp_path / "resnet101_imagenet.ckpt")
    ours = small_ours(output_stride=16)
    report = load_weights(ours, path, complete=False)
    assert report.layout == "mindspore-zoo-resnet"
    backbone = [name for name, _ in ours.parameters_and_names() if name.startswith("backbone.")]
    assert sorted(report.weights) == sorted(backbone)
    assert {name for name, _ in report.skipped} == {"end_point.weight", "end_point.bias"}
    assert all(name.startswith("head.") for name in report.fresh) and report.fresh
    ours.set_train(False)
    for index, (got, want) in enumerate(zip(ours.backbone(x), expected)):
        assert record("zoo ResNet features c1-c4", relative_diff(got.asnumpy(), want)) < TOLERANCE, index


# --- (c) torchvision ------------------------------------------------------------------------------

TORCH_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


def torchvision_state_from(net) -> dict[str, np.ndarray]:
    """Our backbone's weights under torchvision resnet names (the inverse mapping), with torchvision's
    extra entries: num_batches_tracked per BN and the ImageNet fc."""
    state = {}
    for name, param in net.parameters_and_names():
        if not name.startswith("backbone."):
            continue
        module, _, suffix = name[len("backbone."):].rpartition(".")
        state[f"{module}.{TORCH_BN.get(suffix, suffix)}"] = param.asnumpy()
        if suffix == "moving_mean":
            state[f"{module}.num_batches_tracked"] = np.array(100, np.int64)
    channels = net.backbone.stage_channels[-1]
    state["fc.weight"] = np.zeros((1000, channels), np.float32)
    state["fc.bias"] = np.zeros(1000, np.float32)
    return state


def test_torchvision_layout_safetensors_without_torch_round_trips_exactly(tmp_path):
    from safetensors.numpy import save_file

    from deeplab.convert import load_weights
    from tests.zoo_networks import randomise_batch_norms

    source = small_ours()
    randomise_batch_norms(source, seed=7)
    path = tmp_path / "resnet.safetensors"
    save_file(torchvision_state_from(source), str(path))
    target = small_ours()
    report = load_weights(target, path, complete=False)
    assert report.layout == "torchvision-resnet"
    assert {name for name, _ in report.skipped} == {"fc.weight", "fc.bias"}
    x = image(7)
    source.set_train(False)
    target.set_train(False)
    for got, want in zip(target.backbone(x), source.backbone(x)):
        assert record("torchvision layout round trip (safetensors, no torch)",
                      relative_diff(got.asnumpy(), want.asnumpy())) == 0.0


def test_pth_without_pytorch_says_how_to_convert(tmp_path):
    from deeplab.convert import ConversionError
    from deeplab.convert.sources import read_weights

    try:
        import torch  # noqa: F401
    except ImportError:
        (tmp_path / "r.pth").write_bytes(b"not read")
        with pytest.raises(ConversionError, match="needs PyTorch.*safetensors"):
            read_weights(tmp_path / "r.pth")
    else:
        pytest.skip("PyTorch is installed in this environment: .pth files are read directly")


@pytest.fixture(scope="module")
def torchvision_reference(tmp_path_factory) -> Path:
    if not TORCH_PYTHON.is_file():
        pytest.skip(f"no PyTorch venv at {TORCH_PYTHON} (create it as bench/train_throughput.py's docstring says)")
    out = tmp_path_factory.mktemp("torchvision")
    proc = subprocess.run([str(TORCH_PYTHON), str(REPO / "tests" / "torch_reference.py"), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_torchvision_resnet101_gives_torchvisions_features(torchvision_reference):
    """Random torchvision resnet101 -> our ResNet-101: c1..c3 as torchvision computes them (v1.5
    stride placement, same padding), c4 with the same OS16 atrous plan on layer4."""
    from deeplab.convert import load_weights
    from deeplab.model import deeplabv3_resnet101

    import mindspore as ms

    x = ms.Tensor(np.load(torchvision_reference / "input.npy"))
    expected = np.load(torchvision_reference / "resnet101_features.npz")
    net = deeplabv3_resnet101(num_classes=21, output_stride=16)
    report = load_weights(net, torchvision_reference / "resnet101.safetensors", complete=False)
    assert report.layout == "torchvision-resnet" and len(report.weights) == 520
    net.set_train(False)
    for index, feature in enumerate(net.backbone(x)):
        assert record("torchvision resnet101 features c1-c4",
                      relative_diff(feature.asnumpy(), expected[f"c{index + 1}"])) < TOLERANCE, index


def test_torchvision_deeplabv3_gives_torchvisions_backbone_and_aspp(torchvision_reference):
    from deeplab.loss import NetWithLoss, SoftmaxCrossEntropyLoss
    from deeplab.model import deeplabv3_resnet101
    from deeplab.train import _load_pretrained

    import mindspore as ms

    x = ms.Tensor(np.load(torchvision_reference / "input.npy"))
    expected = np.load(torchvision_reference / "deeplabv3_features.npz")
    net = deeplabv3_resnet101(num_classes=21, output_stride=8, atrous_rates=(12, 24, 36))
    # through deeplab-train's ckpt_pre_trained loader (the same conversion as load_weights)
    report = _load_pretrained(NetWithLoss(net, SoftmaxCrossEntropyLoss(21, 255)),
                              torchvision_reference / "deeplabv3_resnet101.safetensors")
    assert report.layout == "torchvision-deeplabv3" and len(report.weights) == 550
    assert report.fresh == ("head.classifier.weight", "head.classifier.bias")
    net.set_train(False)
    c4 = net.backbone(x)[-1]
    assert record("torchvision deeplabv3 backbone c4", relative_diff(c4.asnumpy(), expected["c4"])) < TOLERANCE
    assert record("torchvision deeplabv3 ASPP", relative_diff(net.head.aspp(c4).asnumpy(), expected["aspp"])) \
        < TOLERANCE


# --- ckpt_pre_trained: every layout, counted ------------------------------------------------------

def test_ckpt_pre_trained_loads_every_layout_and_counts(tmp_path, capsys):
    from safetensors.numpy import save_file

    from deeplab.loss import NetWithLoss, SoftmaxCrossEntropyLoss
    from deeplab.train import _load_pretrained
    from tests.zoo_networks import ZooStyleResNet

    def train_net(num_classes=5):
        return NetWithLoss(small_ours(num_classes), SoftmaxCrossEntropyLoss(num_classes, 255))

    net = train_net()
    total = len(list(net.network.parameters_and_names()))
    backbone = len([1 for name, _ in net.network.parameters_and_names() if name.startswith("backbone.")])
    ours_full = save_cell(small_ours(), tmp_path / "ours.ckpt", prefix="network.")
    ours_backbone = save_cell(small_ours().backbone, tmp_path / "ours_backbone.ckpt")
    zoo_deeplab = save_cell(small_zoo_deeplab(num_classes=7), tmp_path / "zoo7.ckpt", prefix="network.")
    zoo_resnet = save_cell(ZooStyleResNet(SMALL_LAYERS, SMALL_WIDTH), tmp_path / "zoo_resnet.ckpt")
    torch_resnet = tmp_path / "resnet.safetensors"
    save_file(torchvision_state_from(small_ours()), str(torch_resnet))
    expected = {ours_full: ("deeplab", total), ours_backbone: ("deeplab-backbone", backbone),
                zoo_deeplab: ("mindspore-zoo-deeplabv3", total - 2),  # 7-class classifier: fresh
                zoo_resnet: ("mindspore-zoo-resnet", backbone), torch_resnet: ("torchvision-resnet", backbone)}
    for path, (layout, count) in expected.items():
        report = _load_pretrained(train_net(), path)
        assert (report.layout, len(report.weights)) == (layout, count), path
        printed = capsys.readouterr().out
        assert f"initialised {count} of {total} parameters (layout {layout})" in printed
    assert "classifier for 7 classes, this model has 5" in _summary_of(zoo_deeplab, train_net())


def _summary_of(path, net) -> str:
    from deeplab.convert import load_weights

    return "\n".join(load_weights(net.network, path, complete=False).summary())


def test_misfits_are_refused_naming_the_first_parameter(tmp_path):
    from deeplab.convert import ConversionError, load_weights

    from deeplab.model import Bottleneck, ResNet, deeplabv3

    path = save_cell(small_zoo_deeplab(), tmp_path / "zoo.ckpt")
    wider = deeplabv3(ResNet(Bottleneck, SMALL_LAYERS, widths=(16, 32, 64, 128)), 5, aspp_channels=SMALL_ASPP)
    with pytest.raises(ConversionError, match=r"zoo\.ckpt: resnet\.conv1\.weight \(as backbone\.conv1\.weight\) "
                                              r"has shape \(8, 3, 7, 7\), this model's is \(16, 3, 7, 7\)"):
        load_weights(wider, path, complete=False)
    # evaluation needs every parameter: a classifier for another class count is refused there
    with pytest.raises(ConversionError, match="lacks 2 parameter.*classifier for 5 classes, this model has 21"):
        load_weights(small_ours(num_classes=21), path, complete=True)
    unknown = save_cell(small_ours(), tmp_path / "odd.ckpt", prefix="model.")
    with pytest.raises(ConversionError, match="unknown checkpoint layout"):
        load_weights(small_ours(), unknown)


# --- the commands, as real processes --------------------------------------------------------------

def _run(*args, cwd=None, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)


def _one_error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("[WARNING]")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.slow
def test_convert_cli_and_eval_of_an_official_checkpoint_give_the_same_miou(synthetic_voc, tmp_path):  # noqa: F811
    """deeplab-eval --ckpt <zoo-layout checkpoint> == deeplab-eval of deeplab-convert's output."""
    import json

    from deeplab.checkpoints import read_checkpoint, verify_crc
    from tests.zoo_networks import ZooStyleDeepLabV3, randomise_batch_norms

    zoo = ZooStyleDeepLabV3(num_classes=21, output_stride=16, layers=(3, 4, 6, 3))  # the zoo's net on R50
    randomise_batch_norms(zoo, seed=11)
    official = save_cell(zoo, tmp_path / "official.ckpt", prefix="network.")
    converted = tmp_path / "ours.ckpt"
    proc = _run("deeplab.convert.cli", "--config", "voc_r50_os16", str(official), str(converted))
    assert proc.returncode == 0, proc.stderr
    names = [name for name, _ in _ours_r50_names()]
    assert f"layout mindspore-zoo-deeplabv3: {len(names)} of {len(names)} model parameters loaded" in proc.stdout
    assert verify_crc(converted) and set(read_checkpoint(converted)) == set(names)
    again = _run("deeplab.convert.cli", "--config", "voc_r50_os16", str(official), str(converted))
    assert "exists" in _one_error_line(again)

    results = {}
    for path in (official, converted):
        output = tmp_path / f"{path.stem}.json"
        proc = _run("deeplab.eval", "--config", "voc_r50_os16", "--data-root", str(synthetic_voc), "--ckpt",
                    str(path), "--scales", "1.0", "--no-flip", "--set", "crop_size=65", "--set", "threads=2",
                    "--output", str(output))
        assert proc.returncode == 0, proc.stderr
        results[path] = json.loads(output.read_text())
    assert results[official]["mIoU"] == results[converted]["mIoU"]
    assert results[official]["per_class_iou"] == results[converted]["per_class_iou"]
    assert results[official]["mIoU"] > 0  # some pixels right: not an empty comparison
    print(f"deeplab-eval mIoU: official layout {results[official]['mIoU']}, converted {results[converted]['mIoU']}")


def _ours_r50_names():
    from deeplab.config import load_config
    from deeplab.model import build_model

    return build_model(load_config("voc_r50_os16")).parameters_and_names()


@pytest.mark.slow
def test_convert_cli_refuses_a_misfit_with_one_line_and_writes_nothing(tmp_path):
    path = save_cell(small_zoo_deeplab(), tmp_path / "small_zoo.ckpt")
    proc = _run("deeplab.convert.cli", "--config", "voc_r50_os16", str(path), str(tmp_path / "out.ckpt"))
    line = _one_error_line(proc)
    assert "resnet.conv1.weight" in line and "(8, 3, 7, 7)" in line and "(64, 3, 7, 7)" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small_zoo.ckpt"]


@pytest.fixture(scope="module")
def pretrained_tiny_run(synthetic_voc, tmp_path_factory):  # noqa: F811
    """deeplab-train from a backbone-only checkpoint of this project's own resnet_tiny()."""
    from deeplab.model import resnet_tiny

    work = tmp_path_factory.mktemp("pretrained")
    backbone = save_cell(resnet_tiny(), work / "tiny_backbone.ckpt")
    proc = _run("deeplab.train", "--config", "tiny_synthetic", "--data-root", str(synthetic_voc), "--ckpt-dir",
                str(work / "ckpt"), "--train-steps", "1", "--set", f"ckpt_pre_trained={backbone}",
                "--set", "batch_size=4", "--set", "num_parallel_workers=1", "--set", "threads=2")
    assert proc.returncode == 0, proc.stderr
    return proc, work / "ckpt" / "deeplab-step000001.ckpt"


@pytest.mark.slow
def test_deeplab_train_initialises_the_backbone_from_a_backbone_only_checkpoint(pretrained_tiny_run):
    from deeplab.model import resnet_tiny

    proc, _ = pretrained_tiny_run
    count = len(list(resnet_tiny().parameters_and_names()))
    assert f"initialised {count} of " in proc.stdout and "(layout deeplab-backbone)" in proc.stdout, proc.stdout
    assert "freshly initialised" in proc.stdout


@pytest.mark.slow
def test_pynative_infer_and_export_work_on_the_first_call_in_a_fresh_process(pretrained_tiny_run,
                                                                            synthetic_voc, tmp_path):  # noqa: F811
    _, ckpt = pretrained_tiny_run
    picture = next((synthetic_voc / "JPEGImages").iterdir())
    proc = _run("deeplab.infer", "--config", "tiny_synthetic", "--ckpt", str(ckpt), str(picture), "--out",
                str(tmp_path / "out"), "--scales", "1.0", "--no-flip", "--pynative")
    assert proc.returncode == 0, proc.stderr
    assert "SystemError" not in proc.stderr and "NumPy 1.x" not in proc.stderr
    assert (tmp_path / "out" / f"{picture.stem}.png").is_file()
    proc = _run("deeplab.export", "--config", "tiny_synthetic", "--ckpt", str(ckpt), "--crop", "33", "--pynative",
                "--out", str(tmp_path / "m.mindir"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "m.mindir").is_file()
