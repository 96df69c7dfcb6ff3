"""DeepLabV3 configuration: typed defaults, YAML presets, ``--set key=value`` overrides.

    from deeplab.config import load_config, ConfigError
    cfg = load_config("tiny_synthetic", overrides=["learning_rate=0.01", "eval_scales=1.0,1.5"])
    cfg.learning_rate, cfg.to_dict(), cfg.dump_yaml("config.yaml")

Presets live in deeplab/config/presets/*.yaml and list only what differs from the defaults.
"""
from deeplab.config.errors import ConfigError
from deeplab.config.loader import list_presets, load_config, parse_override
from deeplab.config.schema import Config, field_types

__all__ = ["Config", "ConfigError", "field_types", "list_presets", "load_config", "parse_override"]
