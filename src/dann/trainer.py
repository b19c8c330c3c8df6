"""The only training loop. Steps, not epochs: progress ``p = step / steps`` drives every schedule.

Per step (``dann.steps``): one batch per domain per micro-batch (a pure function of the step), ``method.loss`` under
autocast (``dann.precision``), backward, optimizer step. No
host-device synchronization except every ``log_every`` steps (progress bar, non-finite check) and ``eval_every``
steps (non-finite check → evaluation and validator scores → one JSON line in ``metrics.jsonl`` → atomic
checkpoints: ``last.pt`` (the previous one kept as ``prev.pt``), and ``best.pt`` when the ``selection.validator``
score is the best so far; see ``selection.py``). Non-finite losses: see ``dann.nonfinite``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .config import Config, OptimConfig
from .data.domains import DomainData
from .data.loaders import step_batches
from .errors import DannError
from .evaluate import evaluate_domain
from .methods.base import Method
from .models.network import DomainAdaptNet
from .nonfinite import LossWatch, SkipGuard, check_weights
from .precision import Precision
from .runs import (
    BEST_CHECKPOINT,
    CONFIG_FILE,
    LAST_CHECKPOINT,
    METRICS_FILE,
    PREV_CHECKPOINT,
    append_jsonl,
    atomic_write_text,
    load_latest_checkpoint,
    read_jsonl,
    save_checkpoint,
    truncate_metrics,
)
from .schedules import LR_SCHEDULES
from .selection import check_validator, evaluate_validators, running_best
from .steps import train_step
from .tensorboard import EventLog

ORACLE_NOTE = "computed with target labels: for evaluation only, never used for training or selection"


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


def build_optimizer(cfg: OptimConfig, net: DomainAdaptNet, pretrained: bool) -> torch.optim.Optimizer:
    """Two parameter groups, each with an ``lr_mult``: the backbone (×``backbone_lr_mult``) and everything else."""
    mult = cfg.backbone_lr_mult if cfg.backbone_lr_mult is not None else (0.1 if pretrained else 1.0)
    backbone, rest = net.param_groups()
    groups = [{"params": backbone, "lr_mult": mult}, {"params": rest, "lr_mult": 1.0}]
    groups = [g for g in groups if g["params"]]
    if cfg.name == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    if cfg.name in ("adam", "adamw"):
        cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        return cls(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise DannError(f"unknown optimizer optim.name={cfg.name!r}")  # config.OPTIMIZERS lists the valid ones


class Trainer:
    def __init__(self, cfg: Config, run_dir: str | Path | None = None, resume: bool = False) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.resume = resume
        self.device = resolve_device(cfg.train.device)
        self.events = EventLog(None)

    def fit(self, net: DomainAdaptNet, method: Method, data: DomainData) -> list[dict[str, Any]]:
        """Train ``net`` in place; returns the evaluation records of the whole run, as in ``metrics.jsonl``."""
        cfg, t = self.cfg, self.cfg.train
        # best.pt is kept only in a run directory: without one, a validator that needs source labels may be absent
        check_validator(cfg.selection.validator, data.source_val is not None or self.run_dir is None)
        net.to(self.device).train()
        amp = Precision(t.precision, self.device, t.channels_last)
        amp.prepare_model(net, t.compile)
        optimizer = build_optimizer(cfg.optim, net, cfg.model.pretrained or bool(cfg.model.pretrained_file))
        start, skipped = self._restore(net, optimizer, amp)
        augment, balanced, first = cfg.data.augment, cfg.data.balance_classes, start * t.accumulate  # see dann.steps
        source = step_batches(data.source_train, t.batch_size, t.seed, self.device, first, augment, balanced)
        target = (
            step_batches(data.target_train, t.batch_size, t.seed + 1, self.device, first, augment)
            if method.uses_target
            else None
        )
        lr_schedule = LR_SCHEDULES.get(cfg.optim.lr_schedule)
        history = read_jsonl(self.run_dir / METRICS_FILE) if self.resume and self.run_dir else []
        watch = LossWatch(t.on_nonfinite, t.log_every, self.device, skipped)
        guard = SkipGuard(net, optimizer) if t.on_nonfinite == "skip" else None
        self.events = EventLog(self.run_dir, t.tensorboard)
        train_time, logged, clip = 0.0, {}, cfg.optim.grad_clip
        bar = tqdm(total=t.steps, initial=start, disable=not t.progress, dynamic_ncols=True, desc=cfg.method.name)
        tic = time.perf_counter()
        for step in range(start, t.steps):
            progress = step / t.steps
            lr = cfg.optim.lr * lr_schedule(progress, cfg.optim.lr_alpha, cfg.optim.lr_beta)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_mult"]
            if guard:
                guard.snapshot()
            out = train_step(net, method, optimizer, source, target, step, progress, amp, t.accumulate, clip)
            finite = torch.isfinite(out.total.detach())
            if guard:
                guard.restore_unless(finite)
            watch.record(finite, out.terms)
            done = step + 1
            bar.update(1)
            evaluating = done % t.eval_every == 0 or done == t.steps
            if evaluating or done % t.log_every == 0:
                logged = watch.check(done) | {"lr": lr}  # raises on non-finite steps, before anything is saved
                bar.set_postfix({k: f"{v:.3g}" for k, v in logged.items()}, refresh=False)
                self.events.scalars(logged, done, "train")
            if evaluating:
                check_weights(net, done)
                train_time += time.perf_counter() - tic
                record = self._evaluate(net, data, done, logged, (done - start) / train_time, watch.skipped, history)
                history.append(record)
                self._save(net, optimizer, amp, data, record, done)
                tic = time.perf_counter()
        bar.close()
        self.events.close()
        return history

    def _restore(self, net: DomainAdaptNet, optimizer: torch.optim.Optimizer, amp: Precision) -> tuple[int, int]:
        """Set up the run directory; on resume load model, optimizer, GradScaler (fp16) and RNG state from the
        newest complete checkpoint. Returns (step, skipped steps so far)."""
        torch.manual_seed(self.cfg.train.seed)
        if self.run_dir is None:
            return 0, 0
        if not self.resume:
            atomic_write_text(self.run_dir / CONFIG_FILE, self.cfg.to_yaml())
            return 0, 0
        state = load_latest_checkpoint(self.run_dir, self.device)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        amp.load_state_dict(state.get("scaler"))
        torch.set_rng_state(state["rng"].cpu())
        truncate_metrics(self.run_dir / METRICS_FILE, state["step"])
        return int(state["step"]), int(state.get("skipped_steps", 0))

    def _evaluate(
        self,
        net: DomainAdaptNet,
        data: DomainData,
        step: int,
        train_terms: dict[str, float],
        steps_per_s: float,
        skipped: int,
        history: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """One ``metrics.jsonl`` record: train terms, source held-out accuracy, validator scores (no target labels),
        the best step so far by ``selection.validator``, and under ``oracle`` the target accuracy (target labels)."""
        bs, k, sel = self.cfg.train.eval_batch_size, data.num_classes, self.cfg.selection
        record: dict[str, Any] = {
            "step": step,
            "progress": step / self.cfg.train.steps,
            "train": train_terms,
            "steps_per_s": steps_per_s,
            "skipped_steps": skipped,  # steps whose update was discarded (train.on_nonfinite=skip), whole run
        }
        if data.source_val is not None:
            record["source_val"] = {"acc": evaluate_domain(net, data.source_val, k, bs)["acc"]}
        record["validators"] = evaluate_validators(net, data, sel.max_samples, bs)
        best = running_best(
            history[-1].get("selection") if history else None, step, record["validators"], sel.validator
        )
        if best is not None:
            record["selection"] = best
        if data.target_eval is not None:
            metrics = evaluate_domain(net, data.target_eval, k, bs)
            record["oracle"] = {
                "target_acc": metrics["acc"],
                "target_per_class_acc": metrics["per_class_acc"],
                "note": ORACLE_NOTE,
            }
        skipped = data.skipped_images()
        if skipped:
            record["skipped_images"] = {"count": len(skipped), "first": skipped[:10]}
        if self.run_dir is not None:
            append_jsonl(self.run_dir / METRICS_FILE, record)
        self.events.scalars({key: record[key] for key in ("source_val", "validators", "oracle") if key in record}, step)
        return record

    def _save(
        self,
        net: DomainAdaptNet,
        optimizer: torch.optim.Optimizer,
        amp: Precision,
        data: DomainData,
        record: dict[str, Any],
        step: int,
    ) -> None:
        if self.run_dir is None:
            return
        state = {
            "format": 1,
            "step": step,
            "model": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "scaler": amp.state_dict(),  # None unless train.precision=fp16
            "skipped_steps": record["skipped_steps"],
            "config": self.cfg.to_dict(),
            "meta": {
                "classes": data.classes,
                "input_shape": list(data.input_shape),
                "image": data.image.to_dict() if data.image is not None else None,
            },
            "selection": record.get("selection"),
        }
        # best.pt before last.pt: a crash between the two resumes from the older last.pt and rewrites best.pt
        if state["selection"] is not None and state["selection"]["step"] == step:
            save_checkpoint(self.run_dir / BEST_CHECKPOINT, state)
        save_checkpoint(self.run_dir / LAST_CHECKPOINT, state, previous=self.run_dir / PREV_CHECKPOINT)
