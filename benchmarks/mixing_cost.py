"""What mixing a batch costs: next to a plain copy, and as a share of a training step.

docs/unmix.md section 3: the mixing is one fused elementwise pass (global mode) or one
box copy (region mode) and should be invisible next to a convolution. Measured on one
view of shape (N, 3, image, image), interleaved with ``images.clone()`` of the same
batch, each timing averaging ``--calls`` calls:

- ``mix_with_reversed`` in global mode (scalar lam, and one lam per sample) and in
  region mode (one box of half the image, and one box per sample), each as a ratio to
  the copy;
- where global mode's time goes: its two kernels alone, ``images.flip(0)`` (a
  copy: one read, one write) and ``torch.lerp`` of the view and a ready flip (two
  reads, one write). torch has no negative strides, so the flip is materialised;
  in bytes moved global mode is 2.5 copies, and at small sizes the second kernel
  launch and the argument checks add to that;
- the whole per-step draw and mix of a variant (its seeded generator, then ``UnMix``:
  mode, lam and box drawn on the host, then mixed) as a ratio to the copy, and as a
  share of one optimizer step of ``--share-method`` (``benchmarks.step_cost``'s step).

Usage::

    python -m benchmarks.mixing_cost [--batch 16] [--image 32] [--calls 200]
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from benchmarks.common import Options, add_options, aligned, build_method, interleaved, make_batch
from benchmarks.common import options_from, paired_ratio, prepare
from benchmarks.step_cost import Stepper
from unmix_ext.mixing import mix_with_reversed

DEFAULTS = Options(batch=16, image=32, repeats=5, warmup=1)
DEFAULT_CALLS = 200
DEFAULT_SHARE_METHOD = "simclr_unmix"
COPY = "copy (clone)"
DRAW_AND_MIX = "draw + mix (a variant's step)"
# global mode's two kernels, each timed alone
FLIP_ALONE = "  its flip alone"
LERP_ALONE = "  its lerp alone"


@dataclass
class MixingCost:
    """Seconds per call of each way to mix (and of the copy), one value per round; and the share.

    ``share`` is (draw + mix seconds) / (step seconds of ``share_method``), a median over rounds.
    """

    seconds: Dict[str, List[float]]
    share_method: str
    share: float
    step_seconds: List[float] = field(default_factory=list)

    def ratio(self, label: str) -> float:
        return paired_ratio(self.seconds[label], self.seconds[COPY])


def mixers(images: torch.Tensor, draw_and_mix: Callable[[], object]) -> Dict[str, Callable[[], object]]:
    """label -> function making one mixture of ``images`` (N, C, H, W), the copy first."""
    n, _, h, w = images.shape
    # a half-area box (lam = 0.5), in the middle: region mode's typical copy
    side_h, side_w = int(h / math.sqrt(2)), int(w / math.sqrt(2))
    top, left = (h - side_h) // 2, (w - side_w) // 2
    box = (left, top, left + side_w, top + side_h)
    generator = torch.Generator().manual_seed(0)
    lam_per_sample = torch.rand(n, generator=generator)
    corner = torch.stack([torch.randint(0, w // 2, (n,), generator=generator),
                          torch.randint(0, h // 2, (n,), generator=generator)], dim=1)
    boxes = torch.cat([corner, corner + torch.tensor([side_w, side_h])], dim=1)
    flipped = images.flip(0)
    return {
        COPY: images.clone,
        "global": lambda: mix_with_reversed(images, 0.5, "global"),
        FLIP_ALONE: lambda: images.flip(0),
        LERP_ALONE: lambda: torch.lerp(flipped, images, 0.5),
        "global, lam per sample": lambda: mix_with_reversed(images, lam_per_sample, "global"),
        "region": lambda: mix_with_reversed(images, 0.5, "region", box),
        "region, box per sample": lambda: mix_with_reversed(images, 0.5, "region", boxes),
        DRAW_AND_MIX: draw_and_mix,
    }


def measure(options: Options, calls: int = DEFAULT_CALLS, share_method: str = DEFAULT_SHARE_METHOD) -> MixingCost:
    """Times every mixer against the copy, and draw + mix against ``share_method``'s step."""
    batch = make_batch(options)
    view = batch[1][0]
    model = build_method(share_method, options)
    draws = torch.Generator().manual_seed(0)  # one generator for all calls, so modes alternate

    def draw_and_mix():
        model.unmix_generator(0)  # what the step pays to seed its draws
        return model.unmix(view, draws)

    candidates = mixers(view, draw_and_mix)
    step = Stepper(model, batch, options)
    step()  # untimed, creates the optimizer state
    seconds = interleaved({**candidates, "step": step}, repeats=options.repeats, warmup=options.warmup,
                          device=options.device, calls={**{label: calls for label in candidates}, "step": 1})
    step_seconds = seconds.pop("step")
    share = paired_ratio(seconds[DRAW_AND_MIX], step_seconds)
    return MixingCost(seconds, share_method, share, step_seconds)


COLUMNS = ("mixing of one view", "ratio to copy", "us/call")


def rows(cost: MixingCost) -> List[Tuple[str, str, str]]:
    """One row per mixer (the copy last): label, ratio to the copy, microseconds a call."""
    labels = [label for label in cost.seconds if label != COPY] + [COPY]
    return [(label, f"{cost.ratio(label):.2f}", f"{statistics.median(cost.seconds[label]) * 1e6:.1f}")
            for label in labels]


def share_line(cost: MixingCost) -> str:
    mix_ms = statistics.median(cost.seconds[DRAW_AND_MIX]) * 1e3
    return (f"share of a {cost.share_method} step: {cost.share:.5f} "
            f"(draw + mix {mix_ms:.3f} ms, step {statistics.median(cost.step_seconds) * 1e3:.1f} ms)")


def lines(cost: MixingCost) -> List[str]:
    """The text report: the table, then the share of a step."""
    widths = (32, len(COLUMNS[1]), 9)
    return [aligned(cells, widths) for cells in (COLUMNS, *rows(cost))] + [share_line(cost)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mixing_cost", description=__doc__.split("\n")[0])
    add_options(parser, DEFAULTS)
    parser.add_argument("--calls", type=int, default=DEFAULT_CALLS, help="calls a timing averages (%(default)s)")
    parser.add_argument("--share-method", default=DEFAULT_SHARE_METHOD,
                        help="variant whose step the mixing is a share of (%(default)s)")
    args = parser.parse_args(argv)
    try:
        options = options_from(args)
    except ValueError as err:
        parser.error(str(err))
    if args.calls < 1:
        parser.error(f"--calls must be >= 1, got {args.calls}")
    prepare(options)
    print(f"mixing cost: {options}, {args.calls} calls a timing")
    print("\n".join(lines(measure(options, args.calls, args.share_method))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
