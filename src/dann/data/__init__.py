from pathlib import Path

from ..config import DataConfig, ModelConfig
from ..errors import ConfigError
from .arrays import as_domain, check_same_classes, load_npz, save_npz
from .builtin import TASKS, build_task
from .domains import SOURCE, TARGET, Domain, DomainData, make_domain_data
from .folders import LIST_EXTENSIONS, build_folder_data, read_images
from .images import ImageDomain
from .transforms import ImageConfig, resolve_image_config

__all__ = [
    "SOURCE",
    "TARGET",
    "TASKS",
    "Domain",
    "DomainData",
    "ImageConfig",
    "ImageDomain",
    "as_domain",
    "build_data",
    "build_task",
    "check_same_classes",
    "data_paths",
    "load_npz",
    "make_domain_data",
    "read_images",
    "save_npz",
]


def data_paths(cfg: DataConfig) -> tuple[str, str, str]:
    """(source, target, target_eval) with relative paths resolved against ``data.root``; "" stays "" (not given)."""

    def resolve(path: str) -> str:
        return str(Path(cfg.root) / path) if path and cfg.root and not Path(path).is_absolute() else path

    return resolve(cfg.source), resolve(cfg.target), resolve(cfg.target_eval)


def _is_image_input(path: str) -> bool:
    """A folder (or a missing path without a suffix, reported as a missing folder) or a list file
    (``.csv``/``.txt``/``.lst``) holds images; any other path is read as ``.npz``."""
    p = Path(path)
    return p.is_dir() or p.suffix.lower() in LIST_EXTENSIONS or (not p.exists() and not p.suffix)


def build_data(cfg: DataConfig, model: ModelConfig | None = None) -> DomainData:
    """The DomainData a config asks for: ``.npz`` files, image folders or list files when ``data.source`` is set
    (image inputs follow ``model.backbone``'s timm data config), else the embedded task."""
    if cfg.dataset:
        from .catalog import check_dataset

        check_dataset(cfg.dataset, cfg.root, [p for p in (cfg.source, cfg.target, cfg.target_eval) if p])
    if cfg.source:
        if not cfg.target:
            raise ConfigError("data.target is required with data.source (the unlabeled target data)")
        paths = data_paths(cfg)
        arrays = [not _is_image_input(p) for p in paths if p]
        if any(arrays) and not all(arrays):
            raise ConfigError(
                f"mixing .npz files with image folders or lists is not supported: {', '.join(p for p in paths if p)}"
            )
        if not arrays[0]:
            return build_folder_data(cfg, resolve_image_config(cfg, model or ModelConfig()), paths)
        source, classes = load_npz(paths[0])
        target, target_classes = load_npz(paths[1])
        target_eval, eval_classes = load_npz(paths[2]) if paths[2] else (None, None)
        for path, names in ((paths[1], target_classes), (paths[2], eval_classes)):
            check_same_classes(classes, names, f"{path} vs {paths[0]}")
        return make_domain_data(source, target, target_eval, classes, cfg.val_fraction, cfg.seed, names=paths)
    if cfg.task:
        return build_task(cfg.task, cfg.seed, cfg.val_fraction)
    raise ConfigError(
        f"no data given: set data.task (one of {', '.join(TASKS.names())}) or data.source and data.target"
    )
