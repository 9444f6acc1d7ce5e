"""Keyword arguments for solo-learn methods, from solo-learn's own defaults.

solo-learn 1.0.2 builds a method from argparse: each method's
``add_model_specific_args`` declares its options with defaults, and
``solo.args.utils.additional_setup_pretrain`` derives the rest (number of
classes, backbone arguments, crop counts). :func:`method_kwargs` does the same
without a command line, so the defaults live in one place: solo-learn's.
"""
from __future__ import annotations

import argparse
from typing import Any, Dict

# argparse options that configure the command line or the logger, not the method
_NOT_METHOD_ARGS = {
    "name", "project", "entity", "wandb", "offline", "num_workers",
    "zero_init_residual", "patch_size", "encode_indexes_into_labels",
}


def solo_defaults(method_cls) -> Dict[str, Any]:
    """The defaults that ``method_cls.add_model_specific_args`` declares."""
    parser = argparse.ArgumentParser(add_help=False)
    method_cls.add_model_specific_args(parser)
    defaults = vars(parser.parse_args(["--optimizer", "sgd", "--encoder", "resnet18"]))
    return {k: v for k, v in defaults.items() if k not in _NOT_METHOD_ARGS}


def method_kwargs(method_cls, *, num_classes: int, cifar: bool, max_epochs: int,
                  num_large_crops: int = 2, num_small_crops: int = 0,
                  **overrides) -> Dict[str, Any]:
    """All constructor arguments of ``method_cls``: solo's defaults, derived values, overrides.

    Args:
        method_cls: a class from ``solo.methods.METHODS``.
        num_classes: classes of the labelled split (online linear classifier, kNN).
        cifar: use the CIFAR stem (3x3 conv, no max-pool) on ResNets.
        max_epochs: training epochs (schedulers and momentum schedules read it).
        num_large_crops, num_small_crops: crops per image the loader yields.
        **overrides: any constructor argument, e.g. ``encoder="resnet50"``, ``lr=0.03``.
    """
    kwargs = solo_defaults(method_cls)
    kwargs.update(
        num_classes=num_classes,
        backbone_args={"cifar": cifar, "zero_init_residual": False},
        max_epochs=max_epochs,
        accumulate_grad_batches=1,
        extra_optimizer_args={"momentum": 0.9},
        num_large_crops=num_large_crops,
        num_small_crops=num_small_crops,
    )
    kwargs.update(overrides)
    if kwargs["optimizer"] != "sgd":
        kwargs["extra_optimizer_args"] = {}
    return kwargs
