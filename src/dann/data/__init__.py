from ..config import DataConfig
from ..errors import ConfigError
from .arrays import as_domain, check_same_classes, load_npz, save_npz
from .builtin import TASKS, build_task
from .domains import SOURCE, TARGET, Domain, DomainData, make_domain_data

__all__ = [
    "SOURCE",
    "TARGET",
    "TASKS",
    "Domain",
    "DomainData",
    "as_domain",
    "build_data",
    "build_task",
    "check_same_classes",
    "load_npz",
    "make_domain_data",
    "save_npz",
]


def build_data(cfg: DataConfig) -> DomainData:
    """The DomainData a config asks for: ``.npz`` files when ``data.source`` is set, else the embedded task."""
    if cfg.source:
        if not cfg.target:
            raise ConfigError("data.target is required with data.source (the unlabeled target data)")
        source, classes = load_npz(cfg.source)
        target, target_classes = load_npz(cfg.target)
        target_eval, eval_classes = load_npz(cfg.target_eval) if cfg.target_eval else (None, None)
        for path, names in ((cfg.target, target_classes), (cfg.target_eval, eval_classes)):
            check_same_classes(classes, names, f"{path} vs {cfg.source}")
        return make_domain_data(
            source,
            target,
            target_eval,
            classes,
            cfg.val_fraction,
            cfg.seed,
            names=(cfg.source, cfg.target, cfg.target_eval),
        )
    if cfg.task:
        return build_task(cfg.task, cfg.seed, cfg.val_fraction)
    raise ConfigError(
        f"no data given: set data.task (one of {', '.join(TASKS.names())}) or data.source and data.target"
    )
