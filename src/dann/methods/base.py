"""What every method shares. A method is a small registered class with one entry point,
``loss(net, batch, progress) -> LossOutput``; it never calls ``backward``, ``step`` or ``.to(device)``:
the trainer owns optimization.

Most methods are "source cross-entropy + λ_adv × one transfer term": the term is a small ``Term`` object (the
domain-adversarial loss, CDAN's conditional one, MMD, CORAL, MCC...). Target regularizers are terms too, named in
``method.regularizers`` with their weights and added to any method that reads the target batch::

    total = cls + λ_adv · term(f_s, f_t, z_s, z_t) + Σ_r w_r · regularizer_r(...)

A term may keep state across steps (an EMA teacher, cluster centres): ``state_dict`` / ``load_state_dict`` put it
in checkpoints, so a resumed run continues it exactly."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MethodConfig, ModelConfig
from ..data.domains import SOURCE, TARGET, AnyDomain  # noqa: F401 -- SOURCE, TARGET re-exported for methods
from ..errors import ConfigError, DataWarning
from ..models.heads import DomainDiscriminator
from ..models.network import DomainAdaptNet
from ..registry import Registry
from ..training.schedules import GRL_SCHEDULES

if TYPE_CHECKING:
    from ..config import Config
    from ..data.domains import DomainData

METHODS: Registry = Registry("method")
REGULARIZERS: Registry = Registry("regularizer")


@dataclass
class Batch:
    """One training step's data: ``x_s`` (B_s, ...) with labels ``y_s`` (B_s,) and optional per-sample weights
    ``w_s`` (B_s,); ``x_t`` (B_t, ...) unlabeled target samples (target labels never reach a method). A method that
    reads no source batch (``uses_source = False``) gets B_s = 0. With several labeled domains, ``d_s`` (B_s,) is the
    index of each labeled sample's domain (``DomainData.labeled``), and ``parts`` the number of rows each domain's
    batch holds when ``x_s`` joins one batch per domain (a stage of ``train.stages``). ``i_t`` (B_t,): the target
    samples' indices in the target training set, where the stream knows them."""

    x_s: torch.Tensor
    y_s: torch.Tensor
    x_t: torch.Tensor
    w_s: torch.Tensor | None = None
    d_s: torch.Tensor | None = None
    parts: tuple[int, ...] | None = None
    i_t: torch.Tensor | None = None


class LossOutput(NamedTuple):
    total: torch.Tensor  # scalar to minimize
    terms: dict[str, torch.Tensor | float]  # named parts for logging (detached or plain floats)


@dataclass
class Forward:
    """What one step's forward pass produced, for terms and regularizers: features ``f_s`` (B_s, F), ``f_t``
    (B_t, F) and class logits ``z_s`` (B_s, K), ``z_t`` (B_t, K)."""

    net: DomainAdaptNet
    batch: Batch
    f_s: torch.Tensor
    f_t: torch.Tensor
    z_s: torch.Tensor
    z_t: torch.Tensor
    progress: float
    steps: int = 0  # the steps of the run (or of its stage) that ``progress`` spans; 0: unknown
    z_t_strong: torch.Tensor | None = None  # (B_t, K) logits of a strongly augmented target view, where forwarded


