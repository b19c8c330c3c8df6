"""``dann bench``: what the adaptation branch costs. In one process, images/s of

- (a) a plain supervised step (``source_only``) on 2B source images, and
- (b) the DANN step on B source + B target images,

with the same backbone, batch, precision and memory layout, both through ``steps.train_step`` (the trainer's
own step). By default the data are random tensors held on the device and batched by the trainer's ``StepBatches``,
so the data-wait fraction is the share of step time spent fetching the batch (indexing + augmentation), not disk
reads. With ``images`` (a folder of class subfolders) both domains stream from those files through the trainer's
DataLoader path (``LoaderBatches``: decode, training transform, default workers, pinned memory), and the data-wait
fraction is the time the step waits for the loader. Each image-file round then opens fresh loaders and runs
``warmup`` (at least one) untimed steps first, and closes them after: otherwise the idle mode's workers would
take CPU from the timed one, and fill their queue with batches that make its next round look faster. The same
two steps then also run from the folder's decoded-image cache (``dann.data.cache``, built first unless it exists),
so one bench compares reading the files with reading the cache, in alternating rounds.
Each mode runs ``warmup`` untimed steps, then ``rounds`` timed blocks of ``steps`` steps, alternating between the
modes so that a busy machine slows both alike; the fastest block of each mode is reported. Timing synchronizes with
the device around each fetch and step (a benchmark only; training never does)."""

from __future__ import annotations

import dataclasses
import platform
import resource
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..config import DataConfig, MethodConfig, ModelConfig, OptimConfig
from ..data import build_data
from ..data.cached import CachedImageDomain
from ..data.domains import AnyDomain, Domain
from ..data.images import CALL_SKIP_HINT, ImageDomain, default_workers
from ..data.loaders import Rows, step_batches
from ..data.transforms import ImageConfig
from ..errors import DannError
from ..methods import create_method
from ..models import create_network
from .precision import Precision
from .seeds import derive_seed
from .steps import Batches, MethodLoss, train_step
from .trainer import build_optimizer

if TYPE_CHECKING:
    from ..plan import BenchPlan

# backbone → input: images (C, H, W), or feature vectors (D,) for the tables' MLP
INPUTS = {"lenet": (1, 28, 28), "resnet18": (3, 64, 64), "resnet50": (3, 224, 224), "mlp": (30,)}
NUM_CLASSES = 10
SEED = 0  # train.seed of every benchmarked network and stream
PATHS = {"files": "off", "cache": "on"}  # with --images: the two ways to read them (data.cache)


