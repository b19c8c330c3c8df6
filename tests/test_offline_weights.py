"""Pretrained timm weights on a machine without a network: one line within seconds naming the model, the file and
the offline routes (``model.pretrained_file``, the cache folder), whatever the way the network is missing; weights
already in the Hugging Face cache are used offline. No test reaches the network: the resolver is patched."""

import socket
import time

import pytest
import torch

from dann.config import ModelConfig
from dann.errors import ConfigError
from dann.models import weights
from dann.models.backbones import create_backbone

from .test_image_cli import train

REPO = "timm/test_resnet.r160_in1k"


@pytest.fixture
def no_network(monkeypatch):
    """Every connection fails as on a machine without a resolver; records the hosts asked for."""
    asked = []

    def refuse(address, *args, **kwargs):
        asked.append(address[0])
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return asked


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def _one_line_about_the_file(message: str) -> None:
    assert "\n" not in message
    for part in ("test_resnet", f"model.safetensors of {REPO}", "model.pretrained_file=PATH", "cache folder"):
        assert part in message, part


def _hang(address, timeout=None, *args, **kwargs):
    time.sleep(30)


@pytest.mark.parametrize(
    ("setup", "why"),
    [
        ("refused", "huggingface.co cannot be reached"),
        ("HF_HUB_OFFLINE", "HF_HUB_OFFLINE is set"),
        ("TRANSFORMERS_OFFLINE", "TRANSFORMERS_OFFLINE is set"),
        ("hangs", "huggingface.co did not answer in 0.2 s"),
    ],
)
def test_unreachable_hub_gives_one_line_within_seconds(setup, why, no_network, empty_cache, monkeypatch):
    if setup in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(setup, "1")
    if setup == "hangs":
        monkeypatch.setattr(socket, "create_connection", _hang)
        monkeypatch.setattr(weights, "PROBE_SECONDS", 0.2)
    start = time.perf_counter()
    with pytest.raises(ConfigError) as error:
        create_backbone(ModelConfig(backbone="test_resnet", pretrained=True), (3, 32, 32))
    assert time.perf_counter() - start < 5
    _one_line_about_the_file(str(error.value))
    assert f"no network: {why}" in str(error.value)
    assert str(empty_cache) in str(error.value)
    if setup.endswith("OFFLINE"):
        assert no_network == []  # an offline switch the user set is respected: nothing is asked of the network


def _cache(hub, state: dict[str, torch.Tensor], name: str = "model.safetensors") -> None:
    """The Hugging Face cache layout of one file of ``REPO`` at a revision."""
    from safetensors.torch import save_file

    folder = hub / ("models--" + REPO.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    if name.endswith(".safetensors"):
        save_file(state, str(snapshot / name))
    else:
        torch.save(state, snapshot / name)


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin"])
def test_cached_weights_are_used_offline(name, no_network, empty_cache):
    import timm

    torch.manual_seed(7)
    state = {k: v.contiguous() for k, v in timm.create_model("test_resnet").state_dict().items()}
    _cache(empty_cache, state, name)
    torch.manual_seed(8)
    model = create_backbone(ModelConfig(backbone="test_resnet", pretrained=True), (3, 32, 32))
    assert no_network == ["huggingface.co"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_a_download_that_fails_after_the_probe_gives_the_same_line(no_network, empty_cache, monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    def broken(*args, **kwargs):
        raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub")

    monkeypatch.setattr(weights, "offline_reason", lambda address: None)  # the host answered, the download then failed
    monkeypatch.setattr("timm.models._hub.hf_hub_download", broken)
    with pytest.raises(ConfigError) as error:
        create_backbone(ModelConfig(backbone="test_resnet", pretrained=True), (3, 32, 32))
    _one_line_about_the_file(str(error.value))
    assert "LocalEntryNotFoundError" in str(error.value)


def test_cli_train_offline_ends_in_one_line(shape_folders, tmp_path, no_network, empty_cache, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert train(shape_folders, tmp_path / "run", "--set", "model.pretrained=true") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    _one_line_about_the_file(err)


@pytest.mark.parametrize(
    ("endpoint", "port"), [("https://huggingface.co", 443), ("http://mirror.local:8080", 8080), ("http://m", 80)]
)
def test_the_probe_asks_the_endpoints_own_host_and_port(endpoint, port, monkeypatch):
    asked = []

    def refuse(address, *args, **kwargs):
        asked.append(address)
        raise ConnectionRefusedError(111, "Connection refused")

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    reason = weights.offline_reason(endpoint)
    assert asked == [(endpoint.split("//")[1].split(":")[0], port)] and "cannot be reached" in reason


def test_behind_a_proxy_the_download_is_left_to_try(monkeypatch, no_network):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.local:3128")
    assert weights.offline_reason("https://huggingface.co") is None and no_network == []


@pytest.mark.parametrize(
    "error",
    [PermissionError(13, "Permission denied"), OSError(28, "No space left on device"), ValueError("bad repo id")],
)
def test_a_failure_that_is_not_the_network_is_not_called_one(error, no_network, empty_cache, monkeypatch):
    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(weights, "offline_reason", lambda address: None)
    monkeypatch.setattr("timm.models._hub.hf_hub_download", broken)
    with pytest.raises(type(error)):
        create_backbone(ModelConfig(backbone="test_resnet", pretrained=True), (3, 32, 32))
