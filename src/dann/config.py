"""Configuration: frozen, typed, nested dataclasses. Defaults → YAML file → ``--set a.b=value`` overrides.

Every value is checked against its field's type and range; an unknown key fails naming it and the valid keys.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .training.cadence import eval_interval, log_interval
from .training.schedules import GRL_SCHEDULES, LR_SCHEDULES
from .training.stage_config import StageConfig, stage_label, stage_steps

SEED_LIMIT = 2**28  # seeds are scaled and offset (data streams, embedded tasks); this keeps them in every RNG's range
ON_NONFINITE = ("error", "skip")  # see dann.training.nonfinite
OPTIMIZERS = ("sgd", "adam", "adamw")
CACHE_MODES = ("auto", "on", "off")  # data.cache, see dann.data.cache
SWITCHES = frozenset({"data.cache"})  # string options whose bare on / off YAML 1.1 reads as true / false
AUTO = "auto"  # train.eval_every and train.log_every: resolved from train.steps by resolve_intervals
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # see dann.training.precision; auto resolves to bf16 or fp32
DOMAIN_DISCRIMINATORS = ("binary", "multiclass")  # see dann.methods.dann
IW_CLS = ("balanced", "iw", "none")  # method.iw_cls, see dann.methods.iw
INPUT_NORMS = ("none", "per_image")  # model.input_norm, see dann.models.network
BOTTLENECK_KINDS = ("bn_relu", "bn_dropout")  # model.bottleneck_kind, see dann.models.heads.Bottleneck
NAMED_SOURCE = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_.-]*)=(.+)$")  # a data.source item name=path


RECOMMENDED = "recommended"  # method.name of the recommended recipe, resolved by resolve_method
# The fixed recipe behind method.name=recommended where the default does not select (train.stages): no fixed recipe
# qualified by the rules of benchmarks/suite.py, so it is source-only. "why": what `dann train` prints and the report
# opens with when a run trains it because no method was named.
RECIPE: dict[str, Any] = {
    "name": "source_only",
    "regularizers": {},
    "why": "with train.stages the default does not select among methods (each stage names its own): the run-level "
    "method is source-only; name one with --method to adapt",
}
# The selecting default (benchmarks/suite.py, dann.selection.default): no fixed recipe qualified, so with no method
# named the source-only control and these candidates train on the user's data and the rule of dann.selection.choice
# keeps one (the control when no candidate beats it). Each candidate: the method.* keys it sets. "relative_cost": a
# candidate's time per step over source-only's (benchmarks/methods.py --timing-only, digits), for the plan line.
SELECTION: dict[str, Any] = {
    "candidates": {
        "adamatch_noda": {"name": "adamatch", "distribution_alignment": False},
        "iwdan": {"name": "iwdan"},
    },
    "validator": "class_ami",
    "guard": 1.0,
    "relative_cost": {"adamatch_noda": 6.0, "iwdan": 1.2},
}
RECIPE_FILE = "default.json"  # in a run trained by the default: the recipe and why (written by dann.fit)
CONTROL_METHOD = "source_only"  # the method of a run's source-only control (dann train --control)


def _require(ok: bool, key: str, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {rule}, got {value!r}")


def _require_seed(key: str, value: int) -> None:
    _require(0 <= value < SEED_LIMIT, key, f"in [0, {SEED_LIMIT})", value)


@dataclass(frozen=True)
class DataConfig:
    task: str = ""  # embedded task (see dann.data.TASKS: moons, digits...), used when `source` is empty
    source: str | tuple[str, ...] | dict[str, str] = ""  # labeled data (.npz, folder, list); several: list or mapping
    intermediate: str | tuple[str, ...] = ()  # labeled domain(s) nearest the target, by name (see train.stages)
    target: str = ""  # unlabeled target data (.npz, folder, list); labels in it are used for evaluation only
    target_eval: str = ""  # labeled target data, for evaluation only (default: `target`, if it has labels)
    root: str = ""  # folder that relative source/target/target_eval paths are resolved against
    dataset: str = ""  # a benchmark of dann.data.catalog (office31, ...): check its folders and image counts
    val_fraction: float = 0.1  # share of the source held out for validation
    target_val_fraction: float = 0.0  # share of the unlabeled target held out of training, read by the validators only
    seed: int = 0  # builds the embedded task and the source split
    augment: bool = True  # training augmentation: array shifts (side // 14 px); crop, flips, jitter below (files)
    image_size: int = 0  # image files: side of the square network input; 0: the backbone's (runs record the size used)
    crop_scale: tuple[float, ...] = (0.5, 1.0)  # image files: random resized crop, range of the area kept
    hflip: float = 0.5  # image files: probability of a horizontal flip
    vflip: float = 0.0  # image files: probability of a vertical flip (plankton, micrographs: no up or down)
    color_jitter: float = 0.0  # image files: brightness, contrast and saturation jitter strength; 0: none
    invert: float = 0.0  # images (files and arrays): probability of inverting a training image's intensities
    balance_classes: bool = False  # source batches draw a class uniformly, then one of its images
    skip_bad_images: bool = False  # unreadable image files are skipped and counted instead of stopping the run
    num_workers: int | None = None  # image files: workers per DataLoader; None: CPUs shared by loaders, at most 8
    pin_memory: bool = True  # image files: page-locked batches for faster copies to a GPU
    persistent_workers: bool = False  # image files: evaluation loaders keep workers, which prefetch the next pass
    cache: str = "auto"  # image files: decoded-image cache, auto | on | off (auto: on for files much larger than it)
    cache_dir: str = ""  # folder of the decoded-image caches; "": $DANN_CACHE, else ~/.cache/dann

    def __post_init__(self) -> None:
        if isinstance(self.intermediate, str):  # one name, as --set data.intermediate=mid gives it
            object.__setattr__(self, "intermediate", (self.intermediate,) if self.intermediate else ())
        _require(0.0 <= self.val_fraction < 1.0, "data.val_fraction", "in [0, 1)", self.val_fraction)
        _require(
            0.0 <= self.target_val_fraction < 1.0, "data.target_val_fraction", "in [0, 1)", self.target_val_fraction
        )
        _require_seed("data.seed", self.seed)
        _require(self.image_size >= 0, "data.image_size", ">= 0", self.image_size)
        scale = self.crop_scale
        _require(len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1, "data.crop_scale", "[lo, hi] in (0, 1]", scale)
        for key in ("hflip", "vflip", "invert"):
            _require(0.0 <= getattr(self, key) <= 1.0, f"data.{key}", "a probability in [0, 1]", getattr(self, key))
        _require(self.color_jitter >= 0, "data.color_jitter", ">= 0", self.color_jitter)
        _require(self.num_workers is None or self.num_workers >= 0, "data.num_workers", ">= 0", self.num_workers)
        if isinstance(self.cache, bool):  # YAML 1.1 reads a bare on / off (or yes / no, true / false) as a boolean
            object.__setattr__(self, "cache", "on" if self.cache else "off")
        _require(self.cache in CACHE_MODES, "data.cache", " | ".join(CACHE_MODES), self.cache)


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "auto"  # auto (lenet_conv for images, mlp for vectors) | lenet | lenet_conv | mlp | a timm model
    pretrained: bool = False  # timm's own weights (needs internet)
    pretrained_file: str = ""  # local .safetensors/.pth weights for a timm backbone (the offline path)
    mlp_dims: tuple[int, ...] = (100, 100)  # hidden widths of the `mlp` backbone
    batchnorm: bool = False  # BatchNorm in the `lenet` / `mlp` backbones (the paper has none)
    bottleneck_dim: int | None = None  # linear + BN + ReLU before both heads; None: 256 for timm backbones, else none
    bottleneck_kind: str | None = None  # bn_relu | bn_dropout (Linear-BN-Dropout(0.5), SHOT's); None: bn_relu
    weight_norm: bool | None = None  # the label head's last Linear weight-normalized (SHOT's classifier); None: off
    head_dims: tuple[int, ...] | None = None  # hidden widths of the label head; []: one linear layer; null: auto
    discriminator_dims: tuple[int, ...] = (100,)  # hidden widths of the domain discriminator MLP
    dropout: float = 0.0  # in the discriminator's hidden layers
    discriminator_slope: float = 0.0  # LeakyReLU negative slope in the discriminator's hidden layers; 0: ReLU
    head_norm: bool = False  # label head ends BatchNorm1d + LayerNorm + bias-free Linear (normalized features)
    freeze_bn: bool = False  # every BatchNorm in eval mode while training: running statistics frozen, affine trained
    input_norm: str = "none"  # none | per_image: each input image standardised by its own mean and std, in the network
    adabn: bool = False  # evaluate and predict with BatchNorm statistics recomputed on the target (AdaBN)
    init_from: str = ""  # a run directory whose last.pt starts the network (needed by method `shot`)

    def __post_init__(self) -> None:
        dim = self.bottleneck_dim
        _require(dim is None or dim >= 0, "model.bottleneck_dim", ">= 0 (0: none) or null (auto)", dim)
        for key in ("mlp_dims", "head_dims", "discriminator_dims"):
            _require(
                all(d > 0 for d in getattr(self, key) or ()), f"model.{key}", "positive widths", getattr(self, key)
            )
        _require(0.0 <= self.dropout < 1.0, "model.dropout", "in [0, 1)", self.dropout)
        _require(self.input_norm in INPUT_NORMS, "model.input_norm", " | ".join(INPUT_NORMS), self.input_norm)
        kind = self.bottleneck_kind
        _require(kind is None or kind in BOTTLENECK_KINDS, "model.bottleneck_kind", " | ".join(BOTTLENECK_KINDS), kind)
        slope = self.discriminator_slope
        _require(0.0 <= slope < 1.0, "model.discriminator_slope", "in [0, 1) (0: ReLU)", slope)


@dataclass(frozen=True)
class MethodConfig:
    name: str = "recommended"  # the recommended recipe (RECIPE), or a name of `dann.methods.METHODS`
    # null: the method's own reference default (dann.methods.METHOD_DEFAULTS, docs/methods/index.md); runs record it
    lambda_adv: float | None = None  # weight of the method's transfer term (adversarial, MMD, CORAL, MCC...); null: 1
    grl_schedule: str = "ganin"  # ganin | warm | constant (the GRL coefficient over progress)
    grl_lo: float = 0.0  # start of the `warm` schedule
    grl_hi: float | None = None  # peak GRL coefficient; null: the method's (mdd 0.1, vada 0.01, else 1)
    grl_horizon: int | None = None  # steps the GRL schedule spans, then holds; 0: the whole run; null: the method's
    grl_gamma: float = 10.0  # steepness of the paper's sigmoid schedule
    label_smoothing: float | None = None  # of the source cross-entropy; null: 0.1, 0 for mean_teacher (its reference)
    separate_forward: bool = False  # seed variant: two forward passes (per-domain BatchNorm statistics)
    domain_discriminator: str = (
        "binary"  # dann: binary (labeled vs target) | multiclass (which labeled domain or target)
    )
    regularizers: dict[str, float] = field(default_factory=dict)  # target terms added to any method, with weights
    cdan_max_dim: int = 4096  # cdan: features x classes above this use the randomized multilinear map (1024 wide)
    mdd_margin: float = 4.0  # mdd: margin gamma of the disparity discrepancy
    mcc_temperature: float = 2.5  # mcc: temperature T of the target probabilities
    fixmatch_threshold: float = 0.9  # fixmatch: pseudo-label kept when confidence > this x mean source confidence
    ema_teacher: float = 0.0  # fixmatch: momentum of a teacher that gives the pseudo-labels; 0: the model itself
    distribution_alignment: bool | None = None  # adamatch: pseudo-labels × p̄_s / p̄_t; null: on
    logit_interpolation: bool = True  # adamatch: source logits between the joint and a source-only forward
    unlabeled_warmup: float | None = None  # adamatch/fixmatch: share of the run its weight ramps 0 → 1; null: 0.5
    uratio: int = 1  # adamatch/fixmatch: target rows per source row of each step's batch (the reference: 3)
    ema_eval: float | None = None  # any method: evaluate and predict with an EMA of the weights, this momentum; 0: off
    shot_beta: float = 0.1  # shot: weight of the clustered pseudo-label cross-entropy (0.1 digits, 0.3 objects)
    teacher_momentum: float = 0.99  # mean_teacher: EMA momentum of the teacher's parameters
    teacher_threshold: float = 0.968  # mean_teacher: consistency counted where the teacher's max probability > this
    class_balance: float = 0.0  # mean_teacher: weight of the class-balance loss (0.005 in the paper when on)
    intensity_augment: bool = True  # mean_teacher: image views also get a random intensity flip, scale and offset
    vat_radius: float = 3.5  # vada and the vat regularizer: norm of the virtual adversarial perturbation per sample
    vada_source_vat: float = 1.0  # vada: weight lambda_s of VAT on the source batch
    vada_target: float = 0.01  # vada: weight lambda_t of the target entropy + VAT on the target batch
    iw_every: int = 50  # iwdan, iwcdan: steps between re-estimates of the class weights from the steps' predictions
    iw_warmup: float = 0.02  # iwdan, iwcdan: share of the run before the weighted adversarial term starts
    iw_ma: float = 0.5  # iwdan, iwcdan: weight of the previous class weights in each re-estimate's moving average
    iw_cls: str = "balanced"  # iwdan, iwcdan: source CE weights: balanced (w[y] / p_s[y], the reference) | iw | none
    clip_model: str = "ViT-B-16"  # clip_distill: the teacher's OpenCLIP architecture, or a model config .json file
    clip_file: str = ""  # clip_distill: the teacher's OpenCLIP checkpoint file; "": random weights (tests only)
    clip_templates: tuple[str, ...] = ()  # clip_distill: prompts, each with {} for the class name; (): dann.clip's

    def __post_init__(self) -> None:
        _require(self.lambda_adv is None or self.lambda_adv >= 0, "method.lambda_adv", ">= 0", self.lambda_adv)
        _require(self.grl_hi is None or self.grl_hi >= 0, "method.grl_hi", ">= 0", self.grl_hi)
        horizon = self.grl_horizon
        _require(horizon is None or horizon >= 0, "method.grl_horizon", ">= 0 (0: the whole run)", horizon)
        for name, weight in self.regularizers.items():
            _require(weight >= 0, f"method.regularizers.{name}", ">= 0", weight)
        _require(self.cdan_max_dim > 0, "method.cdan_max_dim", "> 0", self.cdan_max_dim)
        _require(self.mdd_margin > 0, "method.mdd_margin", "> 0", self.mdd_margin)
        _require(self.mcc_temperature > 0, "method.mcc_temperature", "> 0", self.mcc_temperature)
        _require(
            0.0 <= self.fixmatch_threshold <= 1.0, "method.fixmatch_threshold", "in [0, 1]", self.fixmatch_threshold
        )
        _require(0.0 <= self.ema_teacher < 1.0, "method.ema_teacher", "in [0, 1)", self.ema_teacher)
        warm = self.unlabeled_warmup
        _require(warm is None or 0.0 <= warm <= 1.0, "method.unlabeled_warmup", "in [0, 1] (0: none)", warm)
        _require(isinstance(self.uratio, int) and self.uratio >= 1, "method.uratio", "an integer >= 1", self.uratio)
        ema = self.ema_eval
        _require(ema is None or 0.0 <= ema < 1.0, "method.ema_eval", "in [0, 1) (0: off)", ema)
        _require(self.shot_beta >= 0, "method.shot_beta", ">= 0", self.shot_beta)
        momentum, threshold = self.teacher_momentum, self.teacher_threshold
        _require(0.0 <= momentum < 1.0, "method.teacher_momentum", "in [0, 1)", momentum)
        _require(0.0 <= threshold <= 1.0, "method.teacher_threshold", "in [0, 1]", threshold)
        _require(self.class_balance >= 0, "method.class_balance", ">= 0", self.class_balance)
        _require(self.vat_radius > 0, "method.vat_radius", "> 0", self.vat_radius)
        _require(self.vada_source_vat >= 0, "method.vada_source_vat", ">= 0", self.vada_source_vat)
        _require(self.vada_target >= 0, "method.vada_target", ">= 0", self.vada_target)
        _require(self.iw_every > 0, "method.iw_every", "> 0", self.iw_every)
        _require(0.0 <= self.iw_warmup <= 1.0, "method.iw_warmup", "in [0, 1] (0: none)", self.iw_warmup)
        _require(0.0 <= self.iw_ma < 1.0, "method.iw_ma", "in [0, 1) (0: no averaging)", self.iw_ma)
        _require(self.iw_cls in IW_CLS, "method.iw_cls", " | ".join(IW_CLS), self.iw_cls)
        for template in self.clip_templates:
            _require(template.count("{}") == 1, "method.clip_templates", "prompts with one {} each", template)
        kinds = DOMAIN_DISCRIMINATORS
        _require(
            self.domain_discriminator in kinds,
            "method.domain_discriminator",
            " | ".join(kinds),
            self.domain_discriminator,
        )
        _require(self.grl_gamma >= 0, "method.grl_gamma", ">= 0", self.grl_gamma)
        GRL_SCHEDULES.get(self.grl_schedule)  # an unknown name lists the valid ones
        eps = self.label_smoothing
        _require(eps is None or 0.0 <= eps < 1.0, "method.label_smoothing", "in [0, 1)", eps)


@dataclass(frozen=True)
class OptimConfig:
    name: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.01  # mu_0
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = False
    weight_decay: float = 5e-4
    backbone_lr_mult: float | None = None  # None: 0.1 for pretrained backbones, 1.0 otherwise
    discriminator_lr_mult: float = 1.0  # the discriminator's learning rate, as a multiple of optim.lr's schedule
    lr_schedule: str = "ganin"  # ganin | constant | cosine
    lr_alpha: float = 10.0
    lr_beta: float = 0.75
    grad_clip: float = 0.0  # max global gradient norm; 0 disables

    def __post_init__(self) -> None:
        _require(self.name in OPTIMIZERS, "optim.name", " | ".join(OPTIMIZERS), self.name)
        LR_SCHEDULES.get(self.lr_schedule)  # an unknown name lists the valid ones
        _require(self.lr > 0, "optim.lr", "> 0", self.lr)
        _require(0.0 <= self.momentum < 1.0, "optim.momentum", "in [0, 1)", self.momentum)
        _require(self.weight_decay >= 0, "optim.weight_decay", ">= 0", self.weight_decay)
        _require(
            self.backbone_lr_mult is None or self.backbone_lr_mult >= 0,
            "optim.backbone_lr_mult",
            ">= 0",
            self.backbone_lr_mult,
        )
        _require(self.grad_clip >= 0, "optim.grad_clip", ">= 0", self.grad_clip)
        mult = self.discriminator_lr_mult
        _require(mult >= 0, "optim.discriminator_lr_mult", ">= 0", mult)
        _require(self.lr_alpha >= 0, "optim.lr_alpha", ">= 0", self.lr_alpha)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000
    batch_size: int = 64  # per domain and step, global: torchrun processes split it
    eval_every: int | str = "auto"  # steps between evaluations; auto: about 20 per run (dann.training.cadence)
    log_every: int | str = "auto"  # steps between log steps (train.jsonl, host syncs); auto: about 100 per run
    threads: int | str = "auto"  # torch CPU threads; auto: 1 for small backbones, else free cores; 0: torch's own
    eval_batch_size: int = 512
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps (torchrun: process r uses cuda:LOCAL_RANK)
    progress: bool = True  # tqdm bar
    on_nonfinite: str = "error"  # error: stop, naming the step | skip: discard that step's update and count it
    tensorboard: bool = True  # also write TensorBoard events to <run>/tensorboard when the package is installed
    precision: str = "auto"  # auto (bf16: images, native bf16, no adversarial term; else fp32) | fp32 | bf16 | fp16
    accumulate: int = 1  # micro-batches of batch_size per domain averaged into each optimizer step
    channels_last: bool | None = None  # model and image batches in NHWC; null (auto): on for images in bf16/fp16
    compile: bool = False  # torch.compile the backbone (first steps are slow while it compiles)
    stages: tuple[StageConfig, ...] = ()  # train in stages, one after another (see dann.training.stages); (): one

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "eval_batch_size", "accumulate"):
            _require(getattr(self, key) > 0, f"train.{key}", "> 0", getattr(self, key))
        for key in ("eval_every", "log_every"):
            value = getattr(self, key)
            ok = value == AUTO or (isinstance(value, int) and value > 0)
            _require(ok, f"train.{key}", "an integer > 0 or auto", value)
        ok = self.threads == AUTO or (isinstance(self.threads, int) and self.threads >= 0)
        _require(ok, "train.threads", "an integer >= 0 (0: torch's own setting) or auto", self.threads)
        if self.stages:
            stage_steps(self.stages, self.steps)  # they must add up to train.steps
        _require_seed("train.seed", self.seed)
        _require(self.on_nonfinite in ON_NONFINITE, "train.on_nonfinite", " or ".join(ON_NONFINITE), self.on_nonfinite)
        _require(self.precision in PRECISIONS, "train.precision", " | ".join(PRECISIONS), self.precision)


@dataclass(frozen=True)
class SelectionConfig:
    validator: str = "bnm"  # picks checkpoints/best.pt without target labels; see dann.selection.validators
    max_samples: int = 2000  # per domain, scored by the validators at each evaluation (a fixed random subset)

    def __post_init__(self) -> None:
        _require(self.max_samples > 0, "selection.max_samples", "> 0", self.max_samples)


@dataclass(frozen=True)
class Config:
    """A whole run's settings, frozen: one section per dataclass (``data``, ``model``, ``method``, ``optim``,
    ``train``, ``selection``). Built by ``load_config`` (defaults, then a YAML file or preset, then ``key=value``
    overrides) and changed with ``replace``; every key is listed in ``configs/defaults.yaml``. Raises
    ``ConfigError`` on an unknown key or a value of the wrong type or range."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)

    def __post_init__(self) -> None:
        for i in range(len(self.train.stages)):  # each stage's method and schedule, over the run's, checked now
            stage_sections(self, i)

    def to_dict(self) -> dict[str, Any]:
        return {s.name: _plain(dataclasses.asdict(getattr(self, s.name))) for s in dataclasses.fields(self)}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def stage_sections(cfg: Config, index: int) -> tuple[MethodConfig, OptimConfig]:
    """The method and optimizer sections of stage ``index`` of ``train.stages``: the run's, with the stage's ``method``
    and ``optim`` keys over them (type-checked, then range-checked). Raises ``ConfigError`` naming the stage."""
    stage = cfg.train.stages[index]
    where = f"train.stages[{index}] ({stage_label(index, stage)})"
    sections = []
    for cls, base, keys in ((MethodConfig, cfg.method, stage.method), (OptimConfig, cfg.optim, stage.optim)):
        hints = typing.get_type_hints(cls)
        section = "method" if cls is MethodConfig else "optim"
        unknown = sorted(set(keys) - set(hints))
        if unknown:
            raise ConfigError(f"{where}: unknown key {section}.{unknown[0]}; valid keys: {', '.join(hints)}")
        typed = {k: _coerce(f"{where}.{section}.{k}", hints[k], v) for k, v in keys.items()}
        try:
            sections.append(dataclasses.replace(base, **typed))
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    return sections[0], sections[1]


