"""Image mixtures for Un-Mix: the one place where a batch is mixed with itself.

Un-Mix (Shen et al., "Un-Mix: Rethinking Image Mixtures for Unsupervised Visual
Representation Learning", AAAI 2022, arXiv 2003.05438) mixes a batch of views X
of shape (N, C, H, W) with the same batch reversed along dim 0, so sample i is
paired with sample N-1-i (with odd N the middle sample is its own partner). Each
step uses either the global mode (Mixup, a pixel-wise convex combination) or the
region mode (CutMix, a box pasted from the partner), and returns the effective
mixing weight lam: the share of the mixture that comes from X itself.

- `mix_with_reversed`: the pure, deterministic mixing of one batch.
- `UnMix`: draws mode, lam and box from a generator, then mixes with them.
- `MixResult`: what `UnMix` returns.
"""

from __future__ import annotations

import math
import operator
from numbers import Real
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

MODES = ("global", "region")

Lam = Union[float, torch.Tensor]
Box = Union[Tuple[int, int, int, int], torch.Tensor]


class MixResult(NamedTuple):
    """One mixed batch and how it was mixed.

    Attributes:
        images: The mixed batch, shape (N, C, H, W), dtype, device and memory
            format of the input.
        lam: The effective lam, the share of each mixture taken from the clean
            sample: a float, or a float32 tensor of shape (N,) on the images'
            device when lam was drawn per sample.
        mode: "global" (Mixup) or "region" (CutMix).
        box: None in global mode; in region mode the pasted box in pixels,
            (x1, y1, x2, y2) with x along W and y along H, half-open: a tuple of
            ints, or an int64 CPU tensor of shape (N, 4) with one box per sample.
    """

    images: torch.Tensor
    lam: Lam
    mode: str
    box: Optional[Box]


def mix_with_reversed(
    images: torch.Tensor, lam: Lam, mode: str, box: Optional[Box] = None
) -> Tuple[torch.Tensor, Lam]:
    """Mixes each sample with its partner in the batch reversed along dim 0.

    Pure: `images` is never modified (the base loss still needs the clean
    views) and nothing is drawn. Keeps the dtype, device and memory format
    (contiguous or channels_last) of `images`, and never reads a device tensor
    back to the host.

    Global mode: `lam * X + (1 - lam) * X.flip(0)`, one fused elementwise op
    (a per-sample lam broadcasts as (N, 1, 1, 1)). A per-sample lam is applied
    in the images' dtype, so for bf16/fp16 images it is rounded to that dtype,
    and the returned lam is that rounded weight: the labels match the pixels.

    Region mode: X with the box taken from X.flip(0). lam is not used to mix:
    the box decides it, and lam_effective = 1 - box_area / (H * W). A tuple box
    is one slice copy and must lie inside the image. A per-sample box, an
    integer tensor of shape (N, 4), is applied with one select over the image;
    its coordinates are not read on the host, so a box reaching outside the
    image is clipped to it and lam_effective counts the pixels really pasted.

    Args:
        images: Batch of views, shape (N, C, H, W) with N >= 2.
        lam: Weight of X in [0, 1]: a float, or a floating tensor of shape (N,)
            with one weight per sample (values not checked, to avoid a sync).
        mode: "global" or "region".
        box: None in global mode. In region mode (x1, y1, x2, y2) in pixels,
            x along W, y along H, half-open, as 4 ints or an integer tensor of
            shape (N, 4) (one box per sample, any device).

    Returns:
        (mixed, lam_effective): mixed has the shape of `images`; lam_effective
        is a float, or a tensor of shape (N,) on the images' device when lam
        (global mode) or box (region mode) is per sample.

    Raises:
        ValueError: If images is not (N, C, H, W) with N >= 2, mode is unknown,
            lam is out of [0, 1] or of the wrong shape, or box is missing in
            region mode, given in global mode, or malformed.
    """
    n, _, h, w = _check_images(images)
    lam = _check_lam(lam, n)
    if mode == "global":
        if box is not None:
            raise ValueError(f"box must be None in global mode, got {_one_line(box)}")
        return _mix_global(images, lam)
    if mode == "region":
        if box is None:
            raise ValueError("box is required in region mode: (x1, y1, x2, y2) or an (N, 4) tensor")
        if isinstance(box, torch.Tensor):
            return _mix_region_per_sample(images, box)
        return _mix_region(images, _check_box(box, h, w))
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


