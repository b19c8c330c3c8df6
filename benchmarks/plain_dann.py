"""A plain PyTorch DANN training loop, written the way most public DANN implementations are, as the reference for
``throughput.py --vs-plain``: a LeNet with the DANN paper's digit layers, a gradient-reversal ``autograd.Function``,
``TensorDataset`` + ``DataLoader(shuffle=True)`` loaders zipped per epoch, one forward per domain, log-softmax
outputs with ``NLLLoss`` (a two-way domain classifier), the paper's learning-rate and GRL schedules set by hand each
step, ``loss.item()`` read each step for the running loss, fp32. Written for this benchmark; no code copied."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha):
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.neg() * ctx.alpha, None


class PlainDANN(nn.Module):
    """The layers of ``dann``'s ``lenet`` network (conv5-32, pool, conv5-48, pool, fc-100, fc-100; a linear label
    head; a discriminator with one hidden layer of 100), with the usual two-way log-softmax outputs."""

    def __init__(self, in_chans: int = 1, flat: int = 768, num_classes: int = 10) -> None:
        super().__init__()
        self.feature = nn.Sequential(
            nn.Conv2d(in_chans, 32, 5), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Conv2d(32, 48, 5), nn.ReLU(True), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(flat, 100), nn.ReLU(True), nn.Linear(100, 100), nn.ReLU(True),
        )  # fmt: skip
        self.class_classifier = nn.Sequential(nn.Linear(100, num_classes), nn.LogSoftmax(dim=1))
        self.domain_classifier = nn.Sequential(nn.Linear(100, 100), nn.ReLU(True), nn.Linear(100, 2), nn.LogSoftmax(1))

    def forward(self, x: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.feature(x)
        return self.class_classifier(feature), self.domain_classifier(ReverseGradient.apply(feature, alpha))


class PlainLoop:
    """``run(steps)`` trains ``steps`` more steps of batch ``batch_size`` per domain on the given tensors."""

    def __init__(self, x_s: torch.Tensor, y_s: torch.Tensor, x_t: torch.Tensor, batch_size: int, total: int) -> None:
        torch.manual_seed(0)
        self.model = PlainDANN(x_s.shape[1], num_classes=int(y_s.max()) + 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        self.loss_class, self.loss_domain = nn.NLLLoss(), nn.NLLLoss()
        self.source = DataLoader(TensorDataset(x_s, y_s), batch_size=batch_size, shuffle=True, drop_last=True)
        self.target = DataLoader(TensorDataset(x_t), batch_size=batch_size, shuffle=True, drop_last=True)
        self.batches = iter(())
        self.step, self.total, self.running_loss = 0, total, 0.0

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        try:
            (x_s, y_s), (x_t,) = next(self.batches)
        except StopIteration:  # a new epoch
            self.batches = zip(self.source, self.target, strict=False)
            (x_s, y_s), (x_t,) = next(self.batches)
        return x_s, y_s, x_t

    def run(self, steps: int) -> None:
        self.model.train()
        for _ in range(steps):
            x_s, y_s, x_t = self.next_batch()
            p = self.step / self.total
            alpha = 2.0 / (1.0 + math.exp(-10 * p)) - 1
            for group in self.optimizer.param_groups:
                group["lr"] = 0.01 / (1.0 + 10 * p) ** 0.75
            self.optimizer.zero_grad()
            class_output, domain_s = self.model(x_s, alpha)
            _, domain_t = self.model(x_t, alpha)
            zeros = torch.zeros(len(x_s), dtype=torch.long)
            ones = torch.ones(len(x_t), dtype=torch.long)
            loss_domain = self.loss_domain(domain_s, zeros) + self.loss_domain(domain_t, ones)
            loss = self.loss_class(class_output, y_s) + loss_domain
            loss.backward()
            self.optimizer.step()
            self.running_loss += loss.item()
            self.step += 1