def resolve_method(cfg: MethodConfig) -> MethodConfig:
    """``method.name: recommended`` → the recommended recipe's method, its regularizers added to any given ones and
    its ``options`` set where the method.* key is left null (a value given explicitly wins); any other method
    unchanged. Runs save the resolved config, so they keep meaning what they trained."""
    if cfg.name != RECOMMENDED:
        return cfg
    if cfg.regularizers and RECIPE["name"] == "source_only":
        raise ConfigError(
            f"method.regularizers {dict(cfg.regularizers)} need a named method that reads the target batch (the "
            "default trains its candidates without them): name one, e.g. method.name=dann"
        )
    regularizers = {**RECIPE["regularizers"], **cfg.regularizers}
    options = {k: v for k, v in RECIPE.get("options", {}).items() if getattr(cfg, k) is None}  # given ones win
    return dataclasses.replace(cfg, name=RECIPE["name"], regularizers=regularizers, **options)


def resolve_intervals(cfg: Config) -> Config:
    """``train.eval_every`` and ``train.log_every`` ``auto`` → the intervals for ``train.steps``
    (``training.cadence``); intervals given as numbers are kept. Runs save the resolved config, so a run, its
    start-up summary and its resume use the same steps."""
    t = cfg.train
    eval_every = eval_interval(t.steps) if t.eval_every == AUTO else t.eval_every
    log_every = log_interval(t.steps, eval_every) if t.log_every == AUTO else t.log_every
    return dataclasses.replace(cfg, train=dataclasses.replace(t, eval_every=eval_every, log_every=log_every))


