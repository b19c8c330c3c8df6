"""The cost of the CLIP teacher: the training step of a CLIP image tower (timm) with DANN alone, and with the
``clip_distill`` regularizer (a frozen OpenCLIP zero-shot teacher on the target batch), on the CPU. Random weights,
random images in memory: nothing is downloaded, and speed does not depend on the weights.

    python benchmarks/clip_step.py                                              # ViT-M/32 tower and teacher, 224 px
    python benchmarks/clip_step.py --backbone vit_base_patch16_clip_224 --clip-model ViT-B-16 --batch-size 2

Variants, timed in alternating rounds of ``--steps`` steps (alternating, so that a machine whose load changes slows
every variant alike); the fastest step of each variant and the median are printed, the fastest being the one least
disturbed by other processes on a shared machine (as ``dann bench`` counts):

- ``dann``: the step without the teacher;
- ``dann + clip_distill``: the teacher's forward on the target batch (no gradient), the prompts' text embeddings
  computed once and kept (what training does; target batches augmented, so no per-image cache);
- ``... text re-embedded each step``: the same with the text embeddings thrown away before every step, what the
  cache saves;
- ``... teacher logits kept per image``: unaugmented target batches, whose teacher logits are kept by image index;
  timed once every target image has been seen (from the second pass over the target on);
- ``teacher forward alone``: the teacher's logits of one target batch, outside any step: its share of the step.

The goal: the teacher costs at most 1.3× the step without it, with the text embeddings cached. The teacher's
forward is one image-tower forward on B_t images, the step a forward and backward of the student on B_s + B_t: about
1/6 more when the two towers are the same size."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
import warnings

import numpy as np
import torch

from dann.config import load_config
from dann.data import as_domain, make_domain_data
from dann.data.loaders import step_batches
from dann.errors import DataWarning
from dann.methods import build_network, create_method
from dann.training.precision import Precision
from dann.training.steps import MethodLoss, train_step
from dann.training.trainer import build_optimizer

CLASSES = ["diatom", "ciliate", "copepod", "detritus", "radiolarian", "dinoflagellate", "fecal pellet", "egg"]
KEPT = "dann + clip_distill, data.augment=false: teacher logits kept per image"
VARIANTS = ("dann", "dann + clip_distill", "dann + clip_distill, text re-embedded each step", KEPT)
ALONE = "teacher forward alone (one target batch)"


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vit_medium_patch32_clip_224", help="the student: a timm CLIP tower")
    parser.add_argument("--clip-model", default="ViT-M-32", help="the teacher: an OpenCLIP architecture")
    parser.add_argument("--batch-size", type=int, default=4, help="per domain and step (4)")
    parser.add_argument("--steps", type=int, default=1, help="timed steps per round and variant (1)")
    parser.add_argument("--rounds", type=int, default=8, help="rounds, each variant once per round (8)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0: torch's own")
    return parser.parse_args()


def variant(name: str, args: argparse.Namespace, data, device: torch.device):
    """(model, optimizer, source stream, target stream, teacher or None) of one variant."""
    regularizers = {"clip_distill": 1.0} if "clip" in name else {}
    cfg = load_config(
        values={
            "model": {"backbone": args.backbone},
            "method": {"name": "dann", "regularizers": regularizers, "clip_model": args.clip_model},
            "train": {"batch_size": args.batch_size, "device": "cpu", "precision": "fp32", "progress": False},
            "data": {"augment": name != KEPT},
        }
    )
    torch.manual_seed(0)
    method = create_method(cfg.method)
    net = build_network(cfg.model, cfg.method, data.input_shape, data.num_classes).to(device).train()
    method.bind(data, cfg, None)
    method.prepare(net)
    optimizer = build_optimizer(cfg.optim, net, False)
    augment = cfg.data.augment
    source = step_batches(data.source_train, args.batch_size, 0, device, augment=augment)
    target = step_batches(data.target_train, args.batch_size, 1, device, augment=augment)
    teacher = method.terms[-1][2].teacher if regularizers else None
    if name == KEPT:  # the first pass over the target, untimed: every image's logits are then kept
        method.terms[-1][2].teacher_logits(data.target_train.x, torch.arange(len(data.target_train)))
    return MethodLoss(net, method), optimizer, source, target, teacher


def main() -> None:
    args = options()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, rng = torch.device("cpu"), np.random.default_rng(0)
    n, side = 8 * args.batch_size, 224
    x_s, y_s = rng.random((n, 3, side, side), dtype=np.float32), rng.integers(0, len(CLASSES), n)
    x_t = rng.random((n, 3, side, side), dtype=np.float32)
    data = make_domain_data(as_domain(x_s, y_s), as_domain(x_t, None), classes=CLASSES, val_fraction=0.1)
    amp = Precision("fp32", device, False)
    warnings.simplefilter("ignore", DataWarning)  # random weights: the teacher is noise, which costs the same
    with torch.random.fork_rng(devices=[]):
        runs = {name: variant(name, args, data, device) for name in VARIANTS}
    times: dict[str, list[float]] = {name: [] for name in (*VARIANTS, ALONE)}
    teacher, x_t = runs[VARIANTS[1]][4], data.target_train.x[: args.batch_size]
    step = 0
    for _ in range(args.rounds + 1):  # the first round warms up, untimed
        for name, (model, optimizer, source, target, own) in runs.items():
            for _ in range(args.steps):
                if own is not None and "re-embedded" in name:
                    own.text = torch.empty(0)  # thrown away: the next forward embeds the prompts again
                tic = time.perf_counter()
                train_step(model, optimizer, source, target, step, 0.5, amp)
                times[name].append(time.perf_counter() - tic)
            step += 1
        for _ in range(args.steps):
            tic = time.perf_counter()
            teacher(x_t)
            times[ALONE].append(time.perf_counter() - tic)
    timed = {name: times[name][args.steps :] for name in times}  # the warm-up round left out
    fastest, median = min(timed["dann"]), statistics.median(timed["dann"])
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    print(f"# {command}")
    print(
        f"# torch {torch.__version__}, CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f}; student {args.backbone}, "
        f"teacher OpenCLIP {args.clip_model}, {len(CLASSES)} classes × {len(runs[VARIANTS[1]][4].prompts)} prompts, "
        f"batch {args.batch_size} per domain, {side} px, fp32; {args.rounds} rounds × {args.steps} steps"
    )
    print("| variant | fastest s/step | × dann | median s/step | × dann |")
    print("| --- | --- | --- | --- | --- |")
    for name in (*VARIANTS, ALONE):
        low, mid = min(timed[name]), statistics.median(timed[name])
        print(f"| {name} | {low:.3f} | {low / fastest:.2f} | {mid:.3f} | {mid / median:.2f} |")


if __name__ == "__main__":
    main()
