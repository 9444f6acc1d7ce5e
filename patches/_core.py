"""The patch registry: what a patch is, how it is checked, applied and reported.

Setting ``UNMIX_EXT_SKIP_PATCHES`` to comma-separated patch names (or ``all``)
leaves those patches unapplied, with status ``skipped``, so that anyone can watch
a patch's test fail without it, e.g.
``UNMIX_EXT_SKIP_PATCHES=lars_closure pytest tests/test_patches.py``.
"""
from __future__ import annotations

import enum
import hashlib
import importlib
import inspect
import os
import warnings
import textwrap
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

REINSTALL_HINT = "pip install --force-reinstall --no-deps solo-learn==1.0.2"
SKIP_ENV = "UNMIX_EXT_SKIP_PATCHES"


class PatchError(RuntimeError):
    """A patch could not be applied: the solo-learn in use is not the one we patch."""


class PatchStatus(str, enum.Enum):
    APPLIED = "applied"
    NOT_NEEDED = "not needed"
    FAILED = "failed"
    SKIPPED = "skipped"  # named in UNMIX_EXT_SKIP_PATCHES; not a failure


@dataclass
class Patch:
    """One fix to solo-learn 1.0.2.

    Attributes:
        name: short name, also the module name under ``patches/``.
        summary: one line: what is broken without the fix.
        upstream: ``{"module:Qual.name": sha256}`` of each upstream function the
            patch replaces, hashed from its dedented source in solo-learn 1.0.2.
            The patch is applied only when every target is present with exactly
            that source; all targets absent means upstream dropped the code and
            the patch is not needed; anything else fails.
        apply: replaces the targets; called at most once per process.
        needed: optional check for patches without upstream targets (the
            ``pl_bolts`` import): returns False when the defect is absent.
    """

    name: str
    summary: str
    upstream: Dict[str, str]
    apply: Callable[[], None]
    needed: Optional[Callable[[], bool]] = None
    status: Optional[PatchStatus] = field(default=None, repr=False)
    reason: str = field(default="", repr=False)


PATCHES: List[Patch] = []


def register(patch: Patch) -> Patch:
    """Adds ``patch`` to :data:`PATCHES` (call it at the patch's own definition)."""
    if any(p.name == patch.name for p in PATCHES):
        raise ValueError(f"patch {patch.name!r} is registered twice")
    PATCHES.append(patch)
    return patch


def resolve(target: str):
    """Returns the object named ``"package.module:Qual.name"``, or None if absent.

    A module that is missing is absent; one that exists but fails to import raises
    (that is a failure to report, not a defect that went away).
    """
    module_name, _, qualname = target.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            return None
        raise
    for part in qualname.split("."):
        obj = inspect.getattr_static(obj, part, None)
        if obj is None:
            return None
    return obj


def source_sha256(obj) -> str:
    """sha256 of an object's dedented source (staticmethods are unwrapped)."""
    obj = getattr(obj, "__func__", obj)
    source = textwrap.dedent(inspect.getsource(obj))
    return hashlib.sha256(source.encode()).hexdigest()


def replace(owner, attribute: str, new) -> None:
    """Puts ``new`` at ``owner.attribute``, keeping the upstream object on ``new``."""
    new.__unmix_upstream__ = inspect.getattr_static(owner, attribute, None)
    setattr(owner, attribute, new)


def owner_and_name(target: str):
    """``"pkg.mod:Cls.attr"`` -> (the object holding ``attr``, ``"attr"``)."""
    module_name, _, qualname = target.partition(":")
    owner_path, _, attribute = qualname.rpartition(".")
    owner = importlib.import_module(module_name)
    for part in filter(None, owner_path.split(".")):
        owner = getattr(owner, part)
    return owner, attribute


def function_patch(name: str, summary: str, upstream: Dict[str, str],
                   replacements: Dict[str, Callable]) -> Patch:
    """Registers a patch that puts each replacement function at its ``"module:Qual.name"``.

    ``upstream`` hashes the functions the replacements are written against; the
    replacements may also cover other bindings of the same function (a module that
    imported it by name).
    """

    def apply() -> None:
        for target, new in replacements.items():
            replace(*owner_and_name(target), new)

    return register(Patch(name=name, summary=summary, upstream=upstream, apply=apply))


def wrapping_patch(name: str, summary: str, target: str, sha256: str) -> Callable[[Callable], Callable]:
    """Decorator: registers a patch that puts ``wrap(upstream)`` at ``target`` (``"module:Qual.name"``).

    For fixes that still call the upstream function (before or after it, or with
    other arguments). ``wrap`` receives the upstream function and returns its
    replacement; it runs when the patch is applied, so solo is imported by then.
    ``sha256`` hashes the upstream function's source, as in :class:`Patch`.
    """

    def decorate(wrap: Callable[[Callable], Callable]) -> Callable[[Callable], Callable]:
        def apply() -> None:
            owner, attribute = owner_and_name(target)
            replace(owner, attribute, wrap(getattr(owner, attribute)))

        register(Patch(name=name, summary=summary, upstream={target: sha256}, apply=apply))
        return wrap

    return decorate