def absolute_paths(cfg: Config) -> Config:
    """Every file or folder path of ``cfg`` made absolute and normal (``~`` expanded, relative paths joined to the
    working directory, ``..`` and ``.`` folded: ``os.path.abspath``): ``data.root`` (else ``data.source``, its
    ``name=path`` entries and mapping values, ``data.target``, ``data.target_eval``), ``data.cache_dir``,
    ``model.pretrained_file``, ``model.init_from``, ``method.clip_file`` and a ``.json`` ``method.clip_model``, also
    where a stage of ``train.stages`` sets them. ``dann.fit`` reads its data so and a run records its config so:
    ``dann train --config <run>/config.yaml`` or a resume from another folder reads the same files, and two spellings
    of one path compare equal. Paths under ``data.root`` stay relative to it; "" stays ""."""

    def path(p: str) -> str:
        return os.path.abspath(os.path.expanduser(p)) if p else p

    def entry(item: str) -> str:  # a data.source item: path or name=path (dann.data.sources)
        named = NAMED_SOURCE.match(item)
        return f"{named.group(1)}={path(named.group(2))}" if named else path(item)

    def sources(s: str | tuple[str, ...] | dict[str, str]) -> Any:
        if isinstance(s, dict):
            return {name: path(p) for name, p in s.items()}
        return entry(s) if isinstance(s, str) else tuple(entry(item) for item in s)

    def clip(keys: dict[str, Any]) -> dict[str, Any]:
        out = {k: path(keys[k]) for k in ("clip_file",) if isinstance(keys.get(k), str)}
        model = keys.get("clip_model")
        if isinstance(model, str) and model.endswith(".json"):
            out["clip_model"] = path(model)
        return out

    d = cfg.data
    data = {"cache_dir": path(d.cache_dir)}
    if d.root:
        data["root"] = path(d.root)
    else:
        data |= {"source": sources(d.source), "target": path(d.target), "target_eval": path(d.target_eval)}
    model = {"pretrained_file": path(cfg.model.pretrained_file), "init_from": path(cfg.model.init_from)}
    method = clip(dataclasses.asdict(cfg.method))
    stages = tuple(dataclasses.replace(s, method={**s.method, **clip(s.method)}) for s in cfg.train.stages)
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(d, **data),
        model=dataclasses.replace(cfg.model, **model),
        method=dataclasses.replace(cfg.method, **method),
        train=dataclasses.replace(cfg.train, stages=stages),
    )


