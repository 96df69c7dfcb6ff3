"""deeplab.config: reference defaults, presets, --set overrides, errors, YAML round trip."""
import pytest
import yaml

from deeplab.config import Config, ConfigError, field_types, list_presets, load_config, parse_override

REFERENCE_DEFAULTS = {
    "learning_rate": 0.0014, "lr_type": "poly", "lr_power": 0.9, "end_lr": 0.0, "lr_decay_rate": 0.1,
    "lr_decay_step": 40000, "warmup_steps": 0, "weight_decay": 5e-5, "momentum": 0.97, "crop_size": 513,
    "min_scale": 0.5, "max_scale": 2.0, "image_mean": (103.53, 116.28, 123.675),
    "image_std": (57.375, 57.120, 58.395), "ignore_label": 255, "seg_num_classes": 21,
    "eval_scales": (0.5, 0.75, 1.0, 1.25, 1.5, 1.75), "flip": False, "output_stride": 16,
    "fine_tune_batch_norm": False, "atrous_rates": None, "multi_grid": (1, 2, 4),
    "decoder_output_stride": None, "image_pyramid": None, "backbone": "resnet101", "aspp_channels": 256,
    "epoch_size": 6, "batch_size": 2, "eval_batch_size": 1, "amp_level": "O0", "loss_scale": 3072.0,
    "enable_save_ckpt": True, "save_checkpoint_steps": 1000, "save_checkpoint_num": 1,
    "ckpt_pre_trained": "", "num_parallel_workers": 0, "seed": 1, "threads": 0, "train_split": "train",
    "val_split": "val", "data_root": "",
}


def test_defaults_are_the_reference_ones():
    cfg = Config()
    for name, value in REFERENCE_DEFAULTS.items():
        assert getattr(cfg, name) == value, name
    assert cfg.effective_atrous_rates == (6, 12, 18)
    assert Config(output_stride=8).effective_atrous_rates == (12, 24, 36)
    assert Config(atrous_rates=[1, 2, 3]).effective_atrous_rates == (1, 2, 3)


def test_every_preset_loads():
    assert set(list_presets()) >= {"voc_r101_os16", "voc_r101_os8", "voc_r50_os16", "tiny_synthetic"}
    os16 = load_config("voc_r101_os16")
    assert (os16.backbone, os16.output_stride, os16.crop_size, os16.batch_size) == ("resnet101", 16, 513, 32)
    assert os16.weight_decay == 5e-5 and os16.momentum == 0.97  # reference defaults kept
    os8 = load_config("voc_r101_os8")
    assert os8.output_stride == 8 and os8.effective_atrous_rates == (12, 24, 36)
    assert load_config("voc_r50_os16").backbone == "resnet50"
    tiny = load_config("tiny_synthetic")
    assert tiny.backbone == "tiny" and tiny.crop_size < 160 and tiny.fine_tune_batch_norm


@pytest.mark.parametrize("text, key, value", [
    ("learning_rate=0.01", "learning_rate", 0.01),
    ("weight_decay=1e-4", "weight_decay", 1e-4),
    ("batch_size=4", "batch_size", 4),
    ("eval_scales=[1.0,1.5]", "eval_scales", [1.0, 1.5]),
    ("eval_scales=1.0,1.5", "eval_scales", [1.0, 1.5]),
    ("eval_scales=1", "eval_scales", [1.0]),
    ("atrous_rates=null", "atrous_rates", None),
    ("image_pyramid=None", "image_pyramid", None),
    ("image_pyramid=[0.5, 1.0]", "image_pyramid", [0.5, 1.0]),
    ("flip=true", "flip", True),
    ("save_ckpt_all_ranks=true", "save_ckpt_all_ranks", True),
    ("save_ckpt_all_ranks=yes", "save_ckpt_all_ranks", True),
    ("save_ckpt_all_ranks=1", "save_ckpt_all_ranks", True),
    ("save_ckpt_all_ranks=True", "save_ckpt_all_ranks", True),
    ("save_ckpt_all_ranks=no", "save_ckpt_all_ranks", False),
    ("fine_tune_batch_norm=False", "fine_tune_batch_norm", False),
    ("ckpt_pre_trained=007", "ckpt_pre_trained", "007"),
    ("data_root='/data/my voc'", "data_root", "/data/my voc"),
])
def test_override_values_take_the_field_type(text, key, value):
    assert parse_override(text) == (key, value)


def test_overrides_apply_on_top_of_a_preset():
    cfg = load_config("tiny_synthetic", ["learning_rate=0.5", "eval_scales=0.5,1.0", "flip=1"])
    assert cfg.learning_rate == 0.5 and cfg.eval_scales == (0.5, 1.0) and cfg.flip is True
    assert cfg.backbone == "tiny"


def test_unknown_key_names_the_key_and_close_matches():
    with pytest.raises(ConfigError) as err:
        load_config("tiny_synthetic", ["learnig_rate=0.1"])
    assert "learnig_rate" in str(err.value) and "learning_rate" in str(err.value)


@pytest.mark.parametrize("override, words", [
    ("batch_size=1.5", ["batch_size", "integer"]),
    ("lr_type=step", ["lr_type", "poly"]),
    ("output_stride=4", ["output_stride", "8 or 16"]),
    ("momentum=1.5", ["momentum"]),
    ("eval_scales=a,b", ["eval_scales", "number"]),
    ("flip=maybe", ["flip", "true or false"]),
    ("decoder_output_stride=16", ["decoder_output_stride"]),
    ("multi_grid=[1,2]", ["multi_grid"]),
    ("no_equals_sign", ["key=value"]),
])
def test_bad_values_are_config_errors_naming_the_override(override, words):
    with pytest.raises(ConfigError) as err:
        load_config("voc_r101_os16", [override])
    message = str(err.value)
    assert "\n" not in message and "--set" in message
    for word in words:
        assert word in message


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match="voc_r101_os16"):
        load_config("voc_r999")


def test_yaml_file_with_base_and_errors(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("base: tiny_synthetic\nbatch_size: 3\nweight_decay: 5e-4\n")
    cfg = load_config(good)
    assert cfg.batch_size == 3 and cfg.weight_decay == 5e-4 and cfg.backbone == "tiny"
    bad_key = tmp_path / "bad_key.yaml"
    bad_key.write_text("crop_sise: 3\n")
    with pytest.raises(ConfigError, match=r"bad_key.yaml.*crop_size"):
        load_config(bad_key)
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\nb: 3\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(broken)
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loop"):
        load_config(loop)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_dump_yaml_round_trips_atomically(tmp_path):
    cfg = load_config("voc_r101_os8", ["image_pyramid=[1.0,0.75]", "ckpt_pre_trained=a b.ckpt"])
    out = cfg.dump_yaml(tmp_path / "config.yaml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]  # no temp file left
    assert set(yaml.safe_load(out.read_text())) == set(field_types())
    assert load_config(out) == cfg
    with pytest.raises(FileExistsError):
        cfg.dump_yaml(out, overwrite=False)


def test_config_is_immutable_and_replace_validates():
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.batch_size = 4
    assert cfg.replace(batch_size=4).batch_size == 4
    with pytest.raises(ConfigError):
        cfg.replace(batch_size=0)
    with pytest.raises(ConfigError, match="batch_size"):
        cfg.replace(batch_sizes=4)
    assert cfg.to_dict()["eval_scales"] == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