class TimedBatches:
    """Wraps a batch stream; adds the seconds spent in ``get`` (device work included) to ``seconds``."""

    def __init__(self, batches: Batches, device: torch.device) -> None:
        self.batches, self.device, self.seconds = batches, device, 0.0

    def get(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.get_rows(index)[:2]

    def get_rows(self, index: int) -> Rows:
        tic = time.perf_counter()
        out = self.batches.get_rows(index)
        _sync(self.device)
        self.seconds += time.perf_counter() - tic
        return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Mode:
    """One benchmarked step: a fresh network, optimizer and batch streams for ``method``."""

    def __init__(
        self,
        method: str,
        model: ModelConfig,
        batch_size: int,
        amp: Precision,
        device: torch.device,
        images: ImageDomain | None = None,
    ) -> None:
        shape = images.input_shape if images is not None else INPUTS[model.backbone]
        torch.manual_seed(derive_seed(SEED, "init"))
        self.net = create_network(model, shape, NUM_CLASSES).to(device).train()
        amp.prepare_model(self.net)
        self.method = create_method(MethodConfig(name=method))
        self.model = MethodLoss(self.net, self.method)
        self.optimizer = build_optimizer(OptimConfig(), self.net, pretrained=False)
        self.amp, self.device, self.step = amp, device, 0
        self.per_domain = batch_size if self.method.uses_target else 2 * batch_size
        self.source: TimedBatches | None = None
        self.target: TimedBatches | None = None
        if images is not None:
            self.domain: AnyDomain = images  # run_bench opens its loaders round by round
        else:
            n = 8 * self.per_domain
            self.domain = Domain(torch.rand(n, *shape), torch.randint(0, NUM_CLASSES, (n,)))
            self.open()

    def open(self) -> None:
        """Fresh batch streams from the current step (for image files: new DataLoaders and workers)."""
        self.close()
        share = 2 if self.method.uses_target else 1  # as the trainer does: the streams share the CPUs' workers
        seed = derive_seed(SEED, "data")  # source; the target stream takes seed + 1, as in the trainer
        streams = [step_batches(self.domain, self.per_domain, seed, self.device, self.step, share=share)]
        if self.method.uses_target:
            streams.append(step_batches(self.domain, self.per_domain, seed + 1, self.device, self.step, share=share))
        timed = [TimedBatches(s, self.device) for s in streams]
        self.source, self.target = timed[0], (timed[1] if len(timed) > 1 else None)

    def close(self) -> None:
        """Drop the streams; image-file loaders stop their workers, so they take no CPU from the other mode."""
        self.source = self.target = None

    def data_seconds(self) -> float:
        return self.source.seconds + (self.target.seconds if self.target is not None else 0.0)

    def run(self, steps: int) -> tuple[float, float]:
        """``steps`` steps → (seconds, of which waiting for data)."""
        data_before = self.data_seconds()
        _sync(self.device)
        tic = time.perf_counter()
        for _ in range(steps):
            train_step(self.model, self.optimizer, self.source, self.target, self.step, 0.5, self.amp)
            self.step += 1
        _sync(self.device)
        return time.perf_counter() - tic, self.data_seconds() - data_before


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by tensors on a CUDA device, else the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"{device.type}: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def image_domain(
    folder: str, image: ImageConfig, workers: int | None = None, cache: str = "off", skip_bad: bool = False
) -> ImageDomain:
    """The images of ``folder`` (class subfolders), prepared as ``image`` says (``BenchPlan.image``), with the
    default loader settings (``data.pin_memory``; ``data.num_workers`` unless ``workers`` is given), read from the
    files (``cache="off"``) or from their decoded-image cache (``"on"``: built first if needed, see
    ``dann.data.cache``)."""
    if not Path(folder).is_dir():
        raise DannError(f"`images` {folder} is not a folder (expected class subfolders of images)")
    if workers is not None and workers < 0:
        raise DannError(f"`workers` must be >= 0, got {workers}")
    cfg = DataConfig(source=folder, target=folder, val_fraction=0.0, image_size=image.size, num_workers=workers,
                     cache=cache, skip_bad_images=skip_bad)  # fmt: skip
    domain = build_data(cfg, image).source_train
    if not isinstance(domain, ImageDomain):
        raise DannError(f"`images` {folder} holds no image files")
    domain.pipeline = dataclasses.replace(domain.pipeline, skip_hint=CALL_SKIP_HINT)  # run_bench's own `skip_bad`
    return domain


def describe_cache(domain: CachedImageDomain) -> dict[str, Any]:
    """Where a bench's cache is, its size, and its build rate (None when it was built before this bench)."""
    images = domain.images
    cpus = images.cores or None
    rate = len(images) / images.seconds if images.seconds else None
    return {
        "path": str(images.path),
        "side": images.side,
        "size_mb": images.nbytes / 2**20,
        "build_s": images.seconds,
        "build_img_s": rate,
        "build_img_s_per_core": rate / cpus if rate is not None and cpus else None,
        "build_cores": cpus,
    }


def describe_workers(folder: ImageDomain) -> str:
    n = folder.pipeline.num_workers
    return f"DataLoader workers: DANN 2 × {default_workers(n, 2)}, supervised {default_workers(n, 1)}"


