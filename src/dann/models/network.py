"""DomainAdaptNet: backbone (+ bottleneck) → features; a linear label head; a domain discriminator behind a GRL.
All in one ``nn.Module`` so one optimizer, one checkpoint and one DDP wrap see every parameter."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError
from .backbones import BACKBONES, create_backbone
from .grl import grad_reverse
from .heads import Bottleneck, DomainDiscriminator, mlp_layers


class DomainAdaptNet(nn.Module):
    """``forward(x)`` returns class logits (N, num_classes) in train and eval mode alike;
    ``domain_logits(f, coeff)`` returns (N,) domain logits of features passed through the GRL."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        bottleneck_dim: int = 0,
        discriminator_dims: Sequence[int] = (100,),
        dropout: float = 0.0,
        head_dims: Sequence[int] = (),
        discriminator: nn.Module | None = None,
        head_norm: bool = False,
        freeze_bn: bool = False,
        input_norm: str = "none",
        bottleneck_kind: str = "bn_relu",
        weight_norm: bool = False,
    ) -> None:
        super().__init__()
        self.input_norm = PerImageStandardize() if input_norm == "per_image" else nn.Identity()
        self.backbone = backbone
        width = backbone.num_features
        self.bottleneck = Bottleneck(width, bottleneck_dim, bottleneck_kind) if bottleneck_dim else nn.Identity()
        self.num_features = bottleneck_dim or width
        self.num_classes = num_classes
        self.head = mlp_layers(self.num_features, head_dims, num_classes, norm=head_norm, weight_norm=weight_norm)
        self.discriminator = discriminator or DomainDiscriminator(self.num_features, discriminator_dims, dropout)
        self.freeze_bn = freeze_bn  # model.freeze_bn: see ``train``

    def train(self, mode: bool = True) -> DomainAdaptNet:
        """``nn.Module.train``; with ``freeze_bn`` every BatchNorm layer stays in eval mode: it normalizes with its
        running statistics and never updates them, while its affine weight and bias still train."""
        super().train(mode)
        if mode and self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, *input_shape) → (N, num_features): the features both heads read."""
        return self.bottleneck(self.backbone(self.input_norm(x)))

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        """(N, num_features) → (N, num_classes) logits."""
        return self.head(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def domain_logits(self, f: torch.Tensor, coeff: float) -> torch.Tensor:
        """(N, num_features) → (N,) float32 logits of "is target" (float64 for float64 features); gradients into
        ``f`` are reversed and scaled by coeff. The GRL and the discriminator run in float32 even under autocast (the
        adversarial game's small gradient differences are what bfloat16 rounds away); the features upstream keep the
        autocast dtype. (A method may give the net another discriminator: CDAN's reads (N, num_features +
        num_classes), MDD's returns (N, num_classes) logits of an auxiliary classifier; see ``dann.methods``.)"""
        with torch.autocast(f.device.type, enabled=False):
            return self.discriminator(grad_reverse(f if f.dtype == torch.float64 else f.float(), coeff))

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone parameters, all other parameters), for a separate backbone learning rate."""
        backbone = list(self.backbone.parameters())
        ids = {id(p) for p in backbone}
        return backbone, [p for p in self.parameters() if id(p) not in ids]


class PerImageStandardize(nn.Module):
    """``model.input_norm: per_image``: each image (C, H, W) minus its own mean, over its own standard deviation
    (all pixels and channels together), as the self-ensembling reference standardises its inputs (French et al.,
    ICLR 2018). No parameters, so it is part of the network and applies alike in training, evaluation and
    ``dann predict``. (N, C, H, W) → (N, C, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        mean, std = flat.mean(1), flat.std(1)
        shape = (-1,) + (1,) * (x.ndim - 1)
        return (x - mean.view(shape)) / (std.view(shape) + 1e-5)


@torch.no_grad()
def recompute_batchnorm(
    net: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device | None = None
) -> dict[str, torch.Tensor]:
    """AdaBN (Li, Wang, Shi, Liu, Hou, "Revisiting Batch Normalization For Practical Domain Adaptation", ICLR
    workshop 2017): every BatchNorm layer's running mean and variance recomputed as the plain average over
    ``batches`` of (x (B, ...), indices (B,)) (e.g. the target domain's), everything else in eval mode (no dropout).
    Returns the network's state dict with those statistics; ``net`` itself is left as it was."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    own = {k: v.detach().clone() for k, v in net.state_dict().items()}
    if not norms:
        return own
    device = device or next(net.parameters()).device
    was_training, momenta = net.training, [m.momentum for m in norms]
    net.eval()
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches
            m.train()
        for x, _ in batches:
            net(x.to(device))
        adapted = {k: v.detach().clone() for k, v in net.state_dict().items()}
        return adapted | {k: v for k, v in own.items() if k.endswith("num_batches_tracked")}  # the trained counts
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        net.load_state_dict(own)
        net.train(was_training)


PAPER_HEAD = (100, 100)  # lenet_conv's label predictor: the DANN paper's two fc-100 layers
AUTO_IMAGE_BACKBONE = "lenet_conv"  # what model.backbone=auto gives images (C, H, W); vectors get mlp


def resolve_model(cfg: ModelConfig, input_shape: tuple[int, ...]) -> ModelConfig:
    """``model.backbone: auto`` → ``lenet_conv`` for images (C, H, W), ``mlp`` for anything else; ``head_dims: null``
    → the paper's (100, 100) label predictor after ``lenet_conv`` without a bottleneck, one linear layer otherwise.
    ``bottleneck_kind: null`` → ``bn_relu``, ``weight_norm: null`` → off. So the same data gets the same network
    through every entry point. Other values are kept."""
    backbone = cfg.backbone
    if backbone == "auto":
        backbone = AUTO_IMAGE_BACKBONE if len(input_shape) == 3 else "mlp"
    paper = backbone == "lenet_conv" and not cfg.bottleneck_dim  # with a bottleneck: one linear layer, as SHOT's
    head = cfg.head_dims if cfg.head_dims is not None else (PAPER_HEAD if paper else ())
    kind = cfg.bottleneck_kind or "bn_relu"
    weight_norm = bool(cfg.weight_norm)
    return dataclasses.replace(
        cfg, backbone=backbone, head_dims=tuple(head), bottleneck_kind=kind, weight_norm=weight_norm
    )


TIMM_BOTTLENECK = 256  # the bottleneck width timm backbones get unless model.bottleneck_dim says otherwise


def bottleneck_dim(cfg: ModelConfig) -> int:
    """``model.bottleneck_dim``, or when it is None (auto): 256 for timm backbones, 0 (none) for the registered
    small ones (``lenet``, ``mlp``), which are the DANN paper's networks and have no bottleneck."""
    if cfg.bottleneck_dim is not None:
        return cfg.bottleneck_dim
    return 0 if cfg.backbone in BACKBONES else TIMM_BOTTLENECK


def create_network(
    cfg: ModelConfig,
    input_shape: tuple[int, ...],
    num_classes: int,
    discriminator: Callable[[int], nn.Module] | None = None,
) -> DomainAdaptNet:
    """The network for samples of ``input_shape``. ``discriminator(num_features)`` builds the module behind
    ``domain_logits`` (default: DANN's one-logit MLP of ``cfg.discriminator_dims``). ``cfg`` is resolved (a run's
    plan, ``dann.plan``; ``dann.create_network`` resolves ``auto`` itself): a concrete ``model.backbone`` and
    ``model.head_dims``."""
    if cfg.backbone == "auto" or cfg.head_dims is None:
        raise ConfigError(
            "model.backbone=auto and model.head_dims=null are chosen for the data by a run's plan: build the network "
            "with dann.create_network (or dann.plan.network_model first)"
        )
    if cfg.input_norm == "per_image" and len(input_shape) != 3:
        raise ConfigError(
            f"model.input_norm=per_image standardises images (C, H, W), but the samples have shape {tuple(input_shape)}"
            "; use model.input_norm=none for feature vectors"
        )
    backbone = create_backbone(cfg, input_shape)
    dim = bottleneck_dim(cfg)
    module = discriminator(dim or backbone.num_features) if discriminator is not None else None
    if module is None and cfg.discriminator_slope:
        module = DomainDiscriminator(dim or backbone.num_features, cfg.discriminator_dims, cfg.dropout,
                                     negative_slope=cfg.discriminator_slope)  # fmt: skip
    return DomainAdaptNet(
        backbone, num_classes, dim, cfg.discriminator_dims, cfg.dropout, cfg.head_dims, module, cfg.head_norm,
        cfg.freeze_bn, cfg.input_norm, cfg.bottleneck_kind, cfg.weight_norm,
    )  # fmt: skip