class Term:
    """One named loss over a step's ``Forward``. ``__call__`` returns (value, extra named values to log).

    Hooks the trainer calls: ``prepare`` once before training; ``refresh`` before a step's loss whenever
    ``refresh_due`` says so, with the whole unlabeled target training set (a term that keeps statistics of it, e.g.
    SHOT's cluster centres once per epoch; keep what it computes, and the step, in ``state_dict`` so that a resumed
    run needs no extra pass); ``after_step`` after each optimizer step."""

    uses_discriminator: ClassVar[bool] = False  # reads net.domain_logits (DDP must otherwise skip its parameters)
    options: ClassVar[tuple[str, ...]] = ()  # the method.* keys only this term reads (warned about when unused)
    forwards_target_alone: ClassVar[bool] = False  # runs the network on the target batch alone (a strong view)

    def __init__(self, cfg: MethodConfig) -> None:
        self.cfg = cfg

    def __call__(self, fw: Forward) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        raise NotImplementedError

    @classmethod
    def discriminator(
        cls, model: ModelConfig, cfg: MethodConfig, num_features: int, num_classes: int, num_domains: int = 2
    ) -> nn.Module:
        """The module behind ``net.domain_logits``: by default a one-logit domain discriminator on the features.
        ``num_domains``: the labeled domains and the target, for a discriminator that tells them all apart."""
        return DomainDiscriminator(
            num_features, model.discriminator_dims, model.dropout, negative_slope=model.discriminator_slope
        )

    def bind(self, data: DomainData, cfg: Config, echo: Callable[[str], None] | None) -> None:
        """Called once before ``prepare``, with the run's data (class names, image preparation) and config; ``echo``
        (None: quiet) takes lines for the start-up summary."""

    def share(self, other: Term) -> None:
        """Before ``bind``: take what ``other``, a bound term of an earlier stage of the same run, built that this
        term would build the same (CLIP's teacher), so that a run builds it once. Nothing, by default."""

    def prepare(self, net: DomainAdaptNet) -> None:
        """Called once before training starts (after any ``--init-from`` weights are loaded)."""

    def refresh_due(self, step: int, epoch_steps: int) -> bool:
        """Whether the trainer calls ``refresh`` before step ``step``'s loss; ``epoch_steps``: the steps of one pass
        over the target training set, ceil(N_t / (target rows per step · train.accumulate)), the target rows being
        ``train.batch_size`` × ``target_ratio`` (``method.uratio``). Never, by default."""
        return False

    def refresh(self, net: DomainAdaptNet, target: AnyDomain, step: int, batch_size: int) -> None:
        """Recompute what the term keeps from ``target``, the whole target training set (no labels), before step
        ``step``'s loss, when ``refresh_due``; ``batch_size``: ``train.eval_batch_size``, for a pass over it. Under
        torchrun every process calls it with the whole set (the term makes the processes agree)."""

    def after_step(self, net: DomainAdaptNet) -> None:
        """Called after each optimizer step (an EMA teacher follows the weights here)."""

    def eval_weights(self) -> dict[str, torch.Tensor] | None:
        """The network weights (a full ``state_dict``) that evaluation, checkpoints' ``eval_model`` and prediction
        use instead of the trained ones (an EMA teacher); None: the trained weights."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class Method:
    """Base class: source cross-entropy plus ``lambda_adv`` × the method's ``term`` plus the weighted
    ``method.regularizers``. Subclasses set ``term`` (and ``term_name``), or override ``loss``."""

    uses_source: ClassVar[bool] = True  # reads the source batch (False: source-free, e.g. shot)
    uses_target: ClassVar[bool] = True  # reads the target batch (False: source_only)
    needs_init: ClassVar[bool] = False  # starts from a trained run (model.init_from), e.g. shot
    needs_names: ClassVar[bool] = False  # reads images and the words of the class names, e.g. clip_distill's prompts
    term: ClassVar[type[Term] | None] = None
    term_name: ClassVar[str] = "adv"
    # the method's reference values of the method.* keys left null (over METHOD_DEFAULTS), with their source in the
    # class docstring and docs/methods/index.md
    defaults: ClassVar[dict[str, Any]] = {}
    # model.bottleneck_dim under auto (null) for the small registered backbones (lenet*, mlp): the width of the
    # Linear-BatchNorm-ReLU layer under both heads. Every adaptation method's reference network has one (TLlib's
    # ImageClassifier, thuml/MDD, tim-learn/SHOT, the self-ensembling and VADA digit networks); source_only keeps 0
    bottleneck: ClassVar[int] = 256
    # train.precision=auto may give this method bf16 (image inputs, native bf16, no adversarial branch): only where
    # benchmarks/precision.py found it within the seed spread of fp32; a method not measured yet says False
    auto_bf16: ClassVar[bool] = True
    # ... and, for a method whose term reads the domain discriminator, where that was measured with the GRL and the
    # discriminator in float32 (DomainAdaptNet.domain_logits): the method alone, binary discriminator, not in stages
    adversarial_bf16: ClassVar[bool] = False

    def __init__(self, cfg: MethodConfig) -> None:
        cfg = method_defaults(cfg)
        self.cfg = cfg
        self.steps = 0  # the steps this method trains for (the run's, or its stage's): set by the trainer's plan
        self.averaged = WeightAverage(cfg.ema_eval or 0.0)  # method.ema_eval's average (empty while it is 0)
        self.terms: list[tuple[str, float, Term]] = []
        if self.term is not None:
            self.terms.append((self.term_name, cfg.lambda_adv, self.term(cfg)))
        if cfg.regularizers and not self.uses_target:
            raise ConfigError(
                f"method {cfg.name!r} reads no target batch, so method.regularizers cannot apply; "
                "pick a method that reads the target (e.g. dann), or drop the regularizers"
            )
        for name, weight in cfg.regularizers.items():
            if name in {n for n, _, _ in self.terms}:
                raise ConfigError(f"method.regularizers.{name}: {name!r} is already method {cfg.name!r}'s own term")
            self.terms.append((name, weight, REGULARIZERS.get(name)(cfg)))
        warn_unused_options(cfg, {key for _, _, term in self.terms for key in term.options}, f"method {cfg.name!r}")

    @property
    def uses_discriminator(self) -> bool:
        return any(term.uses_discriminator for _, _, term in self.terms)

    def loss(self, net: DomainAdaptNet, batch: Batch, progress: float) -> LossOutput:
        f_s, f_t = joint_features(net, batch, self.cfg.separate_forward)
        z = net.forward_head(torch.cat([f_s, f_t]))  # one head forward for both domains
        fw = Forward(net, batch, f_s, f_t, z[: len(f_s)], z[len(f_s) :], progress, self.steps)
        total, logged = torch.zeros((), device=z.device), {}
        if self.uses_source:
            total = classification_loss(fw.z_s, batch.y_s, batch.w_s, self.cfg.label_smoothing)
            logged["cls"] = total.detach()
        return self.add_terms(fw, total, logged)

    def add_terms(self, fw: Forward, total: torch.Tensor, logged: dict[str, torch.Tensor | float]) -> LossOutput:
        """``total`` (the classification loss) plus each term × its weight; every term logged by name."""
        for name, weight, term in self.terms:
            value, extra = term(fw)
            total = total + weight * value
            logged |= {name: value.detach(), **extra}
        return LossOutput(total, logged)

    def bind(
        self,
        data: DomainData,
        cfg: Config,
        echo: Callable[[str], None] | None = None,
        bound: Sequence[Term] = (),
    ) -> None:
        """Each term's ``bind``, after ``Term.share`` with each term of ``bound`` (earlier stages' bound terms)."""
        for _, _, term in self.terms:
            for other in bound:
                term.share(other)
            term.bind(data, cfg, echo)

    def prepare(self, net: DomainAdaptNet) -> None:
        for _, _, term in self.terms:
            term.prepare(net)
        self.averaged.prepare(net)

    def refresh(self, net: DomainAdaptNet, target: AnyDomain, step: int, epoch_steps: int, batch_size: int) -> None:
        """Each term's ``refresh`` that is due before step ``step`` (``Term.refresh_due``)."""
        for _, _, term in self.terms:
            if term.refresh_due(step, epoch_steps):
                term.refresh(net, target, step, batch_size)

    def after_step(self, net: DomainAdaptNet) -> None:
        for _, _, term in self.terms:
            term.after_step(net)
        self.averaged.update(net)

    def eval_weights(self) -> dict[str, torch.Tensor] | None:
        """The first term's ``eval_weights`` (an EMA teacher), else the ``method.ema_eval`` average of the weights,
        else None: evaluate the trained weights."""
        own = next((w for _, _, term in self.terms if (w := term.eval_weights()) is not None), None)
        return own if own is not None else self.averaged.weights

    def state_dict(self) -> dict[str, Any]:
        """The terms' state across steps (tensors and plain data), by term name, and the ``method.ema_eval`` average
        under ``ema_eval``; empty for stateless methods."""
        state = {name: state for name, _, term in self.terms if (state := term.state_dict())}
        return state | ({"ema_eval": self.averaged.state_dict()} if self.averaged.weights is not None else {})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, _, term in self.terms:
            if name in state:
                term.load_state_dict(state[name])
        if "ema_eval" in state:
            self.averaged.load_state_dict(state["ema_eval"])

    def forward_rows(self, rows: int) -> int:
        """The fewest samples one training forward of the network sees when each domain's batch has ``rows``: both
        domains' in one forward by default (``joint_features``); one domain's when the method reads only one domain,
        when ``method.separate_forward`` forwards each domain alone, or when a term forwards the target batch again
        (FixMatch's strong view)."""
        one = not (self.uses_source and self.uses_target) or self.cfg.separate_forward
        one = one or any(term.forwards_target_alone for _, _, term in self.terms)
        return rows if one else 2 * rows

    def forward_note(self) -> str:
        """Why a training forward sees only one domain's rows (for messages); "" when it sees both."""
        if not self.uses_target:
            return f"method {self.cfg.name} forwards only the source batch"
        if not self.uses_source:
            return f"method {self.cfg.name} forwards only the target batch"
        if self.cfg.separate_forward:
            return "method.separate_forward=true forwards each domain alone"
        alone = [name for name, _, term in self.terms if term.forwards_target_alone]
        return f"{alone[0]} forwards the target batch alone" if alone else ""