class UnMix:
    """Draws the Un-Mix mixture of a batch: mode, lam and box, then mixes.

    Follows Shen et al., Un-Mix (AAAI 2022, arXiv 2003.05438). Each call draws
    r ~ U(0, 1) and lam ~ Beta(alpha, alpha). If r < prob, global mode (Mixup);
    else region mode (CutMix): cut ratio sqrt(1 - lam), box width int(W * ratio)
    and height int(H * ratio), centre (cx, cy) uniform over the pixels, box
    [cx - width // 2, cx - width // 2 + width) and likewise in y, clipped to the
    image; lam is then corrected to the exact share of pixels kept from X.
    (The CutMix reference code spans cx +- width // 2, one pixel narrower for
    odd widths; here the box has the width the ratio asks for.)

    Reproducibility: every draw comes from `generator`. Each call takes one
    63-bit seed from it and draws r, lam (numpy's exact Beta sampler) and the
    centres from a numpy PCG64 Generator seeded with it, because torch's public
    Beta sampler does not accept a generator. A seeded generator therefore
    reproduces the same sequence of MixResults. All draws are on the host and
    nothing is read back from the device: a per-sample lam and boxes are copied
    to the images' device without blocking.

    Attributes:
        alpha: Beta(alpha, alpha) parameter, > 0. 1.0 (the paper) is uniform;
            smaller values favour lam near 0 or 1.
        prob: Probability of the global mode, in [0, 1]; 0.5 in the paper.
            1.0 is always global, 0.0 always region.
        per_sample: If True, one lam per sample and, in region mode, one box per
            sample (an option beyond the paper); the mode is still one per call.
        lam: If set, a fixed lam in [0, 1] (ablations, tests): only r and the
            box are drawn. In region mode the box is cut from it and the
            returned lam is the pixel share of that box.

    Raises:
        ValueError: At construction if alpha is not a finite number > 0, or prob
            or lam is outside [0, 1]; at call if images is not (N, C, H, W) with
            N >= 2 or generator is not a CPU torch.Generator.

    Examples:
        >>> unmix = UnMix(alpha=1.0, prob=0.5)
        >>> generator = torch.Generator().manual_seed(0)
        >>> mix = unmix(view0, generator)  # view0: (N, C, H, W), not modified
        >>> out_m = model(mix.images)  # the partner's outputs are out_m.flip(0)
        >>> loss = base + mix.lam * l(out1, out_m) + (1 - mix.lam) * l(out1, out_m.flip(0))
    """

    def __init__(
        self,
        alpha: float = 1.0,
        prob: float = 0.5,
        per_sample: bool = False,
        lam: Optional[float] = None,
    ) -> None:
        if not (isinstance(alpha, Real) and math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
        self.alpha = float(alpha)
        self.prob = _check_unit_interval("prob", prob)
        self.per_sample = bool(per_sample)
        self.lam = None if lam is None else _check_unit_interval("lam", lam)

    def __call__(
        self, images: torch.Tensor, generator: Optional[torch.Generator] = None
    ) -> MixResult:
        """Mixes a batch with its reversed self.

        Args:
            images: Batch of views, shape (N, C, H, W) with N >= 2; not modified.
            generator: CPU torch.Generator for all draws; None uses torch's
                global CPU generator.

        Returns:
            MixResult with images (N, C, H, W), lam (float, or a tensor of shape
            (N,) on the images' device when per_sample), mode and box.
        """
        n, _, h, w = _check_images(images)
        if generator is not None and generator.device.type != "cpu":
            raise ValueError(
                f"generator must be a CPU torch.Generator, got one on {generator.device}"
            )
        seed = int(torch.randint(2**63 - 1, (), generator=generator))
        rng = np.random.default_rng(seed)
        size = n if self.per_sample else None

        r = rng.random()
        if self.lam is None:
            lam = rng.beta(self.alpha, self.alpha, size)
        else:
            lam = np.full(size or (), self.lam)

        if r < self.prob:
            mode, box = "global", None
        else:
            mode, box = "region", _draw_box(rng, lam, h, w, size)
        lam_arg = torch.as_tensor(lam, dtype=torch.float32) if self.per_sample else float(lam)
        mixed, lam_effective = mix_with_reversed(images, lam_arg, mode, box)
        return MixResult(mixed, lam_effective, mode, box)


def _draw_box(
    rng: np.random.Generator, lam: np.ndarray, h: int, w: int, size: Optional[int]
) -> Box:
    """CutMix box for lam (scalar or (N,)): a 4-tuple, or (N, 4) int64 tensor."""
    ratio = np.sqrt(1.0 - lam)
    cut_w = np.floor(w * ratio).astype(np.int64)
    cut_h = np.floor(h * ratio).astype(np.int64)
    cx = rng.integers(0, w, size)
    cy = rng.integers(0, h, size)
    x1, y1 = cx - cut_w // 2, cy - cut_h // 2
    x2, y2 = x1 + cut_w, y1 + cut_h
    box = np.stack([np.clip(x1, 0, w), np.clip(y1, 0, h), np.clip(x2, 0, w), np.clip(y2, 0, h)], -1)
    if size is None:
        return tuple(int(v) for v in box)
    return torch.from_numpy(box)


def _mix_global(images: torch.Tensor, lam: Lam) -> Tuple[torch.Tensor, Lam]:
    # lerp(F, X, lam) = F + lam * (X - F) = lam * X + (1 - lam) * F, fused
    if isinstance(lam, float):
        return torch.lerp(images.flip(0), images, lam), lam
    # lerp wants the weight in the images' dtype; return that rounded weight
    weight = lam.to(device=images.device, dtype=images.dtype, non_blocking=True)
    mixed = torch.lerp(images.flip(0), images, weight.view(-1, 1, 1, 1))
    return mixed, weight.to(lam.dtype)


def _mix_region(images: torch.Tensor, box: Tuple[int, int, int, int]) -> Tuple[torch.Tensor, float]:
    x1, y1, x2, y2 = box
    h, w = images.shape[-2:]
    mixed = images.clone()  # preserve_format: channels_last stays channels_last
    # only the box of the reversed batch is needed, not all of X.flip(0)
    mixed[:, :, y1:y2, x1:x2] = images[:, :, y1:y2, x1:x2].flip(0)
    return mixed, 1.0 - (x2 - x1) * (y2 - y1) / (h * w)


def _mix_region_per_sample(
    images: torch.Tensor, box: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    n, _, h, w = images.shape
    if box.shape != (n, 4) or box.is_floating_point() or box.is_complex():
        raise ValueError(
            f"box must be an integer tensor of shape (N, 4)=({n}, 4), "
            f"got {box.dtype} of shape {tuple(box.shape)}"
        )
    box = box.to(images.device, non_blocking=True)
    cols = torch.arange(w, device=images.device)
    rows = torch.arange(h, device=images.device)
    in_x = (cols >= box[:, 0:1]) & (cols < box[:, 2:3])  # (N, W)
    in_y = (rows >= box[:, 1:2]) & (rows < box[:, 3:4])  # (N, H)
    inside = (in_y[:, :, None] & in_x[:, None, :]).unsqueeze(1)  # (N, 1, H, W)
    mixed = torch.where(inside, images.flip(0), images)
    # counted from the masks, so a box reaching outside the image counts as clipped
    area = in_x.sum(1) * in_y.sum(1)
    return mixed, 1.0 - area.float() / (h * w)


def _check_images(images: torch.Tensor) -> torch.Size:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a 4-D tensor (N, C, H, W), got {shape}")
    if images.shape[0] < 2:
        raise ValueError(
            "Un-Mix needs a batch of at least 2 images to mix with its reversed self, "
            f"got N={images.shape[0]}"
        )
    return images.shape


def _check_lam(lam: Lam, n: int) -> Lam:
    if isinstance(lam, torch.Tensor):
        if lam.shape != (n,) or not lam.is_floating_point():
            raise ValueError(
                f"lam must be a float in [0, 1] or a floating tensor of shape (N,)=({n},), "
                f"got {lam.dtype} of shape {tuple(lam.shape)}"
            )
        return lam
    return _check_unit_interval("lam", lam)


def _check_unit_interval(name: str, value: float) -> float:
    # `not a <= x <= b` also rejects NaN
    if not (isinstance(value, Real) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_box(box: Sequence[int], h: int, w: int) -> Tuple[int, int, int, int]:
    message = (
        f"box must be 4 ints (x1, y1, x2, y2) with 0 <= x1 <= x2 <= W={w} "
        f"and 0 <= y1 <= y2 <= H={h}, got {_one_line(box)}"
    )
    try:
        x1, y1, x2, y2 = (operator.index(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if not (0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h):
        raise ValueError(message)
    return x1, y1, x2, y2


def _one_line(value: object) -> str:
    # a tensor's or array's repr spans lines; error messages must not
    return " ".join(repr(value).split())
