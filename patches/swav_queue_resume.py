"""swav_queue_resume: a SwAV run with a queue cannot resume, and would restart its queue empty.

Symptom: rerunning (resuming) a ``swav`` run with ``queue_size > 0`` fails with
``Unexpected key(s) in state_dict: "queue"``; and were it loaded, the queue would start
again from zeros, so the resumed run would not continue the one it resumes.
Cause: ``SwAV.on_train_start`` registers the queue (its length divided by the world
size), which runs after Lightning has loaded the checkpoint's weights into a model that
has no queue yet, and replaces any queue the model holds by zeros.
Fix: the queue exists from construction (one process's length); ``on_load_checkpoint``
gives it the checkpoint's shape before Lightning loads the weights; ``on_train_start``
keeps a queue whose shape fits this run's world size and creates a zero one otherwise.
"""
from __future__ import annotations

import torch

from unmix_ext.patches._core import Patch, register, replace

UPSTREAM = {
    "solo.methods.swav:SwAV.__init__": "cd71d721fc8b081925550243af19b4f8d4a9fa7d3ac41cf4be4bde6fbf0ea84e",
    "solo.methods.swav:SwAV.on_train_start": "a894b8b3f044c3244ba95f4f8c7e1ca637daaf177babaf8660a1129858f75b7a",
}


def _queue(model, length: int) -> torch.Tensor:
    """A zero queue: (2 large crops, length, proj_output_dim)."""
    return torch.zeros(2, length, model.proj_output_dim, device=model.device)


def with_queue(upstream_init):
    def __init__(self, *args, **kwargs):
        upstream_init(self, *args, **kwargs)
        if self.queue_size > 0:
            self.register_buffer("queue", _queue(self, self.queue_size))

    return __init__


def on_load_checkpoint(self, checkpoint: dict) -> None:
    queue = checkpoint["state_dict"].get("queue")
    if queue is not None:  # the shape the saving run had (its world size), so the weights load
        self.register_buffer("queue", torch.zeros_like(queue, device=self.device))


def keeping_the_queue(upstream_on_train_start):
    def on_train_start(self):
        queue = getattr(self, "queue", None)
        upstream_on_train_start(self)  # Sinkhorn-Knopp for the world size; a zero queue
        world_size = self.trainer.world_size if self.trainer else 1
        if queue is not None and queue.shape[1] == self.queue_size // world_size:
            self.queue = queue  # what the checkpoint held, or the constructor's zeros

    return on_train_start


def _apply() -> None:
    from solo.methods.swav import SwAV

    replace(SwAV, "__init__", with_queue(SwAV.__init__))
    replace(SwAV, "on_train_start", keeping_the_queue(SwAV.on_train_start))
    replace(SwAV, "on_load_checkpoint", on_load_checkpoint)


PATCH = register(Patch(
    name="swav_queue_resume",
    summary="SwAV with a queue cannot resume (queue created after the weights load) and restarts it empty",
    upstream=UPSTREAM,
    apply=_apply,
))