class WeightAverage:
    """An exponential moving average of a network's weights, w ← m_t·w + (1 − m_t)·w_net after each optimizer step
    (floating-point parameters and buffers; integer buffers copied), as AdaMatch (EMA 0.999) and VADA (0.998)
    evaluate. m_t = min(m, 1 − 1/(t + 1)) at the t-th update (Tarvainen & Valpola's ramp, mean-teacher reference
    code), so a short run's average is not dominated by the initial weights. ``weights`` is None while the momentum
    ``m`` is 0 or before ``prepare``; ``state_dict`` holds the weights and the update count, for an exact resume."""

    def __init__(self, momentum: float) -> None:
        self.momentum = momentum
        self.weights: dict[str, torch.Tensor] | None = None
        self.updates = 0

    def prepare(self, net: nn.Module) -> None:
        if self.momentum > 0 and self.weights is None:
            self.weights = {k: v.detach().clone() for k, v in net.state_dict().items()}

    def update(self, net: nn.Module) -> None:
        if self.weights is None:
            return
        self.updates += 1
        momentum = min(self.momentum, 1 - 1 / (self.updates + 1))
        with torch.no_grad():
            for k, v in net.state_dict().items():
                if v.is_floating_point():
                    self.weights[k].lerp_(v, 1 - momentum)
                else:
                    self.weights[k].copy_(v)

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights, "updates": self.updates} if self.weights is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("weights") is not None:
            self.weights = {k: v.clone() for k, v in state["weights"].items()}
            self.updates = int(state.get("updates", 0))