def _check(patch: Patch) -> tuple[PatchStatus | None, str]:
    """Returns (status, reason) before applying; status None means: apply it."""
    if patch.needed is not None:
        return (None, "") if patch.needed() else (PatchStatus.NOT_NEEDED, "defect absent")
    try:
        found = {t: resolve(t) for t in patch.upstream}
    except Exception as err:  # solo itself does not import: nothing can be patched
        return PatchStatus.FAILED, f"cannot import its target: {type(err).__name__}: {err}"
    present = [t for t, obj in found.items() if obj is not None]
    if not present:
        return PatchStatus.NOT_NEEDED, "upstream code no longer present"
    if len(present) < len(found):
        missing = sorted(set(found) - set(present))
        return PatchStatus.FAILED, f"upstream changed: {', '.join(missing)} missing"
    for target, obj in found.items():
        try:
            sha = source_sha256(obj)
        except (OSError, TypeError):
            return PatchStatus.FAILED, f"no source for {target}"
        if sha != patch.upstream[target]:
            return PatchStatus.FAILED, f"upstream source of {target} is not solo-learn 1.0.2's"
    return None, ""


def _apply_one(patch: Patch) -> None:
    status, reason = _check(patch)
    if status is None:
        try:
            patch.apply()
        except Exception as err:  # a failed patch is reported, never half-silent
            status, reason = PatchStatus.FAILED, f"{type(err).__name__}: {err}"
        else:
            status = PatchStatus.APPLIED
    patch.status, patch.reason = status, reason


def _skipped_names() -> set[str]:
    """The patch names that ``UNMIX_EXT_SKIP_PATCHES`` names (``all``: every one)."""
    known = [p.name for p in PATCHES]
    names = {n.strip() for n in os.environ.get(SKIP_ENV, "").split(",") if n.strip()}
    unknown = sorted(names - set(known) - {"all"})
    if unknown:
        raise ValueError(
            f"{SKIP_ENV}: unknown patch name(s) {', '.join(map(repr, unknown))}; "
            f"known: all, {', '.join(known)}"
        )
    return set(known) if "all" in names else names


def apply_all() -> List[Patch]:
    """Applies every registered patch once per process and returns them with statuses.

    The patches that make ``import solo`` possible run first (registration order),
    then solo is imported and the rest replace its functions in place, so code that
    imported solo before us runs the patched functions too. Patches named in
    ``UNMIX_EXT_SKIP_PATCHES`` are left unapplied with status ``skipped``.
    """
    _load_patch_modules()
    skipped = _skipped_names()
    # solo's whitening module warns at import about a deprecated decorator that the
    # wmse_cholesky patch replaces: not a warning for the user
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*custom_fwd.*", category=FutureWarning)
        for patch in PATCHES:
            if patch.status is None and patch.name in skipped:
                patch.status, patch.reason = PatchStatus.SKIPPED, f"named in {SKIP_ENV}"
            elif patch.status is None:
                _apply_one(patch)
    return PATCHES


def patch_statuses() -> Dict[str, PatchStatus]:
    """``{patch name: status}`` after :func:`apply_all`."""
    return {p.name: p.status for p in apply_all()}


def ensure_applied() -> None:
    """Applies all patches; raises a one-line :class:`PatchError` if any failed (not if skipped)."""
    failed = [p for p in apply_all() if p.status is PatchStatus.FAILED]
    if failed:
        p = failed[0]
        raise PatchError(
            f"solo-learn patch {p.name!r} failed ({p.reason}); unmix_ext needs solo-learn 1.0.2: "
            f"run `{REINSTALL_HINT}` (or `make install`); `python -m unmix_ext.patches` lists all"
        )


# Order matters: the import shims come first, since every other patch imports solo.
PATCH_MODULES = (
    "pl_bolts_scheduler",
    "validation_epoch_end",
    "momentum_batch_end",
    "momentum_tau_resume",
    "knn_metric",
    "wmse_cholesky",
    "dino_clip_gradients",
    "knn_num_classes",
    "dino_teacher_warmup",
    "multicrop_codes",
    "swav_queue_resume",
    "timm_backbones",
    "deepclusterv2_empty_targets",
    "offdiagonal_mask",
    "topk_few_classes",
    "static_lr_pickle",
    "lars_closure",
    "unlabelled_batches",
)


def _load_patch_modules() -> None:
    for name in PATCH_MODULES:
        importlib.import_module(f"unmix_ext.patches.{name}")