# What a resumed run may change: settings that alter neither the network, nor the data it trains on, nor its schedule.
RESUMABLE = (
    "train.threads",  # the float sums' order, not the model or its schedule (a resume on another machine)
    "model.adabn",  # evaluation only: what the run evaluates and predicts with, not what it trains
    "data.skip_bad_images",
    "data.num_workers",
    "data.pin_memory",
    "data.persistent_workers",
    "train.eval_every",
    "train.log_every",
    "train.eval_batch_size",
    "train.progress",
    "train.tensorboard",
    "train.device",
    "train.on_nonfinite",
    "data.cache",
    "data.cache_dir",
)
# Values that ask for the automatic choice: a run records what they resolved to, and they match that on resume.
AUTOMATIC = {
    "model.backbone": "auto",
    "model.head_dims": None,
    "model.bottleneck_dim": None,
    "model.bottleneck_kind": None,
    "model.weight_norm": None,
    "method.lambda_adv": None,
    "method.grl_hi": None,
    "method.grl_horizon": None,
    "method.ema_eval": None,
    "method.unlabeled_warmup": None,
    "method.label_smoothing": None,
    "method.distribution_alignment": None,
    "data.image_size": 0,
    "train.precision": "auto",
    "train.channels_last": None,
    "train.eval_every": AUTO,
    "train.log_every": AUTO,
    "train.threads": AUTO,
}


