"""Feature extractors by name. Each returns an ``nn.Module`` mapping inputs to (N, num_features) features and
exposing ``num_features``. Registered: ``lenet`` (the DANN paper's digit CNN) and ``mlp``; any other name is
looked up in timm (``timm.create_model(name, num_classes=0)`` is a pooled feature extractor)."""

from __future__ import annotations

import difflib
import socket
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError
from ..registry import Registry
from ..runs import load_state_file

BACKBONES: Registry = Registry("backbone")
# The side, in pixels, of the square images each registered backbone was designed for: image files are resized to it
# unless data.image_size says otherwise (timm models take theirs from their pretrained config's input_size). LeNet is
# the DANN paper's MNIST network (28×28 digits); the MLP reads the same small images, flattened.
NATIVE_SIZE: dict[str, int] = {"lenet": 28, "lenet_conv": 28, "mlp": 28}


class LeNet(nn.Module):
    """DANN paper (Ganin et al. 2016, MNIST architecture): conv5×5-32, max-pool 2, conv5×5-48, max-pool 2,
    fc-100, fc-100, ReLU after each. Input (N, C, H, W) with H, W ≥ 12; output (N, 100).
    ``batchnorm=True`` adds BatchNorm before each ReLU (not in the paper). ``fc=False`` stops after the convolutions
    (output (N, 768) at 28×28): the paper's split, where the fc-100 layers belong to the label predictor and the
    domain classifier reads the convolutional features (use with ``model.head_dims=[100, 100]``)."""

    def __init__(self, in_chans: int, size: tuple[int, int], batchnorm: bool = False, fc: bool = True) -> None:
        super().__init__()
        bn2, bn1 = (nn.BatchNorm2d, nn.BatchNorm1d) if batchnorm else (_no_norm, _no_norm)
        self.conv = nn.Sequential(
            nn.Conv2d(in_chans, 32, 5), bn2(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 48, 5), bn2(48), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        )  # fmt: skip
        with torch.no_grad():
            flat = self.conv.eval()(torch.zeros(1, in_chans, *size)).shape[1]
        self.conv.train()
        if fc:
            self.fc = nn.Sequential(nn.Linear(flat, 100), bn1(100), nn.ReLU(), nn.Linear(100, 100), bn1(100), nn.ReLU())
        else:
            self.fc = nn.Identity()
        self.num_features = 100 if fc else flat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))


