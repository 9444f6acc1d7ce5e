"""What every Un-Mix variant shares: the training step around the base method's step.

A variant is ``class XUnMix(UnMixVariant, X)`` for a solo-learn method ``X``; it states
only what differs from ``X``:

- ``unmix_recorded``: the submodules whose clean outputs the mixture loss reuses
  (e.g. ``("projector",)``); their outputs during the base step are recorded in call
  order, so nothing clean is computed twice;
- ``forward_mixed(images)``: the one online pass over the mixed view (plus, where the
  family's rule in docs/unmix.md section 2 says so, the target pass), and any read of a
  queue or support set that must see the state before the base step updates it;
- ``mixture_loss(clean, mixed, lam, batch)``: the family's label assignment from
  ``unmix_ext.losses``;
- ``base_term_weight``: what one term of the base loss weighs in solo-learn's loss
  (1 where it sums its view pairs or has one, 1/2 where it averages two, ...). docs/unmix.md
  section 2: each mixture term weighs what one base term weighs, so the base:mixture
  ratio is the authors' 1:1 whatever solo-learn's normalisation.

Per step (:meth:`UnMixVariant.training_step`): draw the mix from a generator seeded
by (seed, rank, global step, micro-batch), run ``forward_mixed`` on the mixed view,
run the base method's unchanged ``training_step`` on the clean batch while recording,
add the mixture loss times ``base_term_weight``, log ``unmix/lam``, ``unmix/global``,
``unmix/base_loss`` and ``unmix/mix_loss`` (weighted, as added). Mixed images never reach the online classifier, the kNN bank, a
queue or a support set: those are all fed by the base step from the clean views.

:func:`register_variant` enters a variant into solo-learn's own registry
``solo.methods.METHODS`` as ``<base name>_unmix``, next to its definition.
"""
from __future__ import annotations

import argparse
import inspect
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Sequence

import numpy as np
import torch
from solo.methods import METHODS

from unmix_ext.losses import TARGET_SIDES
from unmix_ext.mixing import UnMix

UNMIX_SUFFIX = "_unmix"

#: base methods that have no Un-Mix variant, and why (filled next to each method's definition)
NO_UNMIX_VARIANT: Dict[str, str] = {}


class UnMixVariant:
    """Mixin turning a solo-learn method into its Un-Mix variant (put it first in the bases).

    Args (constructor keywords, all optional; the rest go to the base method):
        unmix_alpha: Beta(alpha, alpha) parameter of lam, > 0. Default 1.0.
        unmix_prob: probability of the global mode (Mixup) vs region (CutMix), in [0, 1].
        unmix_per_sample: one lam per sample instead of one per step (beyond the paper;
            only for families whose loss is a mean over rows).
        unmix_lam: fix lam in [0, 1] (ablations and tests); None draws it.
        unmix_view: which large crop is mixed, 0 (the authors' code) or 1.
        unmix_symmetric: MoCo family: mixture terms against both clean keys (None: as
            the base loss is).
        unmix_target_side: predictor/target family: "both" (the mixture also goes
            through the target network) or "online".
        unmix_seed: seed of the per-step draws (the runner passes the run's seed).

    Raises:
        ValueError: one line naming the argument and the allowed values.
    """

    unmix_recorded: Sequence[str] = ()
    base_term_weight = 1.0
    unmix_per_sample_supported = False
    unmix_views_supported = (0, 1)

    def __init__(self, unmix_alpha: float = 1.0, unmix_prob: float = 0.5,
                 unmix_per_sample: bool = False, unmix_lam: float | None = None,
                 unmix_view: int = 0, unmix_symmetric: bool | None = None,
                 unmix_target_side: str = "both", unmix_seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        name = type(self).registry_name
        self.unmix = UnMix(alpha=unmix_alpha, prob=unmix_prob, per_sample=unmix_per_sample,
                           lam=unmix_lam)
        if unmix_view not in self.unmix_views_supported or unmix_view >= self.num_large_crops:
            allowed = [v for v in self.unmix_views_supported if v < self.num_large_crops]
            raise ValueError(f"unmix_view must be one of {allowed} for {name}, got {unmix_view!r}")
        if unmix_per_sample and not self.unmix_per_sample_supported:
            raise ValueError(
                f"unmix_per_sample=True is not supported by {name}: its loss is not a mean "
                "over samples; use unmix_per_sample=False (one lam per step, as the paper)"
            )
        if unmix_target_side not in TARGET_SIDES:
            raise ValueError(
                f"unmix_target_side must be one of {list(TARGET_SIDES)}, got {unmix_target_side!r}"
            )
        self.unmix_view = unmix_view
        self.unmix_other_view = 1 - unmix_view
        self.unmix_symmetric = unmix_symmetric
        self.unmix_target_side = unmix_target_side
        self.unmix_seed = int(unmix_seed)

    # ---- what a variant states -------------------------------------------------------
    def forward_mixed(self, images: torch.Tensor) -> Dict[str, Any]:
        raise NotImplementedError

    def mixture_loss(self, clean: Dict[str, List[torch.Tensor]], mixed: Dict[str, Any],
                     lam, batch) -> torch.Tensor:
        raise NotImplementedError

    # ---- the shared step -------------------------------------------------------------
    def unmix_generator(self, batch_idx: int) -> torch.Generator:
        """CPU generator for this step's draws, seeded by (seed, rank, global step, micro-batch).

        Independent across processes, identical when a run resumes at the same step.
        """
        accumulate = self.trainer.accumulate_grad_batches if self._trainer is not None else 1
        entropy = [self.unmix_seed, self.global_rank, self.global_step, batch_idx % accumulate]
        seed = int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)
        return torch.Generator().manual_seed(seed)

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        views = batch[1]
        mix = self.unmix(views[self.unmix_view], self.unmix_generator(batch_idx))
        mixed = self.forward_mixed(mix.images)
        with record_outputs(self, self.unmix_recorded) as clean:
            base_loss = super().training_step(batch, batch_idx)
        mix_loss = self.base_term_weight * self.mixture_loss(clean, mixed, mix.lam, batch)
        lam = mix.lam.float().mean() if torch.is_tensor(mix.lam) else float(mix.lam)
        self.log_dict({
            "unmix/lam": lam,
            "unmix/global": float(mix.mode == "global"),
            "unmix/base_loss": base_loss.detach(),
            "unmix/mix_loss": mix_loss.detach(),
        }, on_step=True, on_epoch=False, batch_size=views[0].shape[0])
        return base_loss + mix_loss


