import pytest

from dann.config import Config, config_from_dict, load_config, parse_override, preset_names, replace
from dann.errors import ConfigError


def test_defaults_then_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.05\nmodel:\n  mlp_dims: [32, 8]\n")
    cfg = load_config(str(path), ["optim.lr=0.2", "train.steps=7", "method.separate_forward=true"])
    assert cfg.optim.lr == 0.2 and cfg.train.steps == 7 and cfg.method.separate_forward is True
    assert cfg.model.mlp_dims == (32, 8)
    assert cfg.optim.momentum == Config().optim.momentum


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=0.1", "unknown key optim.lrr; valid keys in 'optim': name, lr,"),
        ("optimizer.lr=0.1", "unknown section 'optimizer'; valid sections: data, model, method, optim, train, sel"),
        ("train.steps=ten", "train.steps must be an integer, got 'ten'"),
        ("train.steps=1.5", "train.steps must be an integer"),
        ("optim.lr=true", "optim.lr must be a number"),
        ("method.separate_forward=1", "method.separate_forward must be true or false"),
        ("model.mlp_dims=7", "model.mlp_dims must be a list"),
        ("optim.lr=-0.1", "optim.lr must be > 0"),
        ("train.batch_size=0", "train.batch_size must be > 0"),
        ("method.label_smoothing=1.5", r"method.label_smoothing must be in \[0, 1\)"),
        ("lr=0.1", "must look like section.key=value"),
        ("train.on_nonfinite=ignore", "train.on_nonfinite must be error or skip, got 'ignore'"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_optional_and_string_fields_accept_their_types():
    cfg = load_config(overrides=["optim.backbone_lr_mult=0.1", "model.backbone=123"])
    assert cfg.optim.backbone_lr_mult == 0.1 and cfg.model.backbone == "123"
    assert load_config(overrides=["optim.backbone_lr_mult=null"]).optim.backbone_lr_mult is None


def test_config_round_trips_through_yaml_dict():
    cfg = load_config("moons", ["optim.lr=0.03"])
    assert config_from_dict(cfg.to_dict()) == cfg
    assert replace(cfg, train={"steps": 5}).train.steps == 5


def test_presets_ship_in_the_package_and_missing_files_are_named(tmp_path):
    assert {"moons", "digits"} <= set(preset_names())
    assert load_config("digits").model.backbone == "lenet_conv"
    with pytest.raises(ConfigError, match=r"config file nope\.yaml does not exist"):
        load_config("nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        Config().optim.lr = 1.0  # type: ignore[misc]


def test_parse_override_reads_yaml_values():
    assert parse_override("model.discriminator_dims=[64, 64]") == ("model", "discriminator_dims", [64, 64])


def test_the_documented_defaults_file_matches_the_code():
    from pathlib import Path

    path = Path(__file__).parents[1] / "configs" / "defaults.yaml"
    assert load_config(str(path)) == Config()
    text = path.read_text()
    for section, keys in Config().to_dict().items():
        assert all(f"\n  {key}: " in text for key in keys), section