class MLP(nn.Module):
    """Flattens the input, then Linear (+ BatchNorm) + ReLU per hidden width. Output (N, dims[-1])."""

    def __init__(self, in_features: int, dims: Sequence[int], batchnorm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        for d_in, d_out in pairwise([in_features, *dims]):
            layers += [nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out) if batchnorm else nn.Identity(), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.num_features = dims[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _no_norm(width: int) -> nn.Module:
    return nn.Identity()


def _image_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ConfigError(
            f"backbone {name!r} needs images of shape (C, H, W), but the data has samples of shape "
            f"{tuple(input_shape)}; use model.backbone=mlp for feature vectors"
        )
    return input_shape  # type: ignore[return-value]


def _lenet(cfg: ModelConfig, input_shape: tuple[int, ...], fc: bool) -> nn.Module:
    c, h, w = _image_shape(cfg.backbone, input_shape)
    if min(h, w) < 12:
        raise ConfigError(f"backbone {cfg.backbone!r} needs images of at least 12×12 pixels, got {h}×{w}")
    return LeNet(c, (h, w), cfg.batchnorm, fc)


@BACKBONES.register()
def lenet(cfg: ModelConfig, input_shape: tuple[int, ...]) -> nn.Module:
    return _lenet(cfg, input_shape, fc=True)


@BACKBONES.register()
def lenet_conv(cfg: ModelConfig, input_shape: tuple[int, ...]) -> nn.Module:
    return _lenet(cfg, input_shape, fc=False)


@BACKBONES.register()
def mlp(cfg: ModelConfig, input_shape: tuple[int, ...]) -> nn.Module:
    return MLP(int(torch.Size(input_shape).numel()), cfg.mlp_dims, cfg.batchnorm)


def _timm_backbone(cfg: ModelConfig, input_shape: tuple[int, ...]) -> nn.Module:
    import timm

    c, _, _ = _image_shape(cfg.backbone, input_shape)
    if not cfg.pretrained:
        model = timm.create_model(cfg.backbone, num_classes=0, in_chans=c)
    else:
        model = _pretrained_timm(cfg.backbone, c)
    if cfg.pretrained_file:
        load_pretrained_file(model, cfg.pretrained_file)
    return model


def _pretrained_timm(backbone: str, in_chans: int) -> nn.Module:
    """``timm.create_model(backbone, pretrained=True)``, from the local cache when the hub is unreachable; a fetch
    that fails anyway (a network that drops) ends in one line naming the file and the offline route."""
    import timm

    from .weights import fetch_failed, offline_overlay, weights_source

    overlay = offline_overlay(backbone)
    try:
        return timm.create_model(
            backbone, pretrained=True, num_classes=0, in_chans=in_chans, pretrained_cfg_overlay=overlay or None
        )
    except Exception as e:  # requests/httpx/huggingface_hub errors share no base class beyond this
        source = weights_source(backbone)
        if overlay or source is None or not _network_error(e):
            raise
        raise ConfigError(fetch_failed(source, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")) from None


# Failures to reach a server, by class name (requests, httpx, httpcore, urllib3, huggingface_hub), so that none of
# those packages is imported to recognise them; a full disk, a gated repository or a wrong name is not one of them.
NETWORK_ERRORS = {
    "ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "TimeoutException", "ConnectError",
    "NetworkError", "NewConnectionError", "MaxRetryError", "NameResolutionError", "LocalEntryNotFoundError",
    "OfflineModeIsEnabled",
}  # fmt: skip


def _network_error(e: BaseException | None) -> bool:
    """Whether ``e`` (or what caused it) is a failed connection rather than a fault of the model, its weights or the
    cache (a full disk, no permission), or a refusal by the server (a gated repository, a wrong name)."""
    while e is not None:
        if isinstance(e, ConnectionError | TimeoutError | socket.gaierror) or type(e).__name__ in NETWORK_ERRORS:
            return True
        e = e.__cause__ or e.__context__
    return False


def load_pretrained_file(model: nn.Module, path: str) -> None:
    """Load local weights (``.safetensors`` or a ``torch.save``d state dict) into a timm feature extractor. The
    classifier weights in the file are ignored; any other missing key or shape mismatch is an error."""
    state = load_state_file(Path(path), "model.pretrained_file")
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own}
    bad = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if v.shape != own[k].shape
    ]
    missing = sorted(set(own) - set(state))
    if bad or missing:
        detail = "; ".join(bad[:5]) or f"missing keys {missing[:5]}"
        raise ConfigError(f"model.pretrained_file {path} does not fit backbone {type(model).__name__}: {detail}")
    model.load_state_dict(state)


def create_backbone(cfg: ModelConfig, input_shape: tuple[int, ...]) -> nn.Module:
    """The feature extractor named by ``cfg.backbone`` for samples of ``input_shape`` ((D,) or (C, H, W))."""
    if cfg.backbone in BACKBONES:
        return BACKBONES.get(cfg.backbone)(cfg, tuple(input_shape))
    import timm

    if timm.is_model(cfg.backbone):
        return _timm_backbone(cfg, tuple(input_shape))
    close = difflib.get_close_matches(cfg.backbone, timm.list_models(), n=5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"unknown backbone {cfg.backbone!r}; valid: {', '.join(BACKBONES.names())} or any timm model "
        f"name (see timm.list_models()){hint}"
    )
