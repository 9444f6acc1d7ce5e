"""Un-Mix variants of solo-learn's methods, registered in ``solo.methods.METHODS``.

Importing this package first adapts solo-learn 1.0.2 to the current stack
(:mod:`unmix_ext.patches`; a patch whose upstream code changed stops the import
with one line), then registers ``mocov2`` (MoCo v2 as published) and the five methods of newer solo-learn
that 1.0.2 lacks (``mocov3``, ``vibcreg``, ``supcon``, ``all4one``, ``mae``; one file
each) and, for each of solo-learn 1.0.2's 14 self-supervised methods, ``mocov2`` and
those five but MAE, a ``<name>_unmix`` variant. One file per family of label assignment
(docs/unmix.md).
"""
from unmix_ext.patches import ensure_applied

ensure_applied()

from unmix_ext.methods import codes, contrastive, general, mae, moco, predictor_target  # noqa: E402,F401
from unmix_ext.methods.base import NO_UNMIX_VARIANT, UNMIX_SUFFIX, UnMixVariant  # noqa: E402

__all__ = ["NO_UNMIX_VARIANT", "UNMIX_SUFFIX", "UnMixVariant"]