def resume_config(saved: Config, given: Config, run: str) -> Config:
    """The config a run resumed with new options continues with: ``saved`` (its config.yaml) with the ``RESUMABLE``
    settings of ``given``. Any other setting whose value differs (an ``AUTOMATIC`` value matches what the run resolved
    it to; ``dann.plan.resumed_config`` resolves ``recommended`` first) would change the model or its schedule: a
    ``ConfigError`` names each, with the saved and the given value."""
    old, new = saved.to_dict(), given.to_dict()
    taken: dict[str, dict[str, Any]] = {}
    refused = []
    for section, values in new.items():
        for key, value in values.items():
            name, before = f"{section}.{key}", old[section][key]
            if value == before or (name in AUTOMATIC and value == AUTOMATIC[name]):
                continue
            if name in RESUMABLE:
                taken.setdefault(section, {})[key] = value
            else:
                refused.append(f"{name} (saved {before!r}, given {value!r})")
    if refused:
        raise ConfigError(
            f"cannot resume {run} with {', '.join(refused)}: {'it changes' if len(refused) == 1 else 'they change'} "
            f"the model, its data or its schedule; give the run's own values (its config.yaml) or start a new run "
            f"with another --out. On resume only these may change: {', '.join(RESUMABLE)}"
        )
    return replace(saved, **taken)


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    """Tuples → lists, all the way down (YAML's safe dump writes lists and mappings, not tuples)."""
    return {k: _plain_value(v) for k, v in d.items()}


