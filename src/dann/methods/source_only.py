"""Source-only training: the control every adaptation result is compared against. The target batch is not
forwarded at all, so not even BatchNorm statistics see the target domain."""

from __future__ import annotations

from ..models.network import DomainAdaptNet
from .base import METHODS, Batch, LossOutput, Method, classification_loss


@METHODS.register("source_only")
class SourceOnly(Method):
    """Cross-entropy on the source batch alone. Its network has no bottleneck unless given one: a BatchNorm layer
    that only ever sees the source can make the control brittle on the target (``--control`` trains it on the
    network of the run it controls, bottleneck included)."""

    uses_target = False
    bottleneck = 0

    def loss(self, net: DomainAdaptNet, batch: Batch, progress: float) -> LossOutput:
        logits_s = net(batch.x_s)
        cls = classification_loss(logits_s, batch.y_s, batch.w_s, self.cfg.label_smoothing)
        return LossOutput(cls, {"cls": cls.detach()})
