"""unmix-ext: Un-Mix (Shen et al., AAAI 2022) for every solo-learn method.

Importing this package adapts solo-learn 1.0.2 to the current stack (see
``unmix_ext.patches``, the top-level ``patches/`` folder) and registers the
Un-Mix variants in solo-learn's own registry ``solo.methods.METHODS``.
"""
from unmix_ext.patches import ensure_applied as _ensure_patches_applied

_ensure_patches_applied()

__version__ = "0.1.0"

from unmix_ext import methods  # noqa: E402,F401  (registers the Un-Mix variants in solo's METHODS)