def _plain_value(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_plain_value(x) for x in v]
    return _plain(v) if isinstance(v, dict) else v


def _coerce(key: str, hint: Any, value: Any) -> Any:
    """Check ``value`` against the type ``hint`` of field ``key``; return it in that type or raise ConfigError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, _union_member(inner, value), value)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list such as [100, 100], got {value!r}")
        (inner, _) = typing.get_args(hint)
        indexed = dataclasses.is_dataclass(inner)  # train.stages[1]: say which item
        return tuple(_coerce(f"{key}[{i}]" if indexed else key, inner, v) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping such as {{mcc: 1.0}}, got {value!r}")
        (k_hint, v_hint) = typing.get_args(hint)
        return {_coerce(key, k_hint, k): _coerce(f"{key}.{k}", v_hint, v) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return _coerce_dataclass(key, hint, value)
    if hint is Any:  # checked by the section that reads it (a stage's method and optim keys)
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        return _integer(key, value)
    if hint is float:
        return _number(key, value)
    if hint is str:
        if isinstance(value, bool) and key in SWITCHES:  # kept for the section to read as on / off
            return value
        if value is None or isinstance(value, list | dict):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported config type {hint} for {key}")


def _coerce_dataclass(key: str, cls: type, value: Any) -> Any:
    """A mapping → the frozen dataclass ``cls`` (a stage of ``train.stages``), each key type-checked."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a mapping of keys to values, got {value!r}")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(value) - set(hints))
    if unknown:
        raise ConfigError(f"{key}: unknown key {unknown[0]!r}; valid keys: {', '.join(hints)}")
    try:
        return cls(**{k: _coerce(f"{key}.{k}", hints[k], v) for k, v in value.items()})
    except ConfigError as e:
        raise ConfigError(f"{key}: {e}") from None