@contextmanager
def record_outputs(module: torch.nn.Module, names: Sequence[str]) -> Iterator[Dict[str, list]]:
    """Records, in call order, what ``module.<name>`` returns for each name while open.

    A submodule is recorded with a forward hook; a method (e.g. NNCLR's ``find_nn``) by
    shadowing it on the instance until the block ends. Yields
    ``{name: [result of call 1, result of call 2, ...]}``.
    """
    records: Dict[str, list] = {name: [] for name in names}
    hooks, shadowed = [], []
    for name in names:
        target = getattr(module, name)
        if isinstance(target, torch.nn.Module):
            hooks.append(target.register_forward_hook(
                lambda _m, _inputs, output, name=name: records[name].append(output)))
        else:
            def recorded(*args, _method=target, _name=name, **kwargs):
                result = _method(*args, **kwargs)
                records[_name].append(result)
                return result

            object.__setattr__(module, name, recorded)
            shadowed.append(name)
    try:
        yield records
    finally:
        for hook in hooks:
            hook.remove()
        for name in shadowed:
            object.__delattr__(module, name)


#: every Un-Mix setting of a variant and its default (the paper's), read off the constructor: the one copy
UNMIX_DEFAULTS: Dict[str, Any] = {
    name: parameter.default for name, parameter in inspect.signature(UnMixVariant.__init__).parameters.items()
    if name.startswith("unmix_")
}


def add_unmix_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the Un-Mix options to a solo-learn argparse parser (``--unmix_alpha`` ...), defaults from UNMIX_DEFAULTS."""
    group = parser.add_argument_group("unmix")
    group.add_argument("--unmix_alpha", type=float)
    group.add_argument("--unmix_prob", type=float)
    group.add_argument("--unmix_per_sample", action="store_true")
    group.add_argument("--unmix_lam", type=float)
    group.add_argument("--unmix_view", type=int, choices=(0, 1))
    group.add_argument("--unmix_symmetric", type=lambda s: s.lower() in ("1", "true", "yes"))
    group.add_argument("--unmix_target_side", choices=TARGET_SIDES)
    group.add_argument("--unmix_seed", type=int)
    group.set_defaults(**UNMIX_DEFAULTS)
    return parser


def register_method(name: str):
    """Class decorator: ``solo.methods.METHODS[name] = cls`` (a name is registered once)."""

    def decorate(cls):
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"method {name!r} is already registered as {METHODS[name].__name__}")
        METHODS[name] = cls
        cls.registry_name = name
        return cls

    return decorate


def register_variant(cls):
    """Registers an ``UnMixVariant`` subclass as ``<its base method's name>_unmix``.

    The base method is the class after ``UnMixVariant`` in the bases; its registry name
    is looked up in ``solo.methods.METHODS``. The variant's argparse options are the
    base's plus :func:`add_unmix_args`.
    """
    base = cls.__bases__[-1]
    base_name = next(n for n, c in METHODS.items() if c is base)
    cls.add_model_specific_args = staticmethod(
        lambda parser: add_unmix_args(base.add_model_specific_args(parser)))
    return register_method(base_name + UNMIX_SUFFIX)(cls)
