"""deeplab.model: sizes, shapes, atrous rates, decoder, image pyramid, frozen batch norm.

Real MindSpore GRAPH_MODE runs on tiny inputs, 1 CPU thread (whole module: ~20 s).
"""
import numpy as np
import pytest

from deeplab import cpu_tuning

cpu_tuning.apply_to_environ(threads=1)  # before MindSpore loads: oneDNN reads it once

import mindspore as ms  # noqa: E402
from mindspore import nn  # noqa: E402

from deeplab.config import load_config  # noqa: E402
from deeplab.model import (ASPPConv, ImagePyramid, build_model, count_parameters, deeplabv3_resnet101,  # noqa: E402
                           deeplabv3_tiny, resnet50)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module", autouse=True)
def graph_mode_one_thread():
    ms.set_device("CPU")
    cpu_tuning.set_mindspore_threads(1)
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=previous)


def images(batch, size, seed=0):
    return ms.Tensor(np.random.default_rng(seed).normal(size=(batch, 3, size, size)).astype(np.float32))


def test_r101_os16_has_the_reference_parameter_count():
    net = build_model(load_config("voc_r101_os16"))
    assert abs(count_parameters(net) - 58.04e6) / 58.04e6 < 0.005
    # BN moving statistics are parameters too in MindSpore, but not trainable ones.
    assert count_parameters(net, trainable_only=False) > count_parameters(net)


def dilations(cell):
    return [c.dilation[-1] for _, c in cell.cells_and_names() if isinstance(c, nn.Conv2d) and c.kernel_size == (3, 3)]


@pytest.mark.parametrize("output_stride, layer3, layer4", [(16, [1], [2, 4, 8]), (8, [2], [4, 8, 16])])
def test_atrous_backbone_keeps_the_output_stride(output_stride, layer3, layer4):
    backbone = resnet50(output_stride=output_stride)
    assert set(dilations(backbone.layer3)) == set(layer3)
    assert dilations(backbone.layer4) == layer4  # multi-grid (1, 2, 4) times the stage's rate
    backbone.set_train(False)
    features = backbone(images(1, 33))
    side = (33 - 1) // output_stride + 1
    assert [f.shape for f in features] == [(1, 256, 9, 9), (1, 512, 5, 5), (1, 1024, side, side),
                                           (1, 2048, side, side)]


@pytest.mark.parametrize("output_stride", [16, 8])
def test_resnet101_deeplabv3_forward_on_a_small_crop(output_stride):
    net = deeplabv3_resnet101(num_classes=3, output_stride=output_stride)
    rates = [cell.cell_list[0].dilation[-1] for _, cell in net.cells_and_names() if isinstance(cell, ASPPConv)]
    assert rates == [6 * 16 // output_stride, 12 * 16 // output_stride, 18 * 16 // output_stride]
    net.set_train(False)
    assert net(images(1, 33)).shape == (1, 3, 33, 33)


def test_tiny_forward_gives_logits_at_input_size():
    cfg = load_config("tiny_synthetic", ["seg_num_classes=5"])
    net = build_model(cfg)
    net.set_train(False)
    out = net(images(2, 65))
    assert out.shape == (2, 5, 65, 65) and out.dtype == ms.float32
    assert np.isfinite(out.asnumpy()).all()


def test_decoder_and_image_pyramid_keep_the_input_size():
    decoder = build_model(load_config("tiny_synthetic", ["decoder_output_stride=4", "seg_num_classes=4"]))
    assert type(decoder.head).__name__ == "DeepLabV3PlusHead"
    plain = build_model(load_config("tiny_synthetic", ["seg_num_classes=4"]))
    assert count_parameters(decoder) > count_parameters(plain)
    pyramid = build_model(load_config("tiny_synthetic", ["image_pyramid=[1.0, 0.5]", "output_stride=16",
                                                         "decoder_output_stride=8", "seg_num_classes=4"]))
    x = images(1, 49)
    for net in (decoder, pyramid):
        net.set_train(False)
        assert net(x).shape == (1, 4, 49, 49)


def test_image_pyramid_merges_scales_by_maximum():
    ms.set_seed(3)
    single = deeplabv3_tiny(num_classes=3, output_stride=16, dropout=0.0)
    single.set_train(False)
    pyramid = ImagePyramid(single, [1.0, 0.5])
    x = images(1, 33, seed=1)
    full, merged = single(x).asnumpy(), pyramid(x).asnumpy()
    assert (merged >= full - 1e-5).all() and not np.allclose(merged, full)


def batch_norm_means(net):
    return {name: p.asnumpy().copy() for name, p in net.parameters_and_names() if "moving_mean" in name}


@pytest.mark.parametrize("fine_tune", [True, False])
def test_fine_tune_batch_norm_false_freezes_statistics(fine_tune):
    net = deeplabv3_tiny(num_classes=3, output_stride=16, fine_tune_batch_norm=fine_tune, dropout=0.0)
    before = batch_norm_means(net)
    x = images(2, 33, seed=2)
    net.set_train(True)
    train_out = net(x).asnumpy()
    after = batch_norm_means(net)
    changed = any(not np.array_equal(before[name], after[name]) for name in before)
    assert changed is fine_tune
    net.set_train(False)
    eval_out = net(x).asnumpy()
    # frozen BN normalises with the stored statistics in training too, so both modes agree
    assert np.allclose(train_out, eval_out, atol=1e-4) is (not fine_tune)
    # gamma/beta stay trainable either way, as in the reference implementation
    assert any("gamma" in p.name for p in net.trainable_params())


def test_tiny_learns_a_fixed_batch_in_graph_mode():
    ms.set_seed(0)
    net = deeplabv3_tiny(num_classes=2, output_stride=16)
    loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    optimizer = nn.Momentum(net.trainable_params(), learning_rate=0.05, momentum=0.9)

    def forward(x, y):
        logits = net(x).transpose(0, 2, 3, 1).reshape(-1, 2)
        return loss_fn(logits, y.reshape(-1))

    grad_fn = ms.value_and_grad(forward, None, optimizer.parameters)

    @ms.jit
    def step(x, y):
        loss, grads = grad_fn(x, y)
        optimizer(grads)
        return loss

    x = images(2, 33, seed=4)
    y = ms.Tensor((x.asnumpy()[:, 0] > 0).astype(np.int32))  # label = sign of the first channel
    net.set_train(True)
    losses = [float(step(x, y).asnumpy()) for _ in range(8)]
    assert losses[-1] < 0.7 * losses[0]