def _union_member(hints: list[Any], value: Any) -> Any:
    """The type of a union that ``value`` is given as: a list → the tuple type, a mapping → the dict type, a value
    of one of the plain types → that type (``auto`` of ``int | str``), anything else → the first plain type (whose
    check then names what is wrong)."""
    kinds = {tuple: (list, tuple), dict: (dict,)}
    for hint in hints:
        if isinstance(value, kinds.get(typing.get_origin(hint), ())) or type(value) is hint:
            return hint
    return next((h for h in hints if typing.get_origin(h) is None), hints[0])


def _integer(key: str, value: Any) -> int:
    """An integer, or text ``int()`` reads. ``1e3`` or ``1000.0`` is refused, as ``int()`` refuses it, with the
    integer to write instead."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    hint = ""
    if not isinstance(value, bool) and isinstance(value, str | numbers.Real):
        try:
            number = float(value)
        except (ValueError, OverflowError):
            number = math.nan
        if math.isfinite(number) and number == int(number):
            hint = f"; write {int(number)}"
    raise ConfigError(f"{key} must be an integer, got {value!r}{hint}")


def _number(key: str, value: Any) -> float:
    """A finite float from a number, or from any text ``float()`` reads: YAML 1.1 (PyYAML) reads ``1e-3``,
    ``3E-4`` or ``5e-4`` as text, since its floats need a dot and a signed exponent. A value that is already a
    number is taken as it is, never re-read from text."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            number = math.inf
    else:
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if not math.isfinite(number):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    return number


