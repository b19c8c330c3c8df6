"""The only training loop. Steps, not epochs: progress ``p = step / steps`` drives every schedule.

Per step (``steps``): a term's ``refresh`` when it is due (SHOT clusters the whole target set once per epoch), one batch
per domain per micro-batch (a pure function of the step), ``method.loss`` under autocast (``precision``), backward,
optimizer step. No host-device synchronization except in a refresh, every ``log_every`` steps (progress bar, non-finite
check, the training terms' means over the steps since the last log step → one JSON line in ``train.jsonl``) and every
``eval_every`` steps (the same, then evaluation and validator scores → one JSON line in ``metrics.jsonl`` → atomic
checkpoints: ``last.pt`` (the previous one kept as ``prev.pt``), and ``best.pt`` when the
``selection.validator`` score is the best so far; see ``selection.validators``). Both intervals are ``auto`` by
default, set by the run's length (``cadence``). Non-finite losses: see ``nonfinite``.
Under torchrun the same loop runs in every process, with DistributedDataParallel and rank 0 writing: see
``distributed``. With ``train.stages`` the steps are split into stages, each with its own method, batch streams and
schedules, and each ending with an evaluation: see ``stages`` (a run without them is one stage, the loop as it always
was)."""

from __future__ import annotations

import math
import signal
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from ..config import Config, OptimConfig
from ..data.domains import DomainData
from ..data.fingerprint import write_data_fingerprint
from ..data.loaders import step_batches
from ..errors import DannError, DataWarning, TrainingInterrupted
from ..evaluation.metrics import evaluate_domain, labeled_accuracy
from ..methods.base import Method, evaluated_with, target_ratio
from ..models.network import DomainAdaptNet, recompute_batchnorm
from ..runs import (
    BEST_CHECKPOINT,
    CONFIG_FILE,
    LAST_CHECKPOINT,
    METRICS_FILE,
    PREV_CHECKPOINT,
    TRAIN_LOG_FILE,
    Checkpoint,
    append_jsonl,
    atomic_write_text,
    load_latest_checkpoint,
    read_jsonl,
    reconcile_best,
    truncate_metrics,
)
from ..selection.validators import check_validator, evaluate_validators, running_best, selecting_validator
from .feedback import Console, Echo, RunSummary, bar_interval, summarize
from .interrupt import StopRequest
from .nonfinite import LossWatch, SkipGuard, check_weights
from .precision import Precision
from .seeds import derive_seed
from .stages import Stage, StagePlan, bind_stages, keep_stage_checkpoint, part_streams, plan_stages, target_stream
from .steps import Batches, MethodLoss, train_step
from .tensorboard import EventLog

if TYPE_CHECKING:
    from ..plan import RunPlan

ORACLE_NOTE = "computed with target labels: for evaluation only, never used for training or selection"