def keeps_fp32(method: Any) -> bool:
    """Whether ``train.precision: auto`` keeps ``method`` (a ``Method`` or a stage's ``StageLoss``) in fp32: a method
    not measured in bf16 yet, or an adversarial branch (bf16 failed the accuracy rule for cdan_e, docs/speed.md)
    except where it passed: DANN (``adversarial_bf16``) alone, with its binary discriminator, outside stages."""
    inner = getattr(method, "inner", method)
    if not getattr(inner, "auto_bf16", True):
        return True
    if not method.uses_discriminator:
        return False
    measured = getattr(inner, "adversarial_bf16", False) and method is inner
    return not (measured and not inner.cfg.regularizers and inner.cfg.domain_discriminator == "binary")


def weighted_mean(loss: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of per-sample losses (N,), or their weighted mean ``sum(w * l) / sum(w)`` when weights are given."""
    if weight is None:
        return loss.mean()
    return (loss * weight).sum() / weight.sum().clamp_min(torch.finfo(loss.dtype).tiny)


def classification_loss(
    logits_s: torch.Tensor, y_s: torch.Tensor, w_s: torch.Tensor | None, label_smoothing: float
) -> torch.Tensor:
    """Cross-entropy with label smoothing, per sample (``reduction="none"``), then ``weighted_mean``."""
    per_sample = F.cross_entropy(logits_s, y_s, reduction="none", label_smoothing=label_smoothing)
    return weighted_mean(per_sample, w_s)


def joint_features(net: DomainAdaptNet, batch: Batch, separate: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(f_s, f_t). By default one forward over ``cat(x_s, x_t)``: BatchNorm layers then normalize with statistics
    of the mixed batch. ``separate=True`` runs two forwards (the seed's variant): each domain is normalized with its
    own statistics, and the running statistics end up dominated by the target batch, which runs last."""
    if separate:
        return net.forward_features(batch.x_s), net.forward_features(batch.x_t)
    f = net.forward_features(torch.cat([batch.x_s, batch.x_t]))
    return f[: len(batch.x_s)], f[len(batch.x_s) :]


def grl_coeff(cfg: MethodConfig, progress: float, steps: int = 0) -> float:
    """The GRL coefficient at ``progress`` of a run of ``steps`` steps, per ``method.grl_schedule``
    (``dann.training.schedules``), peaking at ``method.grl_hi``. With ``method.grl_horizon`` = H > 0 the schedule
    spans the first H steps, then holds its last value (TLlib's ``WarmStartGradientReverseLayer(alpha=1,
    max_iters=N)`` is the sigmoid with γ = 10 over H = 10 N steps)."""
    horizon = cfg.grl_horizon or 0
    if horizon and steps:
        progress = min(1.0, progress * steps / horizon)
    hi = 1.0 if cfg.grl_hi is None else cfg.grl_hi
    return GRL_SCHEDULES.get(cfg.grl_schedule)(progress, cfg.grl_lo, hi, cfg.grl_gamma)


def term_options() -> set[str]:
    """The method.* keys some term reads (``Term.options`` of every method's term and every regularizer)."""
    terms = [METHODS.get(n).term for n in METHODS.names()] + [REGULARIZERS.get(n) for n in REGULARIZERS.names()]
    return {k for t in terms if t is not None for k in t.options}


def warn_unused_options(cfg: MethodConfig, read: set[str], who: str, verb: str = "does not read") -> None:
    """Name in one warning the method.* keys of ``cfg`` that only other terms read (not in ``read``), set away from
    their defaults: the run would otherwise record a setting that had no effect. ``who`` and ``verb`` start the
    sentence ("method 'dann'" "does not read", "the stages of this run" "do not read")."""
    given, defaults = method_defaults(cfg), method_defaults(MethodConfig(name=cfg.name))  # null keys as resolved
    unused = sorted({k for k in term_options() - read if getattr(given, k) != getattr(defaults, k)})
    if unused:
        warnings.warn(
            f"{who} {verb} {', '.join(f'method.{k}' for k in unused)}: those settings have no effect on this run",
            DataWarning,
            stacklevel=3,
        )


def target_ratio(cfg: MethodConfig) -> int:
    """Target rows per source row of each step's batch: ``method.uratio`` when the method's term or one of its
    regularizers reads it (AdaMatch's target term: the reference trains 3 target images per source image), else 1.
    The trainer draws ``train.batch_size × target_ratio`` target samples per step (``dann.training.trainer``)."""
    terms = [METHODS.get(cfg.name).term, *(REGULARIZERS.get(name) for name in cfg.regularizers)]
    return cfg.uratio if any(term is not None and "uratio" in term.options for term in terms) else 1


# What the method.* keys left null (auto) resolve to, unless the method's ``defaults`` say otherwise.
METHOD_DEFAULTS: dict[str, Any] = {
    "lambda_adv": 1.0,
    "grl_hi": 1.0,
    "grl_horizon": 0,
    "ema_eval": 0.0,
    "unlabeled_warmup": 0.5,  # AdaMatch's, for its target term wherever it runs (method or regularizer)
    "label_smoothing": 0.1,
    "distribution_alignment": True,  # AdaMatch's, wherever its target term runs
}


def method_defaults(cfg: MethodConfig) -> MethodConfig:
    """``cfg`` with every method.* key left null set to the method's reference default (its class's ``defaults``,
    else ``METHOD_DEFAULTS``); a concrete method name (``recommended`` is resolved by the run's plan, ``dann.plan``).
    Runs record the result, so a run keeps meaning what it trained. Raises ``ConfigError`` for an unknown method
    name."""
    own = {**METHOD_DEFAULTS, **METHODS.get(cfg.name).defaults}
    unset = {k: v for k, v in own.items() if getattr(cfg, k) is None}
    return dataclasses.replace(cfg, **unset) if unset else cfg


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Row entropies (N,) of probabilities (N, K), in nats, with 0 log 0 = 0."""
    return -(p * p.clamp_min(1e-12).log()).sum(-1)


@contextlib.contextmanager
def evaluated_with(net: nn.Module, weights: dict[str, torch.Tensor] | None) -> Iterator[None]:
    """Within the block ``net`` holds ``weights`` (a method's EMA teacher: ``Method.eval_weights``); its own weights
    come back after it, untouched. None: nothing changes."""
    if weights is None:
        yield
        return
    own = {k: v.detach().clone() for k, v in net.state_dict().items()}
    net.load_state_dict(weights)
    try:
        yield
    finally:
        net.load_state_dict(own)


@contextlib.contextmanager
def frozen_batchnorm_statistics(net: nn.Module) -> Iterator[None]:
    """BatchNorm layers still normalize with the batch's statistics (in train mode) but leave their running
    statistics as they are: for an extra forward pass (a strongly augmented view) that must not shift what
    evaluation normalizes with."""
    layers = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    names = ("running_mean", "running_var", "num_batches_tracked")
    saved = [[getattr(m, name) for name in names] for m in layers]
    for m, buffers in zip(layers, saved, strict=True):  # the forward updates copies (autograd may keep them)...
        for name, buffer in zip(names, buffers, strict=True):
            setattr(m, name, buffer.clone())
    try:
        yield
    finally:  # ...and the layers get their own tensors back, untouched (never written in place: autograd saw them)
        for m, buffers in zip(layers, saved, strict=True):
            for name, buffer in zip(names, buffers, strict=True):
                setattr(m, name, buffer)


class FeatureDistance(Term):
    """A term that is a distance between the source and target features (MMD, CORAL): ``distance(f_s, f_t)``."""

    @staticmethod
    def distance(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, fw: Forward) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        return self.distance(fw.f_s, fw.f_t), {}


def create_method(cfg: MethodConfig) -> Method:
    """The method ``cfg.name`` names (one of ``METHODS``: ``dann.create_method`` also takes ``recommended``, the
    recommended recipe), its null keys set to the method's reference defaults (``method_defaults``)."""
    cfg = method_defaults(cfg)
    return METHODS.get(cfg.name)(cfg)


def build_network(
    model: ModelConfig, method: MethodConfig, input_shape: tuple[int, ...], num_classes: int, num_domains: int = 2
) -> DomainAdaptNet:
    """The network ``method`` trains: ``create_network`` of ``model`` (resolved: ``dann.plan.network_model``) with
    the discriminator its term reads (CDAN's reads the multilinear map of features and predictions, MDD's is an
    auxiliary classifier). ``num_domains``: the labeled domains and the target (``method.domain_discriminator=
    multiclass`` tells them all apart)."""
    from ..models.network import create_network

    term = METHODS.get(method.name).term or Term

    def discriminator(num_features: int) -> nn.Module:
        return term.discriminator(model, method, num_features, num_classes, num_domains)

    return create_network(model, input_shape, num_classes, discriminator)
