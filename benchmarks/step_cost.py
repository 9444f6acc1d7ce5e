"""What one optimizer step of an Un-Mix variant costs next to its base method.

For each pair (``<name>_unmix``, ``<name>``), built alike (same backbone, batch and
weights), one step is ``training_step`` + ``backward`` + an SGD step, run outside
Lightning so that the method is measured, not the loop (the momentum networks' EMA
update, which Lightning runs after the step and which both sides share, is left
out). Reported per pair, variant over base:

- step ratio: median over interleaved rounds of (variant step time / base step time);
  docs/unmix.md section 3 expects about 1.5 for a two-view method;
- memory ratio: peak memory a step allocates beyond what was live before it
  (parameters, optimizer state): activations, gradients (freed at the end of each
  step) and temporaries. CUDA: ``torch.cuda.max_memory_allocated``.
  CPU: the running sum of the torch profiler's allocation events (tensor bytes
  allocated by torch, not the process's resident set, which the allocator's caching
  blurs), from one extra profiled step;
- encoder forwards: calls of the online encoder (and of the momentum encoder) in one
  step. The mixture goes through the online encoder once (its partner's outputs are a
  flip of them), so a two-view variant makes 3 online passes to the base's 2.

Usage::

    python -m benchmarks.step_cost [--methods simclr,byol] [--batch 16] [--repeats 7] [--threads 1]
    python -m benchmarks.step_cost --device cuda --amp bf16 --channels-last --batch 256
"""
from __future__ import annotations

import argparse
import statistics
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from benchmarks.common import (
    PAIRS,
    Options,
    add_options,
    aligned,
    build_method,
    interleaved,
    make_batch,
    options_from,
    prepare,
)
from unmix_ext.methods import UNMIX_SUFFIX


#: sizes that keep all 19 pairs within a few minutes on a 2-core CPU; the counting and
#: profiled steps that precede the timed rounds already warm each model up
DEFAULTS = Options(batch=16, image=32, repeats=7, warmup=0)


@dataclass
class PairCost:
    """Variant vs base for one method; times in seconds per step, memory in bytes.

    ``forwards`` maps "base" and "unmix" to (online encoder calls, momentum encoder calls)
    in one step.
    """

    method: str
    base_seconds: List[float]
    unmix_seconds: List[float]
    base_peak_bytes: int
    unmix_peak_bytes: int
    forwards: Dict[str, Tuple[int, int]]
    views_per_step: int

    @property
    def round_ratios(self) -> List[float]:
        """Variant / base step time of each round: their spread shows the noise."""
        return [u / b for u, b in zip(self.unmix_seconds, self.base_seconds)]

    @property
    def step_ratio(self) -> float:
        """Median over rounds of variant / base step time."""
        return statistics.median(self.round_ratios)

    @property
    def memory_ratio(self) -> float:
        return self.unmix_peak_bytes / self.base_peak_bytes

    def views_per_s(self, side: str) -> float:
        """Clean views a second (2 per image; the mixture is made from one of them, not loaded)."""
        seconds = self.base_seconds if side == "base" else self.unmix_seconds
        return self.views_per_step / statistics.median(seconds)


class Stepper:
    """One optimizer step of ``model`` on a fixed batch: SGD, optional autocast."""

    def __init__(self, model: torch.nn.Module, batch: list, options: Options):
        self.model, self.batch, self.options = model, batch, options
        self.optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                                         lr=0.01, momentum=0.9)

    def __call__(self) -> None:
        with self.autocast():
            loss = self.model.training_step(self.batch, 0)
        loss.backward()
        self.optimizer.step()
        # freed here, not at the next step's start: a step begins with no gradients live
        self.optimizer.zero_grad(set_to_none=True)

    def autocast(self):
        dtype = self.options.amp_dtype
        if dtype is None:
            return nullcontext()
        return torch.autocast(torch.device(self.options.device).type, dtype=dtype)


def encoder_forwards(stepper: Stepper) -> Tuple[int, int]:
    """(online encoder calls, momentum encoder calls) during one step."""
    calls = {"encoder": 0, "momentum_encoder": 0}
    hooks = []
    for name in calls:
        module = getattr(stepper.model, name, None)
        if module is not None:
            def count(*_args, name=name):
                calls[name] += 1
            hooks.append(module.register_forward_hook(count))
    try:
        stepper()
    finally:
        for hook in hooks:
            hook.remove()
    return calls["encoder"], calls["momentum_encoder"]


