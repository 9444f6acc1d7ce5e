"""unmix-ext: Un-Mix (Shen et al., AAAI 2022) for every solo-learn method.

Importing this package adapts solo-learn 1.0.2 to the current stack (see
``unmix_ext.patches``, the top-level ``patches/`` folder) and registers the
Un-Mix variants in solo-learn's own registry ``solo.methods.METHODS``.
"""
import sys as _sys

from unmix_ext.patches import PatchError as _PatchError
from unmix_ext.patches import ensure_applied as _ensure_patches_applied

try:
    _ensure_patches_applied()
except _PatchError:
    # `python -m unmix_ext.patches` is the report of what failed: let it print the table
    if _sys.orig_argv[1:3] != ["-m", "unmix_ext.patches"]:
        raise

__version__ = "0.1.0"

from unmix_ext import methods  # noqa: E402,F401  (registers the Un-Mix variants in solo's METHODS)
