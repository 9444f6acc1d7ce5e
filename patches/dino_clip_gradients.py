"""dino_clip_gradients: DINO's own clip_gradients shadows Lightning's.

Symptom: DINO fails in its first optimizer step with
``clip_gradients() got an unexpected keyword argument 'gradient_clip_val'``
(or a wrong number of arguments).
Cause: ``DINO.clip_gradients(self, clip)`` overrides
``LightningModule.clip_gradients(optimizer, gradient_clip_val, ...)``, which
Lightning 2 calls before every optimizer step.
Fix: DINO's per-parameter clipping moves to ``clip_encoder_gradients`` and
``on_after_backward`` calls it; ``clip_gradients`` is Lightning's again.
"""
from __future__ import annotations

from unmix_ext.patches._core import Patch, register, replace

UPSTREAM = {
    "solo.methods.dino:DINO.clip_gradients": "766908696e3e240893a27542106556b1f1d6e48cf9e926bd208de2bee5c23c86",
    "solo.methods.dino:DINO.on_after_backward": "d7db54ed468405f5056e5c3ace7efa02373605b07a326a03243b198df75bbc88",
}


def on_after_backward(self) -> None:
    """Clips the encoder's gradients, and drops the prototypes' while they are frozen."""
    if self.clip_grad:
        self.clip_encoder_gradients(self.clip_grad)
    if self.current_epoch < self.freeze_last_layer:
        for p in self.head.last_layer.parameters():
            p.grad = None


def _apply() -> None:
    from solo.methods.dino import DINO

    DINO.clip_encoder_gradients = DINO.clip_gradients
    del DINO.clip_gradients
    replace(DINO, "on_after_backward", on_after_backward)


PATCH = register(Patch(
    name="dino_clip_gradients",
    summary="DINO crashes: its clip_gradients(clip) overrides Lightning's clip_gradients",
    upstream=UPSTREAM,
    apply=_apply,
))
