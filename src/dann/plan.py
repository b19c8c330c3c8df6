"""The run plan: every choice of a run resolved once, from its config, its data and its processes, before anything is
written. This module is the only one that resolves (calls the ``resolve_*`` functions of the layers below: the method,
the network, the intervals, the input size, the device, the precision, the memory layout, the threads);
everything downstream (the trainer, its stages and methods, the start-up summary, the report, ``dann bench``) takes
the plan or its plain values.

``plan_run(cfg, data, world)`` builds the ``RunPlan`` of a run and runs every check of the config, the data and the
processes that can refuse it, so a refused run writes nothing (the one check that needs the built network, BatchNorm
layers that one sample per forward would break, follows in ``dann.fit``, before the run directory is made too). Its
``config`` is what ``config.yaml`` records, and what ``--resume`` compares a new command with (``resumed_config``);
the start-up summary prints it."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import (
    AUTOMATIC,
    CONTROL_METHOD,
    Config,
    DataConfig,
    MethodConfig,
    ModelConfig,
    absolute_paths,
    load_config,
    replace,
    resolve_intervals,
    resolve_method,
    resume_config,
    stage_sections,
)
from .data import build_data
from .data.domains import DomainData
from .data.images import local_processes
from .data.transforms import ImageConfig, resolve_image_config, timm_data_config
from .errors import ConfigError, DannError, DataWarning
from .methods import base as methods
from .methods.base import METHODS, REGULARIZERS, Method, keeps_fp32, method_defaults, term_options
from .models import network
from .models.backbones import NATIVE_SIZE
from .models.network import DomainAdaptNet, resolve_model
from .runs import CONFIG_FILE, LAST_CHECKPOINT, PREV_CHECKPOINT, load_latest_checkpoint
from .training.distributed import World, local_device
from .training.precision import resolve_channels_last, resolve_precision
from .training.seeds import derive_seed
from .training.stages import plan_stages, stage_method, target_batches
from .training.threads import Threads, resolve_threads


@dataclass(frozen=True)
class RunPlan:
    """Every choice of one run (one process of it under torchrun), resolved. ``config`` has no ``auto`` left: the
    network (``model.backbone``, ``bottleneck_dim``, ``head_dims``), the input size (``data.image_size``), the method
    and its keys, the intervals, ``train.precision``, ``channels_last`` and ``threads``; the other fields are what a
    config cannot hold."""

    config: Config  # what config.yaml records and a resume compares
    methods: tuple[MethodConfig, ...]  # each stage's method with its regularizers (one stage without train.stages)
    device: torch.device  # this process's
    threads: Threads  # config.train.threads and, for auto, what it was chosen from
    world: World  # this process's place in a torchrun launch (a world of one otherwise)
    rows: tuple[int, int]  # this process's rows [lo, hi) of each step's global batch per domain
    seeds: dict[str, int]  # per purpose (training.seeds): init (the network), train (this process's generators)
    input_note: str  # where an image input size comes from (the backbone's size or data.image_size); "" for arrays
    control: Config | None = None  # the source-only control's config, for a run trained with its control


def plan_run(cfg: Config, data: DomainData, world: World | None = None, control: bool = False) -> RunPlan:
    """The plan of a run of ``cfg`` on ``data`` in ``world`` (default: the torchrun environment's, else a world of
    one), with its source-only control when ``control``. Raises ``ConfigError`` (or ``DannError`` for a device this
    machine lacks) for anything that would stop the run: a batch that processes cannot split, a method that needs
    ``model.init_from`` without it, stages that name domains the data lacks, a control of the control."""
    world = world or World.from_env()
    config = resolved_config(cfg, data)
    t = config.train
    world.check_batch_size(t.batch_size)
    if control and config.method.name == CONTROL_METHOD:
        raise ConfigError(f"this run is the source-only control already (method.name={CONTROL_METHOD}): drop control")
    with warnings.catch_warnings():  # the run's own method warns when the run creates it
        warnings.simplefilter("ignore", DataWarning)
        method = methods.create_method(config.method)
        stages = plan_stages(config, method, data).stages  # one, `method`, without train.stages
    rows, n_t = max(target_batches(config).values(), default=0), len(data.target_train)
    if rows > t.batch_size and rows > n_t:  # method.uratio: each step would repeat target samples
        warnings.warn(
            f"method.uratio={rows // t.batch_size} draws {rows} target rows per step from {n_t} target training "
            f"samples: each step repeats samples; lower method.uratio or train.batch_size",
            DataWarning,
            stacklevel=2,
        )
    if method.needs_init and not config.model.init_from:
        raise ConfigError(
            f"method {config.method.name!r} adapts a trained source model: name its run directory with "
            "model.init_from, e.g. a source_only run on the same classes"
        )
    device = resolve_device(local_device(t.device, world))
    adversarial = any(keeps_fp32(stage.method) for stage in stages)
    precision = resolve_precision(t.precision, device, data.input_shape, adversarial)
    channels_last = resolve_channels_last(t.channels_last, precision, data.input_shape)
    threads = resolve_threads(t.threads, config.model.backbone, device.type, local_processes())
    train = dataclasses.replace(t, precision=precision, channels_last=channels_last, threads=threads.count)
    config = dataclasses.replace(config, train=train)
    return RunPlan(
        config=config,
        methods=tuple(getattr(stage.method, "inner", stage.method).cfg for stage in stages),
        device=device,
        threads=threads,
        world=world,
        rows=world.rows(t.batch_size),
        seeds={purpose: derive_seed(t.seed, purpose, world.rank) for purpose in ("init", "train")},
        input_note=input_note(config, data),
        control=replace(config, method={"name": CONTROL_METHOD, "regularizers": {}}) if control else None,
    )


def resolved_config(cfg: Config, data: DomainData) -> Config:
    """The config's automatic values that follow from the config and the data: the ``auto`` network
    (``network_model``: the method's reference layout), the ``recommended`` method and every method key
    left to the method's reference default (``methods.base.method_defaults``), for image files the input size used
    (``data.image_size``: the backbone's native or pretrained size unless given), and the evaluation and log intervals
    (``train.eval_every``, ``train.log_every``: ``auto`` set by the run's length, ``training.cadence``). The device's
    choices (precision, memory layout, threads) are ``plan_run``'s. Relative paths become absolute
    (``config.absolute_paths``), so the run's config.yaml names its files from any folder."""
    cfg = absolute_paths(resolve_intervals(cfg))
    data_cfg = cfg.data if data.image is None else dataclasses.replace(cfg.data, image_size=data.image.size)
    method = resolve_method(cfg.method)
    start = start_network(cfg.model) if cfg.model.init_from else cfg.model
    model = network_model(start, method, data.input_shape)
    if not cfg.train.stages:  # with stages, each stage's method takes its own reference defaults: null keys stay
        method = method_defaults(method)
    return dataclasses.replace(cfg, data=data_cfg, model=model, method=method)


# What a run written before these keys existed trained with: its config.yaml lacks them, and a resume must continue
# the same method, not today's defaults.
LEGACY = {
    "method": {"distribution_alignment": False, "logit_interpolation": False, "unlabeled_warmup": 0.0,
               "ema_eval": 0.0, "grl_horizon": 0, "intensity_augment": False},
    "model": {"input_norm": "none", "adabn": False, "bottleneck_kind": "bn_relu", "weight_norm": False},
    "train": {"threads": 0},  # torch's own setting, which every run used before train.threads
}  # fmt: skip


def saved_run_config(run_dir: Path) -> Config:
    """A run's ``config.yaml`` as it trained: keys it predates take their ``LEGACY`` values, and a bottleneck it left
    to auto is read from its newest checkpoint. Raises ``ConfigError`` for a run of the former ``fixmatch`` loss
    (FixMatch with a relative threshold), which today's ``fixmatch`` (AdaMatch) cannot continue."""
    import yaml

    path = run_dir / CONFIG_FILE
    cfg = load_config(str(path))
    raw = yaml.safe_load(path.read_text()) or {}
    missing = {name: {k: v for k, v in keys.items() if k not in (raw.get(name) or {})} for name, keys in LEGACY.items()}
    if missing["method"].get("distribution_alignment") is False and cfg.method.name == "fixmatch":
        raise ConfigError(
            f"cannot resume {run_dir}: it trained the former fixmatch (FixMatch with a relative threshold), which this "
            "version replaced by AdaMatch; resume it with the dann version that wrote it, or start a new run"
        )
    cfg = replace(cfg, **{section: keys for section, keys in missing.items() if keys})
    # a term option that no term of the run reads takes today's default: it had no effect, and another value warns
    default = MethodConfig()
    unread = {k: getattr(default, k) for k in unread_options(cfg)}
    cfg = dataclasses.replace(cfg, method=dataclasses.replace(cfg.method, **unread))
    if cfg.model.bottleneck_dim is None and any((run_dir / n).is_file() for n in (LAST_CHECKPOINT, PREV_CHECKPOINT)):
        model = load_latest_checkpoint(run_dir).model
        width = model["bottleneck.0.weight"].shape[0] if "bottleneck.0.weight" in model else 0
        cfg = replace(cfg, model={"bottleneck_dim": width})
    return cfg


def unread_options(cfg: Config) -> set[str]:
    """The method.* keys that some term reads (``methods.base.term_options``) but no term of ``cfg``'s run."""
    return term_options() - read_options(cfg)


def read_options(cfg: Config) -> set[str]:
    """The method.* keys a term of ``cfg``'s run reads: its method's and its regularizers' (``Term.options``), and
    with ``train.stages`` each stage's."""
    methods_ = [resolve_method(cfg.method), *(stage_sections(cfg, i)[0] for i in range(len(cfg.train.stages)))]
    terms = [t for m in methods_ for t in (METHODS.get(m.name).term, *map(REGULARIZERS.get, m.regularizers))]
    return {key for term in terms if term is not None for key in term.options}


# The model.* keys that shape the network a run predicts with, and so must match those of the run it starts from
DEFAULT_MODEL = ModelConfig()
NETWORK_KEYS = ("backbone", "mlp_dims", "batchnorm", "bottleneck_dim", "bottleneck_kind", "weight_norm", "head_dims",
                "head_norm", "input_norm")  # fmt: skip


def start_network(model: ModelConfig) -> ModelConfig:
    """The network of a run that starts from ``model.init_from``'s weights is that run's: every ``NETWORK_KEYS`` key
    left to auto or to its default takes the value that run trained with (its config.yaml), so ``shot`` adapts its
    start whatever layout the start has. A key given another value than the start's raises ``ConfigError`` naming
    both (no tensor would tell an input normalisation or a bottleneck's activation apart). A directory without
    config.yaml is left to ``init_from_run``, which says there is no trained run there."""
    run = Path(model.init_from)
    if not (run / CONFIG_FILE).is_file():
        return model
    theirs = saved_run_config(run).model
    taken, differ = {}, []
    for key in NETWORK_KEYS:
        mine, start = getattr(model, key), getattr(theirs, key)
        if start is None or mine == start:
            continue
        if mine in (AUTOMATIC.get(f"model.{key}", ()), getattr(DEFAULT_MODEL, key)):
            taken[key] = start
        else:
            differ.append(f"model.{key}={start!r} there, {mine!r} here")
    if differ:
        raise ConfigError(
            f"model.init_from {model.init_from}: this run starts from that run's weights, so it needs that run's "
            f"network, but {'; '.join(differ)}: leave {'them' if len(differ) > 1 else 'it'} unset (auto takes the "
            "start's) or give the start's value"
        )
    return dataclasses.replace(model, **taken)


SMALL_BACKBONES = ("lenet", "lenet_conv", "mlp")  # the registered backbones whose bottleneck the method decides


def network_model(model: ModelConfig, method: MethodConfig, input_shape: tuple[int, ...]) -> ModelConfig:
    """The network a method trains, every auto value resolved: ``model.backbone`` and ``head_dims``
    (``models.network.resolve_model``) and, for the small registered backbones, ``model.bottleneck_dim`` null → the
    method's ``bottleneck`` (its reference layout); timm backbones keep theirs (256 under auto). ``method``: a method
    of ``dann.methods.METHODS`` (``recommended`` resolved)."""
    backbone = resolve_model(model, input_shape).backbone
    if model.bottleneck_dim is None and backbone in SMALL_BACKBONES:
        model = dataclasses.replace(model, bottleneck_dim=METHODS.get(method.name).bottleneck)
    return resolve_model(model, input_shape)


def build_run_data(data: DataConfig, model: ModelConfig | None = None) -> DomainData:
    """The ``DomainData`` that ``data`` names, image files prepared for ``model.backbone`` (``data.transforms.
    resolve_image_config``: its native or pretrained input size, mean and std, unless ``data.image_size`` is given)."""
    return build_data(data, resolve_image_config(data, model or ModelConfig()))


def input_note(cfg: Config, data: DomainData) -> str:
    """Why image files become inputs of this size: the backbone's own size, or ``data.image_size``."""
    if data.image is None:
        return ""
    own = resolve_image_config(dataclasses.replace(cfg.data, image_size=0), cfg.model).size  # the backbone's own
    if own != data.image.size:
        return "data.image_size"
    backbone = cfg.model.backbone
    kind = "native" if backbone in NATIVE_SIZE else "pretrained" if timm_data_config(backbone) else "default"
    return f"images resized to {own}×{own}: {backbone}'s {kind} size; data.image_size changes it"


def resumed_config(saved: Config, given: Config, run: str) -> Config:
    """What a run resumed with the options ``given`` continues with (``config.resume_config``): ``saved``, its
    ``config.yaml`` (the recorded plan), with what a resume may change; both methods compared resolved, and both
    configs' paths absolute (``config.absolute_paths``: a relative path given names the file it names here). A term's
    option that no term of the saved run reads (``read_options``) is not compared: it changes nothing there, and its
    default may have changed since the run recorded it."""
    saved = absolute_paths(dataclasses.replace(saved, method=resolve_method(saved.method)))
    given = absolute_paths(dataclasses.replace(given, method=resolve_method(given.method)))
    unread = unread_options(saved)
    if saved.method.name == given.method.name and saved.method.regularizers == given.method.regularizers:
        given = dataclasses.replace(given, method=dataclasses.replace(
            given.method, **{k: getattr(saved.method, k) for k in unread}))  # fmt: skip
    return resume_config(saved, given, run)


def reads_target(cfg: MethodConfig) -> bool:
    """Whether the method ``cfg`` names (``recommended`` resolved) reads target batches."""
    return METHODS.get(resolve_method(cfg).name).uses_target


def clip_teacher_method(cfg: Config) -> MethodConfig | None:
    """The first method of ``cfg``'s run that trains ``clip_distill`` (as the method or a regularizer): the run's, or
    with ``train.stages`` the first stage's that does (``training.stages.stage_method``: the run's own method does not
    train there). Its ``clip_model``, ``clip_file`` and ``clip_templates`` make the teacher. None when none does."""
    cfg = dataclasses.replace(cfg, method=resolve_method(cfg.method))
    trained = [stage_method(cfg, i)[0] for i in range(len(cfg.train.stages))] or [cfg.method]
    found = [m for m in trained if "clip_distill" in (m.name, *m.regularizers)]
    return found[0] if found else None


def this_device(cfg: Config) -> torch.device:
    """The device this process of a run of ``cfg`` computes on (``train.device``; under torchrun its local one)."""
    return resolve_device(local_device(cfg.train.device, World.from_env()))


def create_method(cfg: MethodConfig) -> Method:
    """The method ``cfg.name`` names (``recommended``: the recommended recipe, ``dann.config.RECIPE``), its null keys
    set to the method's reference defaults (``methods.base.create_method``)."""
    return methods.create_method(resolve_method(cfg))


def create_network(
    cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int, discriminator: Any = None
) -> DomainAdaptNet:
    """``models.network.create_network`` with ``model.backbone: auto`` and ``head_dims: null`` resolved for samples of
    ``input_shape`` (``models.network.resolve_model``)."""
    return network.create_network(resolve_model(cfg, input_shape), input_shape, num_classes, discriminator)


def build_network(
    model: ModelConfig, method: MethodConfig, input_shape: tuple[int, ...], num_classes: int, num_domains: int = 2
) -> DomainAdaptNet:
    """The network ``method`` trains (``methods.base.build_network``), ``model`` resolved (``network_model``)."""
    method = resolve_method(method)
    return methods.build_network(network_model(model, method, input_shape), method, input_shape, num_classes,
                                 num_domains)  # fmt: skip


def resolve_device(name: str) -> torch.device:
    """``train.device`` → a device this machine has: cpu, cuda[:N] or mps (``auto``: cuda when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise DannError(f"train.device {name!r} is not a valid device (auto, cpu, cuda, cuda:N, mps)")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available[device.type]:
        kind = device.type.upper()
        raise DannError(f"train.device is {name!r} but {kind} is not available here; use train.device=cpu or auto")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise DannError(f"train.device is {name!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


@dataclass(frozen=True)
class BenchPlan:
    """What ``dann bench`` times with: its network, device, precision, memory layout, thread count and, for an image
    backbone, how image files become inputs, resolved as a DANN run of the same backbone would resolve them."""

    model: ModelConfig
    device: torch.device
    precision: str
    channels_last: bool
    threads: int
    image: ImageConfig | None  # None for feature vectors


def plan_bench(
    backbone: str, input_shape: tuple[int, ...], device: str = "auto", precision: str = "auto",
    channels_last: bool | None = None, threads: int | str = "auto", image_size: int = 0,
) -> BenchPlan:  # fmt: skip
    """The choices of ``dann bench`` for ``backbone`` on inputs of ``input_shape`` (``training.bench.INPUTS``); image
    files, when it reads some, at ``image_size`` (0: the side of ``input_shape``)."""
    if image_size < 0:
        raise DannError(f"`image_size` must be >= 0, got {image_size}")
    model = ModelConfig(backbone=backbone)
    dev = resolve_device(device)
    dann_fp32 = keeps_fp32(methods.create_method(MethodConfig(name="dann")))
    chosen = resolve_precision(precision, dev, input_shape, adversarial=dann_fp32)  # as a DANN run resolves it
    layout = resolve_channels_last(channels_last, chosen, input_shape)
    image = None
    if len(input_shape) == 3:
        image = resolve_image_config(DataConfig(image_size=image_size or input_shape[-1]), model)
    count = resolve_threads(threads, backbone, dev.type).count
    return BenchPlan(resolve_model(model, input_shape), dev, chosen, layout, count, image)
