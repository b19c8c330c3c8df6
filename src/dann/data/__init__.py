import dataclasses
from pathlib import Path

from ..config import DataConfig
from ..errors import ConfigError
from .arrays import as_domain, check_same_classes, load_npz, save_npz
from .builtin import TASKS, build_task
from .domains import (
    SOURCE,
    SOURCE_NAME,
    TARGET,
    Domain,
    DomainData,
    LabeledDomain,
    hold_out_target,
    make_domain_data,
    mark_intermediate,
)
from .folders import LIST_EXTENSIONS, build_folder_data, read_images
from .images import ImageDomain
from .sources import labeled_sources, merge_npz_classes, resolve
from .transforms import ImageConfig

__all__ = [
    "SOURCE",
    "TARGET",
    "TASKS",
    "Domain",
    "DomainData",
    "ImageConfig",
    "ImageDomain",
    "LabeledDomain",
    "as_domain",
    "build_data",
    "build_task",
    "check_same_classes",
    "data_paths",
    "labeled_sources",
    "load_npz",
    "make_domain_data",
    "read_images",
    "save_npz",
]


def data_paths(cfg: DataConfig) -> tuple[str, str, str]:
    """(source, target, target_eval) with relative paths resolved against ``data.root``; "" stays "" (not given).
    With several labeled domains, ``source`` is the first one's path (``labeled_sources`` lists them all)."""
    sources = labeled_sources(cfg)
    return sources[0][1] if sources else "", resolve(cfg, cfg.target), resolve(cfg, cfg.target_eval)


def _is_image_input(path: str) -> bool:
    """A folder (or a missing path without a suffix, reported as a missing folder) or a list file
    (``.csv``/``.txt``/``.lst``) holds images; any other path is read as ``.npz``."""
    p = Path(path)
    return p.is_dir() or p.suffix.lower() in LIST_EXTENSIONS or (not p.exists() and not p.suffix)


def build_data(cfg: DataConfig, image: ImageConfig | None = None) -> DomainData:
    """The DomainData a config asks for: ``.npz`` files, image folders or list files when ``data.source`` is set
    (image files become inputs as ``image`` says: the run's plan resolves it for the backbone, ``dann.plan.
    build_run_data``), else the embedded task; with ``data.target_val_fraction`` a share of the target held out for
    the validators (``domains.hold_out_target``)."""
    return hold_out_target(_build_data(cfg, image), cfg.target_val_fraction, cfg.seed)


def _build_data(cfg: DataConfig, image: ImageConfig | None = None) -> DomainData:
    sources = labeled_sources(cfg)
    if cfg.dataset:
        from .catalog import check_dataset

        check_dataset(cfg.dataset, cfg.root, [p for p in (*_raw_sources(cfg), cfg.target, cfg.target_eval) if p])
    if sources:
        if not cfg.target:
            raise ConfigError("data.target is required with data.source (the unlabeled target data)")
        paths = data_paths(cfg)
        every = [path for _, path in sources] + [p for p in paths[1:] if p]
        arrays = [not _is_image_input(p) for p in every]
        if any(arrays) and not all(arrays):
            raise ConfigError(f"mixing .npz files with image folders or lists is not supported: {', '.join(every)}")
        if not arrays[0]:
            if image is None:
                raise ConfigError("image files need the input size and normalisation: dann.plan.build_run_data")
            return build_folder_data(cfg, image, paths, sources)
        return _npz_data(cfg, sources, paths)
    if cfg.task:
        return mark_intermediate(build_task(cfg.task, cfg.seed, cfg.val_fraction), cfg.intermediate)
    raise ConfigError(
        f"no data given: set data.task (one of {', '.join(TASKS.names())}) or data.source and data.target"
    )


def _raw_sources(cfg: DataConfig) -> list[str]:
    """The labeled paths as written in ``data.source`` (relative to ``data.root``), for the dataset check."""
    return [path for _, path in labeled_sources(dataclasses.replace(cfg, root=""))]


def _npz_data(cfg: DataConfig, sources: list[tuple[str, str]], paths: tuple[str, str, str]) -> DomainData:
    """DomainData of ``.npz`` files: one labeled domain per source, classes matched by name across them."""
    loaded = [(name, path, *load_npz(path)) for name, path in sources]
    domains, classes = merge_npz_classes(loaded)
    target, target_classes = load_npz(paths[1])
    target_eval, eval_classes = load_npz(paths[2]) if paths[2] else (None, None)
    for path, names in ((paths[1], target_classes), (paths[2], eval_classes)):
        check_same_classes(classes, names, f"{path} vs {paths[0]}")
    single = len(sources) == 1 and sources[0][0] == SOURCE_NAME  # one unnamed labeled domain: as it always was
    source, origins = (domains[SOURCE_NAME], None) if single else (domains, dict(sources))
    return make_domain_data(
        source, target, target_eval, classes, cfg.val_fraction, cfg.seed, paths, None, cfg.intermediate, origins
    )
