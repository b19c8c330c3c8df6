import pytest
import yaml

from dann.config import (
    Config,
    absolute_paths,
    config_from_dict,
    load_config,
    parse_override,
    preset_names,
    replace,
)
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
        ("train.steps=1e3", "train.steps must be an integer, got '1e3'; write 1000"),
        ("train.steps=1000.0", "train.steps must be an integer, got 1000.0; write 1000"),
        ("optim.lr=1e-3x", "optim.lr must be a number, got '1e-3x'"),
        ("optim.lr=0x10p-3", "optim.lr must be a number"),
        ("optim.lr=nan", "optim.lr must be a finite number, got 'nan'"),
        ("optim.lr=-Infinity", "optim.lr must be a finite number, got '-Infinity'"),
        ("optim.lr=1e999", "optim.lr must be a finite number, got '1e999'"),
        ("optim.lr=.inf", "optim.lr must be a finite number, got inf"),
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


@pytest.mark.parametrize(
    ("text", "value"),
    [("1e-3", 1e-3), ("3E-4", 3e-4), ("+5e-4", 5e-4), ("2.5e-2", 0.025), (".5E+1", 5.0), ("1_0e-2", 0.1), ("7", 7.0)],
)
def test_any_text_float_reads_is_a_number_in_overrides_yaml_and_values(text, value, tmp_path):
    """YAML 1.1 reads ``1e-3`` as text (its floats need a dot and a signed exponent); float() reads it."""
    assert load_config(overrides=[f"optim.lr={text}"]).optim.lr == value
    path = tmp_path / "c.yaml"
    path.write_text(f"optim:\n  lr: {text}\ndata:\n  crop_scale: [5e-1, 1E0]\n")
    cfg = load_config(str(path))
    assert cfg.optim.lr == value and cfg.data.crop_scale == (0.5, 1.0)
    assert load_config(values={"optim": {"weight_decay": text}}).optim.weight_decay == value


def test_numbers_are_taken_as_they_are_never_reread_from_text():
    import numpy as np

    tiny = 1e-300
    cfg = load_config(values={"optim": {"lr": tiny, "weight_decay": np.float32(0.25)}, "train": {"steps": np.int64(9)}})
    assert cfg.optim.lr == tiny and cfg.optim.weight_decay == 0.25 and cfg.train.steps == 9
    assert type(cfg.train.steps) is int and type(cfg.optim.weight_decay) is float
    with pytest.raises(ConfigError, match=r"train\.steps must be an integer, got np\.float64"):
        load_config(values={"train": {"steps": np.float64(2.5)}})
    with pytest.raises(ConfigError, match=r"optim\.nesterov must be true or false"):
        load_config(values={"optim": {"nesterov": np.bool_(True)}})


def test_integers_accept_text_int_reads():
    assert load_config(overrides=["train.steps='1_000'"]).train.steps == 1000
    assert load_config(values={"train": {"seed": " 12 "}}).train.seed == 12


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


@pytest.mark.parametrize(
    ("text", "mode"),
    [("on", "on"), ("off", "off"), ("yes", "on"), ("no", "off"), ("true", "on"), ("false", "off"), ("auto", "auto")],
)
def test_the_cache_switch_reads_as_written_though_yaml_makes_on_and_off_booleans(text, mode, tmp_path):
    assert load_config("moons", [f"data.cache={text}"]).data.cache == mode
    path = tmp_path / "c.yaml"
    path.write_text(f"data:\n  cache: {text}\n")
    cfg = load_config(str(path))
    assert cfg.data.cache == mode
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))) == cfg  # as a run's config.yaml keeps it


ABSOLUTE = [  # (overrides, key, the value absolute_paths records, with {cwd} for the working directory)
    (["data.source=s.npz"], "data.source", "{cwd}/s.npz"),
    (["data.source=[lab=data/lab, sea]"], "data.source", ("lab={cwd}/data/lab", "{cwd}/sea")),
    (["data.source={lab: ../lab, sea: /abs/sea/}"], "data.source", {"lab": "{up}/lab", "sea": "/abs/sea"}),
    (["data.source=./a/../s.npz"], "data.source", "{cwd}/s.npz"),  # one file, one spelling
    (["data.target=t", "data.target_eval=e.npz"], "data.target_eval", "{cwd}/e.npz"),
    (["data.root=imgs", "data.source=lab", "data.target=sea"], "data.root", "{cwd}/imgs"),
    (["data.root=imgs", "data.source=lab", "data.target=sea"], "data.source", "lab"),  # relative to data.root
    (["data.target=~/sea"], "data.target", "{home}/sea"),
    (["data.target=/abs/sea"], "data.target", "/abs/sea"),
    ([], "data.target", ""),
    (["data.cache_dir=cache"], "data.cache_dir", "{cwd}/cache"),
    (["model.pretrained_file=w/r18.safetensors"], "model.pretrained_file", "{cwd}/w/r18.safetensors"),
    (["model.init_from=runs/src"], "model.init_from", "{cwd}/runs/src"),
    (["method.clip_file=clip.pt"], "method.clip_file", "{cwd}/clip.pt"),
    (["method.clip_model=tiny.json"], "method.clip_model", "{cwd}/tiny.json"),
    (["method.clip_model=ViT-B-16"], "method.clip_model", "ViT-B-16"),  # a name, not a file
]


@pytest.mark.parametrize(("overrides", "key", "expected"), ABSOLUTE)
def test_a_run_records_its_paths_absolute_so_any_folder_reads_the_same_files(overrides, key, expected, tmp_path,
                                                                              monkeypatch):  # fmt: skip
    (tmp_path / "home").mkdir()
    (tmp_path / "here").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / "here")
    places = {"{cwd}": str(tmp_path / "here"), "{up}": str(tmp_path), "{home}": str(tmp_path / "home")}

    def fill(v):
        if isinstance(v, dict):
            return {k: fill(x) for k, x in v.items()}
        if isinstance(v, tuple):
            return tuple(fill(x) for x in v)
        for key, place in places.items():
            v = v.replace(key, place)
        return v

    cfg = absolute_paths(load_config(values={}, overrides=overrides))
    section, name = key.split(".")
    assert getattr(getattr(cfg, section), name) == fill(expected)
    assert absolute_paths(cfg) == cfg  # once is enough: absolute paths stay as they are


def test_a_stage_s_clip_file_is_made_absolute_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config("staged", ["method.clip_file=run.pt"])
    stages = [{"name": "a", "fraction": 0.5}, {"name": "b", "fraction": 0.5, "method": {"clip_file": "b.pt"}}]
    cfg = absolute_paths(replace(cfg, train={"stages": stages}))
    assert cfg.method.clip_file == str(tmp_path / "run.pt")
    assert [s.method.get("clip_file") for s in cfg.train.stages] == [None, str(tmp_path / "b.pt")]
