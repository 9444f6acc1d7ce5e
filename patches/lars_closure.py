"""lars_closure: LARS and weight decay silently do nothing under Lightning.

Symptom: none visible: training runs, but with ``lars=True`` the update is plain
SGD with momentum, without the layer-wise trust ratio and without weight decay.
Cause: Lightning calls ``optimizer.step(closure)``, and the closure runs the
training step and ``backward``. ``LARSWrapper.step`` rescales ``p.grad`` (and
zeroes each group's ``weight_decay``) before calling the wrapped optimizer with
the closure, so it rescales the previous step's gradients, which the closure then
zeroes and replaces; the wrapped SGD steps on the fresh, unscaled gradients with
weight decay 0.
Fix: run the closure first (with gradients enabled), then rescale the fresh
gradients with upstream's ``update_p``, then step the wrapped optimizer.
"""
from __future__ import annotations

import torch

from unmix_ext.patches._core import function_patch

TARGET = "solo.utils.lars:LARSWrapper.step"


@torch.no_grad()
def step(self, closure=None):
    loss = None
    if closure is not None:
        with torch.enable_grad():
            loss = closure()
    weight_decays = [group.get("weight_decay", 0) for group in self.optim.param_groups]
    for group, weight_decay in zip(self.optim.param_groups, weight_decays):
        # update_p folds weight decay into the gradient; the wrapped optimizer must not add it again
        group["weight_decay"] = 0
        for p in group["params"]:
            if p.grad is not None and (p.ndim != 1 or not self.exclude_bias_n_norm):
                self.update_p(p, group, weight_decay)
    self.optim.step()
    for group, weight_decay in zip(self.optim.param_groups, weight_decays):
        group["weight_decay"] = weight_decay
    return loss


PATCH = function_patch(
    name="lars_closure",
    summary="LARS and weight decay are skipped: gradients are rescaled before Lightning's closure runs",
    upstream={TARGET: "2a5c879f22451a933417d67a307dc020b8119102e3b641a5dc5dc12bd58e8d01"},
    replacements={TARGET: step},
)
