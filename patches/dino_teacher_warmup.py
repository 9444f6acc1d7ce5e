"""dino_teacher_warmup: DINO cannot be built when the teacher warm-up outlasts training.

Symptom: ``DINO(...)`` with ``warmup_teacher_temperature_epochs`` greater than
``max_epochs`` (any short run with the default 50 warm-up epochs) fails deep in
numpy with "negative dimensions are not allowed".
Cause: ``DINOLoss.__init__`` builds the per-epoch teacher temperature schedule as
``linspace(warm-up) + ones(num_epochs - warmup_epochs)``.
Fix: build the schedule over ``max(num_epochs, warmup_epochs)`` epochs and keep the
first ``num_epochs``: a run shorter than the warm-up ends while still warming up.
"""
from __future__ import annotations

from unmix_ext.patches._core import wrapping_patch

TARGET = "solo.losses.dino:DINOLoss.__init__"


@wrapping_patch(
    name="dino_teacher_warmup",
    summary="DINO with warm-up epochs > max_epochs fails: negative schedule length",
    target=TARGET, sha256="7693dd428cedd0bd0dbe5f2b91327b4a1d2ef955c05eb559f5ba23964ae2a5e9",
)
def _wrap(upstream):
    def __init__(self, num_prototypes, warmup_teacher_temp, teacher_temp,
                 warmup_teacher_temp_epochs, num_epochs, *args, **kwargs):
        full = max(num_epochs, int(warmup_teacher_temp_epochs))
        upstream(self, num_prototypes, warmup_teacher_temp, teacher_temp,
                 warmup_teacher_temp_epochs, full, *args, **kwargs)
        self.teacher_temp_schedule = self.teacher_temp_schedule[:max(1, num_epochs)]

    return __init__