def run_bench(
    backbone: str,
    plan: BenchPlan,
    batch_size: int = 64,
    steps: int = 10,
    warmup: int = 3,
    rounds: int = 3,
    images: str | None = None,
    workers: int | None = None,
    skip_bad: bool = False,
) -> dict[str, Any]:
    """Images/s of the supervised step on 2B images and of the DANN step on B + B; their ratio (supervised / DANN:
    how many times longer the DANN step takes), the DANN step's data-wait fraction, peak memory and the device.
    ``images``: a folder of class subfolders to stream both domains from (as ``plan.image`` says: at the backbone's
    bench size unless another was asked for), instead of tensors in memory, with ``workers`` DataLoader workers per
    loader (None: the trainer's default), skipping unreadable files with ``skip_bad`` (as ``data.skip_bad_images``);
    both steps then also run from the folder's decoded-image cache (built first if needed), reported under ``cache``
    with the speed-up of its DANN step over the files'. ``plan`` (``dann.plan.plan_bench``): the network, device,
    precision and memory layout, resolved as a DANN run of the backbone would resolve them; the result names them."""
    if backbone not in INPUTS:
        raise DannError(f"unknown backbone {backbone!r}; choose one of {', '.join(INPUTS)}")
    if images and len(INPUTS[backbone]) != 3:
        raise DannError(f"`images` needs an image backbone, not {backbone!r}")
    if min(batch_size, steps, rounds) < 1 or warmup < 0:
        raise DannError("`batch_size`, `steps` and `rounds` must be >= 1, `warmup` >= 0")
    dev, precision, channels_last = plan.device, plan.precision, plan.channels_last
    paths: dict[str, ImageDomain | None] = {"": None}
    if images:
        assert plan.image is not None  # an image backbone's plan
        paths = {kind: image_domain(images, plan.image, workers, mode, skip_bad) for kind, mode in PATHS.items()}
    first = next(iter(paths.values()))
    amp = Precision(precision, dev, channels_last)
    modes = {
        (name, kind): Mode(name, plan.model, batch_size, amp, dev, folder)
        for kind, folder in paths.items()
        for name in ("source_only", "dann")
    }
    best = dict.fromkeys(modes, (float("inf"), 0.0))
    if images is None:
        for mode in modes.values():
            mode.run(warmup)
    for _ in range(rounds):
        for key, mode in modes.items():
            if images is not None:  # only this mode's loader workers run, and their queue starts warm, not idle-full
                mode.open()
                mode.run(max(1, warmup))  # at least one step: the workers' start is never timed
            best[key] = min(best[key], mode.run(steps))
            if images is not None:
                mode.close()
    seen = 2 * batch_size * steps  # images per timed block, in either mode

    def rates(kind: str) -> dict[str, float]:
        (supervised, _), (adapted, wait) = best[("source_only", kind)], best[("dann", kind)]
        return {
            "supervised_img_s": seen / supervised,
            "dann_img_s": seen / adapted,
            "ratio": adapted / supervised,
            "data_wait_fraction": wait / adapted,
        }

    kind = next(iter(paths))
    result: dict[str, Any] = {
        "backbone": backbone,
        "input": list(first.input_shape if first is not None else INPUTS[backbone]),
        "data": f"image files: {images} ({describe_workers(first)})" if first is not None else "tensors in memory",
        "batch_size": batch_size,
        "precision": precision,
        "channels_last": channels_last,
        **rates(kind),
    }
    if images is not None:
        cached = paths["cache"]
        result["cache"] = rates("cache") | describe_cache(cached)  # type: ignore[arg-type]
        result["cache"]["speedup"] = result["cache"]["dann_img_s"] / result["dann_img_s"]
    return result | {"peak_memory_mb": peak_memory_mb(dev), "device": device_name(dev)}


def format_bench(r: dict[str, Any]) -> str:
    """The human-readable lines of ``dann bench``."""
    c, h, w = r["input"]
    lines = [
        f"device: {r['device']}  backbone: {r['backbone']} {c}x{h}x{w}  batch: {r['batch_size']} per domain  "
        f"precision: {r['precision']}{'  channels_last' if r['channels_last'] else ''}",
        f"data: {r['data']}",
        *_rate_lines(r, ""),
    ]
    if "cache" in r:
        cache = r["cache"]
        built = (
            f"built in {cache['build_s']:.1f} s, {cache['build_img_s']:.0f} img/s "
            f"({cache['build_img_s_per_core']:.0f} per core, {cache['build_cores']} "
            f"core{'s' * (cache['build_cores'] != 1)})"
            if cache["build_s"] is not None
            else "built before this bench"
        )
        lines += [
            f"decoded-image cache: {cache['path']} ({cache['side']}x{cache['side']} px, {cache['size_mb']:.1f} MiB), "
            f"{built}",
            *_rate_lines(cache, "from the cache, "),
            f"cache speed-up of the DANN step: {cache['speedup']:.2f}x",
        ]
    return "\n".join([*lines, f"peak memory: {r['peak_memory_mb']:.0f} MB"])


def _rate_lines(r: dict[str, Any], where: str) -> list[str]:
    return [
        f"{where}supervised step (2B images): {r['supervised_img_s']:.1f} img/s",
        f"{where}DANN step (B source + B target): {r['dann_img_s']:.1f} img/s",
        f"{where}ratio (DANN step time / supervised step time): {r['ratio']:.3f}",
        f"{where}data wait (share of the DANN step spent fetching batches): {r['data_wait_fraction']:.1%}",
    ]
