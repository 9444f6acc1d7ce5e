"""Our fixes to solo-learn 1.0.2, applied at import time.

solo-learn 1.0.2 (2021) is the only release on the package index; it was written
for torch 1.9 and Lightning 1.4 and breaks on the stack we ship. Each module in
this package fixes one breakage and starts with a header: symptom, cause, fix.

How a fix reaches solo-learn: every patch replaces upstream functions (or
provides one missing import) with short functions of ours, in memory, when
``unmix_ext.methods`` is imported (every runner and tool module imports it first).
Classes and modules are changed in place, so code that imported solo before ``unmix_ext.methods`` runs the patched functions too (and without
it, ``import solo`` stops at the missing ``pl_bolts``). Nothing in
site-packages is edited, so reinstalling solo-learn cannot leave stale or
half-patched files behind. Before replacing a function, a patch checks that the
upstream source is byte-for-byte the 1.0.2 source it was written against
(sha256 of ``inspect.getsource``); if it is not, the patch reports ``failed`` and
``import unmix_ext.methods`` stops with a one-line error instead of training on code
nobody has read.

``python -m unmix_ext.patches`` prints each patch with its status:
``applied``, ``not needed`` (the upstream code no longer has the defect),
``failed``, or ``skipped``: ``UNMIX_EXT_SKIP_PATCHES=name1,name2`` (or ``all``)
leaves those patches out, to check that each patch's test fails without it; an
unknown name is a one-line ``ValueError`` listing the known ones.
"""
from unmix_ext.patches._core import (
    PATCHES,
    PatchError,
    PatchStatus,
    apply_all,
    ensure_applied,
    patch_statuses,
)

__all__ = ["PATCHES", "PatchError", "PatchStatus", "apply_all", "ensure_applied", "patch_statuses"]