def _section_classes() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def _build(values: dict[str, dict[str, Any]], origin: str) -> Config:
    sections = _section_classes()
    built = {}
    for name, raw in values.items():
        if name not in sections:
            raise ConfigError(f"{origin}: unknown section {name!r}; valid sections: {', '.join(sections)}")
        if not isinstance(raw, dict):
            raise ConfigError(f"{origin}: section {name!r} must be a mapping of keys to values")
        cls = sections[name]
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in raw.items():
            if key not in hints:
                raise ConfigError(f"{origin}: unknown key {name}.{key}; valid keys in {name!r}: {', '.join(hints)}")
            kwargs[key] = _coerce(f"{name}.{key}", hints[key], value)
        try:
            built[name] = cls(**kwargs)
        except ConfigError as e:
            raise ConfigError(f"{origin}: {e}") from None
    return Config(**built)


def preset_names() -> list[str]:
    """Names of the configs that ship inside the package (usable as ``--config NAME``)."""
    return sorted(
        p.name.removesuffix(".yaml") for p in resources.files("dann.presets").iterdir() if p.name.endswith(".yaml")
    )


def _read_yaml(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.exists() and path in preset_names():
        text = resources.files("dann.presets").joinpath(f"{path}.yaml").read_text()
    else:
        try:
            text = file.read_text()
        except FileNotFoundError:
            raise ConfigError(
                f"config file {path} does not exist (packaged presets: {', '.join(preset_names())})"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path} is not a text file (UTF-8 YAML)") from None
        except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
            raise ConfigError(f"cannot read config file {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as e:  # safe_load refuses tags that would build Python objects
        raise ConfigError(f"config file {path} holds a tag that is not plain YAML: {_yaml_problem(e)}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        sections = ", ".join(f.name for f in dataclasses.fields(Config))
        raise ConfigError(f"config file {path} must hold a mapping of sections ({sections})")
    return data


def _yaml_problem(error: yaml.YAMLError) -> str:
    """One line: what is wrong and where (PyYAML's own message spans several lines)."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem


def parse_override(text: str) -> tuple[str, str, Any]:
    """``"optim.lr=0.1"`` → ``("optim", "lr", 0.1)``; the value is read as YAML (numbers, true/false, lists)."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) != 2 or not all(parts):
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. optim.lr=0.01")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts[0], parts[1], value


def load_config(
    path: str | None = None, overrides: typing.Sequence[str] = (), values: dict[str, dict[str, Any]] | None = None
) -> Config:
    """Defaults, then the YAML file or packaged preset ``path``, then ``values`` (a nested dict), then
    ``overrides`` (``section.key=value`` strings). Raises ``ConfigError`` naming any bad key or value."""
    merged: dict[str, dict[str, Any]] = {}

    def merge(layer: dict[str, Any], origin: str) -> None:
        for section, keys in layer.items():
            if not isinstance(keys, dict):
                raise ConfigError(f"{origin}: section {section!r} must be a mapping of keys to values")
            merged.setdefault(section, {}).update(keys)

    if path:
        merge(_read_yaml(path), path)
    merge(values or {}, "arguments")
    for text in overrides:
        section, key, value = parse_override(text)
        merged.setdefault(section, {})[key] = value
    return _build(merged, path or "config")


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a config saved by ``Config.to_dict`` (e.g. a run's ``config.yaml``)."""
    return _build(data, "saved config")


def replace(cfg: Config, **sections: dict[str, Any]) -> Config:
    """A copy of ``cfg`` with some keys changed: ``replace(cfg, train={"steps": 10})``, type-checked."""
    data = cfg.to_dict()
    for name, keys in sections.items():
        data.setdefault(name, {}).update(keys)
    return _build(data, "replace")