def rng_state(device: torch.device) -> dict[str, torch.Tensor | None]:
    """This process's RNG states: the CPU generator and, on a GPU, that device's."""
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_state(state: dict[str, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"].cpu())  # type: ignore[union-attr]
    if state.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)  # type: ignore[union-attr]


def build_optimizer(cfg: OptimConfig, net: DomainAdaptNet, pretrained: bool) -> torch.optim.Optimizer:
    """Parameter groups, each with an ``lr_mult``: the backbone (×``backbone_lr_mult``), the discriminator
    (×``discriminator_lr_mult``, its own group only when that is not 1) and everything else."""
    mult = cfg.backbone_lr_mult if cfg.backbone_lr_mult is not None else (0.1 if pretrained else 1.0)
    backbone, rest = net.param_groups()
    groups = [{"params": backbone, "lr_mult": mult}, {"params": rest, "lr_mult": 1.0}]
    if cfg.discriminator_lr_mult != 1.0:
        own = {id(p) for p in net.discriminator.parameters()}
        groups[1]["params"] = [p for p in rest if id(p) not in own]
        groups.append({"params": [p for p in rest if id(p) in own], "lr_mult": cfg.discriminator_lr_mult})
    groups = [g for g in groups if g["params"]]
    if cfg.name == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    if cfg.name in ("adam", "adamw"):
        cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        return cls(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise DannError(f"unknown optimizer optim.name={cfg.name!r}")  # config.OPTIMIZERS lists the valid ones


def batch_streams(
    cfg: Config,
    data: DomainData,
    uses_target: bool,
    start: int,
    device: torch.device,
    rows: tuple[int, int],
    uses_source: bool = True,
    ratio: int = 1,
) -> tuple[Batches | None, Batches | None]:
    """The source and target batch streams of a run resumed at step ``start`` (None for a domain the method does not
    read): ``rows``, this process's rows of each step's global batch (``dann.training.distributed``); ``ratio``:
    target rows per source row (``methods.base.target_ratio``), so the target's global batch is ``ratio`` ×
    ``train.batch_size`` and this process reads ``ratio`` × its rows of it."""
    t, augment, balanced, share = cfg.train, cfg.data.augment, cfg.data.balance_classes, uses_source + uses_target
    first = start * t.accumulate  # micro-batch indices: see dann.training.steps
    seed, source, target = derive_seed(t.seed, "data"), None, None
    if uses_source:
        source = step_batches(
            data.source_train, t.batch_size, seed, device, first, augment, balanced, rows, share, cfg.data.invert
        )
    if uses_target:
        target = target_stream(cfg, data, seed + 1, device, first, rows, share, ratio)
    return source, target


def stage_streams(
    cfg: Config, data: DomainData, stage: Stage, start: int, device: torch.device, rows: tuple[int, int]
) -> tuple[Batches | None, Batches | None]:
    """The streams of ``stage`` from step ``start``: those of ``batch_streams`` in a run without ``train.stages``,
    else one per labeled domain the stage reads and the target's (``dann.training.stages``)."""
    if stage.parts is None:
        m = stage.method
        ratio = target_ratio(m.cfg)
        return batch_streams(cfg, data, m.uses_target, start, device, rows, uses_source=m.uses_source, ratio=ratio)
    return part_streams(cfg, data, stage, start, device, rows)


class Trainer:
    """Trains per ``plan`` (``dann.plan.RunPlan``: the resolved config, this process's device, place in a torchrun
    launch, rows, seeds and threads); with ``run_dir`` its files go there (``resume`` continues them). ``echo``
    receives the start-up summary, the time estimate and one line per evaluation (``feedback``); SIGINT and SIGTERM
    stop the run with a checkpoint (``interrupt``)."""

    def __init__(
        self, plan: RunPlan, run_dir: str | Path | None = None, resume: bool = False, echo: Echo | None = None
    ) -> None:
        self.run_plan = plan
        self.cfg = plan.config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.resume = resume
        self.world = plan.world
        self.device = plan.device
        self.writes = self.run_dir is not None and self.world.main  # only rank 0 writes files
        self.events = EventLog(None)
        self.warned: set[str] = set()  # what this run has warned about (validators without a score...), once each
        self.plan: StagePlan | None = None  # the run's stages (one without train.stages), set by fit
        self.echo = echo
        self.summary: RunSummary | None = None  # set when training starts
        self.stop = StopRequest(self.world)

    def fit(
        self, net: DomainAdaptNet, method: Method, data: DomainData, stages: StagePlan | None = None
    ) -> list[dict[str, Any]]:
        """Train ``net`` in place; returns the evaluation records of the whole run, as in ``metrics.jsonl``.
        ``stages``: the run's stages as the caller planned (and bound) them, ``plan_stages(cfg, method, data)``
        when None; ``dann.fit`` passes its own so that what each stage built once (CLIP's teacher) is not built
        again. Joins the process group for the run when torchrun started several processes and none is joined yet."""
        joined = self.world.start(self.device)
        threads = torch.get_num_threads()  # the caller's, put back when the run ends
        torch.set_num_threads(self.run_plan.threads.count)
        try:
            with self.stop:
                history = self._fit(net, method, data, stages)
        except BaseException:
            if joined:  # the others may be stuck in a collective: leave at once; torchrun stops them when we exit
                self.world.stop(wait=False)
            raise
        finally:
            torch.set_num_threads(threads)
        if joined:
            self.world.stop()
        return history

    def _fit(
        self, net: DomainAdaptNet, method: Method, data: DomainData, stages: StagePlan | None
    ) -> list[dict[str, Any]]:
        cfg, t, world = self.cfg, self.cfg.train, self.world
        # best.pt is kept only in a run directory: without one, a validator that needs source labels may be absent
        check_validator(cfg.selection.validator, data.source_val is not None or self.run_dir is None)
        self.plan = plan = stages or plan_stages(cfg, method, data)  # one stage, `method`, without train.stages
        net.to(self.device).train()
        amp = Precision(t.precision, self.device, bool(t.channels_last))
        amp.prepare_model(net, t.compile)
        # class names, image preparation (CLIP's teacher builds its prompts from them)
        bind_stages(plan, data, cfg, self.echo if world.main else None)
        plan.prepare(net)  # after any model.init_from weights (dann.api.fit) and before the optimizer sees them
        optimizer = build_optimizer(cfg.optim, net, cfg.model.pretrained or bool(cfg.model.pretrained_file))
        start, skipped, history = self._restore(net, optimizer, amp, plan)
        if self.writes:  # beside config.yaml: what the run adapts to, so that runs can be compared (data.fingerprint)
            write_data_fingerprint(self.run_dir, data, cfg.data.target or cfg.data.task)
        stage: Stage | None = None
        watch = LossWatch(t.on_nonfinite, t.log_every, self.device, skipped)
        watch.saved = start if self.resume and self.run_dir is not None else None  # resumed from that checkpoint
        guard = SkipGuard(net, optimizer) if t.on_nonfinite == "skip" else None
        self.events = EventLog(self.run_dir if self.writes else None, t.tensorboard)
        train_time, logged, clip = 0.0, {}, cfg.optim.grad_clip
        self.summary = summarize(cfg, data, self.device, world, self.run_plan.input_note, start)
        console = Console(self.echo if world.main else None, cfg, data, self.device)
        console.started(self.summary)
        show = t.progress and world.main
        bar = tqdm(
            total=t.steps, initial=start, disable=not show, dynamic_ncols=True, desc=cfg.method.name,
            mininterval=bar_interval(),
        )  # fmt: skip
        tic, final = time.perf_counter(), None
        for step in range(start, t.steps):
            if stage is None or step >= stage.end:  # the first step, or a new stage: its method, model and streams
                stage = plan.enter(step, net)
                # a method that never runs the discriminator: DDP must be told some parameters get no gradient
                unused = not stage.method.uses_discriminator
                model = world.wrap(MethodLoss(net, stage.method), self.device, find_unused_parameters=unused)
                source, target = stage_streams(cfg, data, stage, step, self.device, self.run_plan.rows)
                target_rows = t.batch_size * target_ratio(stage.method.cfg) * t.accumulate
                epoch_steps = max(1, math.ceil(len(data.target_train) / target_rows))  # steps of one target pass
                bar.set_description(stage.name or cfg.method.name, refresh=False)
            progress = stage.progress(step)
            lr = stage.lr(step)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_mult"]
            # a term that keeps statistics of the whole target set recomputes them when due (SHOT: once per epoch)
            stage.method.refresh(net, data.target_train, step, epoch_steps, t.eval_batch_size)
            if guard:
                guard.snapshot()
            out = train_step(model, optimizer, source, target, step, progress, amp, t.accumulate, clip)
            finite = world.all_true(torch.isfinite(out.total.detach()))  # every rank takes the same decision
            if guard:
                guard.restore_unless(finite)
            stage.method.after_step(net)
            watch.record(finite, out.terms)
            done = step + 1
            bar.update(1)
            console.stepped(done)
            evaluating = done % t.eval_every == 0 or done == t.steps or done == stage.end
            if evaluating or done % t.log_every == 0:
                logged = world.mean(watch.check(done)) | {"lr": lr}  # raises on non-finite steps, before any save
                bar.set_postfix({k: f"{v:.3g}" for k, v in logged.items()}, refresh=False)
                self.events.scalars(logged, done, "train")
                if self.writes:
                    append_jsonl(self.run_dir / TRAIN_LOG_FILE, {"step": done, "train": logged} | plan.record(done))
            if evaluating:
                world.sync_buffers(net)  # the model every rank evaluates is rank 0's, the one saved
                check_weights(net, done, watch.saved)
                toc = time.perf_counter()
                train_time += toc - tic
                rate = (done - start) / train_time
                weights = self._eval_weights(net, data, plan)
                final = weights if done == t.steps else None  # what the trained net will predict with
                with evaluated_with(net, weights):  # a method's EMA teacher, target BatchNorm statistics (adabn)
                    if weights is not None:  # a teacher's buffers follow each process's batches: use rank 0's
                        world.sync_buffers(net)
                    record = self._evaluate(net, data, done, logged, rate, watch.skipped, history)
                history.append(record)
                rng = world.gather_objects(rng_state(self.device))
                self._save(net, optimizer, amp, data, record, done, rng, plan, weights)
                if self.writes and plan.staged and done == stage.end:
                    keep_stage_checkpoint(self.run_dir, stage.name)  # type: ignore[arg-type]
                watch.saved = done if self.run_dir is not None else None
                tic = time.perf_counter()
                console.evaluated(record, tic - toc)
            if done < t.steps and self.stop.requested(evaluating or done % t.log_every == 0):
                bar.close()
                self._interrupt(net, optimizer, amp, data, plan, watch, history, done)
        bar.close()
        self.events.close()
        if start == t.steps:  # a finished run resumed: nothing was evaluated above
            final = self._eval_weights(net, data, plan)
        if final is not None:  # the net predicts as its checkpoints do (computed once: AdaBN reads the whole target)
            net.load_state_dict(final)
        world.barrier()  # every process returns once rank 0 has written the last checkpoint (fit() then stops)
        return history

    def _interrupt(
        self,
        net: DomainAdaptNet,
        optimizer: torch.optim.Optimizer,
        amp: Precision,
        data: DomainData,
        plan: StagePlan,
        watch: LossWatch,
        history: list[dict[str, Any]],
        done: int,
    ) -> None:
        """Stop on a signal after step ``done``: write its checkpoint through ``_save`` (unless that step's evaluation
        has just written it), then raise ``TrainingInterrupted``. Non-finite steps since the last check stop the run
        first, as at a log step, so no checkpoint of bad weights is ever written."""
        if self.run_dir is not None and watch.saved != done:
            if watch.count:
                watch.check(done)
            self.world.sync_buffers(net)
            check_weights(net, done, watch.saved)
            rng = self.world.gather_objects(rng_state(self.device))
            record = {"skipped_steps": watch.skipped, "selection": history[-1].get("selection") if history else None}
            self._save(net, optimizer, amp, data, record, done, rng, plan, self._eval_weights(net, data, plan))
        self.events.close()
        self.world.barrier()  # no process leaves before rank 0 has written the checkpoint
        checkpoint = str(self.run_dir / LAST_CHECKPOINT) if self.run_dir is not None else None
        raise TrainingInterrupted(done, self.cfg.train.steps, checkpoint, self.stop.signal or signal.SIGTERM)

    def _restore(
        self, net: DomainAdaptNet, optimizer: torch.optim.Optimizer, amp: Precision, method: Method
    ) -> tuple[int, int, list[dict[str, Any]]]:
        """Set up the run directory; on resume load model, optimizer, GradScaler (fp16), the method's state (an EMA
        teacher, cluster centres) and RNG states from the newest complete checkpoint (in every process), and make
        ``best.pt`` agree with the records kept (``runs.reconcile_best``). Returns (step, skipped steps so far,
        evaluation records up to that step)."""
        torch.manual_seed(self.run_plan.seeds["train"])  # not the init stream
        if self.run_dir is None:
            return 0, 0, []
        if not self.resume:
            if self.writes:
                atomic_write_text(self.run_dir / CONFIG_FILE, self.cfg.to_yaml())
            return 0, 0, []
        state = load_latest_checkpoint(self.run_dir, self.device)
        net.load_state_dict(state.model)
        if self.writes:  # once the state fits: it records the settings a resume may change (config.RESUMABLE)
            atomic_write_text(self.run_dir / CONFIG_FILE, self.cfg.to_yaml())
        optimizer.load_state_dict(state.optimizer)
        amp.load_state_dict(state.scaler)
        method.load_state_dict(state.method)
        ranks = state.rng_ranks or []
        if self.world.active and len(ranks) == self.world.size:
            set_rng_state(ranks[self.world.rank], self.device)
        elif self.world.main:  # other ranks of a run resumed on a new number of processes keep their fresh seeds
            set_rng_state({"cpu": state.rng, "cuda": state.rng_cuda}, self.device)
        step = int(state.step)
        if self.writes:
            truncate_metrics(self.run_dir / METRICS_FILE, step)
            truncate_metrics(self.run_dir / TRAIN_LOG_FILE, step)
        history = [r for r in read_jsonl(self.run_dir / METRICS_FILE) if r.get("step", 0) <= step]
        if self.writes:
            reconcile_best(self.run_dir, state, history[-1].get("selection") if history else None)
        return step, int(state.skipped_steps), history

    def _eval_weights(self, net: DomainAdaptNet, data: DomainData, plan: StagePlan) -> dict[str, Any] | None:
        """The weights the run evaluates, checkpoints as ``eval_model`` and predicts with: the method's (an EMA
        teacher) or None for the trained ones; with ``model.adabn``, those with every BatchNorm layer's statistics
        recomputed on the target training set (``models.network.recompute_batchnorm``; every process reads all of
        it, so all get the same statistics)."""
        weights = plan.eval_weights()
        if not self.cfg.model.adabn:
            return weights
        with evaluated_with(net, weights):
            return recompute_batchnorm(net, data.target_train.batches(self.cfg.train.eval_batch_size), self.device)

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
        the best step so far by ``selection.validator`` (or its fallback, see ``_validate``), and under ``oracle``
        the target accuracy (target labels)."""
        bs, k = self.cfg.train.eval_batch_size, data.num_classes
        record: dict[str, Any] = {
            "step": step,
            "progress": step / self.cfg.train.steps,
            "train": train_terms,
            "steps_per_s": steps_per_s,
            "skipped_steps": skipped,  # steps whose update was discarded (train.on_nonfinite=skip), whole run
        }
        if self.world.active:
            record["processes"] = self.world.size
        record |= self.plan.record(step) if self.plan is not None else {}  # the stage, in a run of train.stages
        if data.source_val is not None:
            record["source_val"] = {"acc": evaluate_domain(net, data.source_val, k, bs, self.world)["acc"]}
        record |= labeled_accuracy(net, data, bs, self.world)  # per labeled domain, when there are several
        record["validators"], best = self._validate(net, data, history[-1].get("selection") if history else None, step)
        if best is not None:
            record["selection"] = best
        if data.target_eval is not None:
            metrics = evaluate_domain(net, data.target_eval, k, bs, self.world)
            record["oracle"] = {
                "target_acc": metrics["acc"],
                "target_per_class_acc": metrics["per_class_acc"],
                "note": ORACLE_NOTE,
            }
        skipped = self.world.union(data.skipped_images())  # each process reads only its own shard
        if skipped:
            record["skipped_images"] = {"count": len(skipped), "first": skipped[:10]}
        if self.writes:
            append_jsonl(self.run_dir / METRICS_FILE, record)
        self.events.scalars({key: record[key] for key in ("source_val", "validators", "oracle") if key in record}, step)
        return record

    def _validate(
        self, net: DomainAdaptNet, data: DomainData, previous: dict[str, Any] | None, step: int
    ) -> tuple[dict[str, float | None], dict[str, Any] | None]:
        """Every validator's score (None where one cannot be computed on this data, with one warning per validator
        and run) and the best checkpoint so far, chosen by ``selection.validator`` or, when it has no score, by a
        fallback (``selection.selecting_validator``; one warning says which)."""
        sel, problems = self.cfg.selection, {}
        scores = evaluate_validators(net, data, sel.max_samples, self.cfg.train.eval_batch_size, self.world, problems)
        for name, problem in problems.items():
            self._warn_once(name, f"validator {name} cannot be computed on this data ({problem}); its score is null")
        chosen = selecting_validator(sel.validator, previous, scores)
        if chosen != sel.validator:
            self._warn_once(
                "selection",
                f"selection.validator={sel.validator} has no score on this data, so best.pt is chosen by {chosen}: "
                "the first validator with a score in the order of the selection benchmark (docs/selection.md)",
            )
        return scores, running_best(previous, step, scores, chosen)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            warnings.warn(message, DataWarning, stacklevel=3)

    def _save(
        self,
        net: DomainAdaptNet,
        optimizer: torch.optim.Optimizer,
        amp: Precision,
        data: DomainData,
        record: dict[str, Any],
        step: int,
        rng: list[dict[str, torch.Tensor | None]],
        method: Method,
        eval_model: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Write ``best.pt`` (when this step is the validator's best) and ``last.pt``; ``rng`` holds every rank's RNG
        states, ``eval_model`` the weights the run evaluates with when they are not the trained ones."""
        if not self.writes:
            return
        state = Checkpoint(
            step=step,
            model=net.state_dict(),
            optimizer=optimizer.state_dict(),
            rng=rng[0]["cpu"],  # type: ignore[arg-type]
            rng_cuda=rng[0]["cuda"],
            rng_ranks=rng if len(rng) > 1 else None,  # under torchrun: every rank's, in rank order
            config=self.cfg.to_dict(),
            meta={
                "classes": data.classes,
                "input_shape": list(data.input_shape),
                "image": data.image.to_dict() if data.image is not None else None,
                "scale": data.scale.to_dict() if data.scale is not None else None,
                "domains": [d.name for d in data.domains],  # the labeled domains, in the order of their index d
            },
            scaler=amp.state_dict(),
            method=method.state_dict(),
            skipped_steps=record["skipped_steps"],
            selection=record.get("selection"),
            eval_model=eval_model,
        )
        # best.pt before last.pt: a crash between the two resumes from the older last.pt and rewrites best.pt
        if state.selection is not None and state.selection["step"] == step:
            state.save(self.run_dir / BEST_CHECKPOINT)
        state.save(self.run_dir / LAST_CHECKPOINT, previous=self.run_dir / PREV_CHECKPOINT)