def peak_step_bytes(stepper: Stepper) -> int:
    """Peak bytes one step allocates on the device beyond what was live before it."""
    device = torch.device(stepper.options.device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        stepper()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        stepper()
    # "[memory]" events: +bytes when a tensor is allocated, -bytes when it is freed
    allocations = sorted((event.start_ns(), event.nbytes()) for event in prof.profiler.kineto_results.events()
                         if event.name() == "[memory]" and event.device_type() == DeviceType.CPU)
    live = peak = 0
    for _start, nbytes in allocations:
        live += nbytes
        peak = max(peak, live)
    return peak


def measure_pair(method: str, options: Options) -> PairCost:
    """Builds ``method`` and ``method_unmix`` alike and measures both, interleaved."""
    batch = make_batch(options)
    steppers = {side: Stepper(build_method(name, options), batch, options)
                for side, name in (("base", method), ("unmix", method + UNMIX_SUFFIX))}
    # two untimed steps each, which also warm up: the first counts the encoder calls (and
    # creates the optimizer's momentum buffers), the second is profiled for memory
    forwards = {side: encoder_forwards(stepper) for side, stepper in steppers.items()}
    peaks = {side: peak_step_bytes(stepper) for side, stepper in steppers.items()}
    seconds = interleaved(steppers, repeats=options.repeats, warmup=options.warmup, device=options.device)
    return PairCost(method, seconds["base"], seconds["unmix"], peaks["base"], peaks["unmix"], forwards,
                    views_per_step=2 * options.batch)


def measure(methods: Sequence[str], options: Options, report=print) -> List[PairCost]:
    """Measures each pair in turn, reporting its row (a text line) as soon as it is known."""
    report(aligned(COLUMNS, WIDTHS))
    costs = []
    for method in methods:
        cost = measure_pair(method, options)
        report(aligned(cells(cost), WIDTHS))
        costs.append(cost)
    return costs


COLUMNS = ("pair", "step ratio", "rounds min-max", "memory ratio", "base s/step", "unmix s/step",
           "base views/s", "unmix views/s", "online fwd", "momentum fwd")
WIDTHS = (36, *(max(10, len(column)) for column in COLUMNS[1:]))


def cells(cost: PairCost) -> Tuple[str, ...]:
    """One pair's row: ``<m>_unmix / <m>``, step ratio (and its rounds' range), memory ratio, times,
    views/s, encoder calls."""
    (base_online, base_momentum), (mix_online, mix_momentum) = cost.forwards["base"], cost.forwards["unmix"]
    spread = f"{min(cost.round_ratios):.2f}-{max(cost.round_ratios):.2f}"
    return (f"{cost.method}{UNMIX_SUFFIX} / {cost.method}", f"{cost.step_ratio:.2f}", spread, f"{cost.memory_ratio:.2f}",
            f"{statistics.median(cost.base_seconds):.4f}", f"{statistics.median(cost.unmix_seconds):.4f}",
            f"{cost.views_per_s('base'):.1f}", f"{cost.views_per_s('unmix'):.1f}",
            f"{base_online} -> {mix_online}", f"{base_momentum} -> {mix_momentum}")


def parse_methods(text: Optional[str]) -> List[str]:
    """``"simclr,byol"`` -> ["simclr", "byol"]; None -> every pair."""
    if text is None:
        return list(PAIRS)
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in PAIRS]
    if unknown or not methods:
        raise ValueError(f"--methods must be a comma-separated subset of {', '.join(PAIRS)}, got {text!r}")
    return methods


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step_cost", description=__doc__.split("\n")[0])
    add_options(parser, DEFAULTS)
    parser.add_argument("--methods", help="comma-separated base methods (default: all 19 pairs)")
    args = parser.parse_args(argv)
    try:
        methods, options = parse_methods(args.methods), options_from(args)
    except ValueError as err:
        parser.error(str(err))
    prepare(options)
    print(f"step cost: {options}")
    measure(methods, options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
