"""Source-only training: the control every adaptation result is compared against. The target batch is not
forwarded at all, so not even BatchNorm statistics see the target domain."""

from __future__ import annotations

from ..models.network import DomainAdaptNet
from .base import METHODS, Batch, LossOutput, Method, classification_loss


@METHODS.register("source_only")
class SourceOnly(Method):
    uses_target = False

    def loss(self, net: DomainAdaptNet, batch: Batch, progress: float) -> LossOutput:
        logits_s = net(batch.x_s)
        cls = classification_loss(logits_s, batch.y_s, batch.w_s, self.cfg.label_smoothing)
        return LossOutput(cls, {"cls": cls.detach()})
