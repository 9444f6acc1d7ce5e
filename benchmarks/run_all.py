"""``make bench``: the step, mixing and pipeline benchmarks, and the report ``results/bench.md``.

Usage::

    python -m benchmarks.run_all [--batch 16] [--repeats 7] [--methods simclr,byol] [--no-pipeline]
                                 [--out results/bench.md]

The defaults keep the whole run within about ten minutes on a 2-core CPU. Every
figure is a ratio measured in this one process, interleaved, median over rounds
(see :mod:`benchmarks.common`); the absolute times are there for scale only.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import shlex
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from benchmarks import mixing_cost, pipeline, step_cost
from benchmarks.common import CIFAR_QUEUE, Options, add_options, machine, markdown_table, options_from, prepare

DEFAULT_OUT = pipeline.REPO / "results" / "bench.md"
#: the mixing benchmark's rounds are cheap: it takes at least this many
MIXING_ROUNDS = 5


def report(options: Options, host: Dict[str, str], steps: List[step_cost.PairCost], mixing: mixing_cost.MixingCost,
           pipe: Optional[pipeline.PipelineCost], command: str, seconds: float) -> str:
    """The markdown report of one ``run_all``."""
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    out = [
        "# unmix-ext benchmarks: what Un-Mix costs",
        "",
        f"`{command}`, {when}, {seconds / 60:.1f} min. Every figure is a ratio of two things measured in one",
        "process, interleaved (base, variant, variant, base, ...), median over rounds of the per-round ratio:",
        "load from other jobs slows both sides of a round alike. Absolute times are for scale only.",
        "",
        "## Machine",
        "",
        *markdown_table(("", ""), list(host.items())),
        "",
        "## One optimizer step, Un-Mix variant / base",
        "",
        f"ResNet-18 (CIFAR stem), {options.batch} images a view of {options.image}x{options.image} px, "
        f"{options.repeats} rounds, autocast {options.amp}, channels_last {options.channels_last}. "
        "A step is `training_step` + `backward` + an SGD step, outside Lightning (no EMA update). "
        + ("Times are wall seconds between CUDA synchronisations. " if options.device.startswith("cuda") else
           f"Times are the process's CPU seconds ({options.threads or 'default'} torch thread(s)): time spent "
           "waiting for a core held by another job is not the step's cost. ") +
        "docs/unmix.md section 3 expects about 1.5 for a two-view method (one more online "
        "forward and backward over one view's batch, plus a momentum forward where the target side sees "
        "the mixture: BYOL, NNBYOL, DINO). Counting a forward as 1 and a backward as 2, the convolutions "
        "alone give 9/6 = 1.5 without a momentum encoder, 12/8 = 1.5 for BYOL, NNBYOL and DINO, and "
        "11/8 = 1.375 for MoCo and ReSSL (momentum passes over the clean views only); heads and losses "
        "add their own share. Memory: peak bytes a step allocates beyond what was live "
        "before it (" + ("`torch.cuda.max_memory_allocated`" if options.device.startswith("cuda") else
                         "CPU: running sum of the torch profiler's allocation events, not the resident set") +
        "). Encoder forwards: calls a step makes of the online (momentum) encoder, base -> Un-Mix. "
        f"solo-learn defaults throughout, except queues of {CIFAR_QUEUE} (its CIFAR setting) and W-MSE "
        "whitening the whole batch with half as many output dimensions.",
        "",
        *markdown_table(step_cost.COLUMNS, [step_cost.cells(cost) for cost in steps]),
        "",
        "## Mixing one view",
        "",
        f"`mix_with_reversed` vs `images.clone()` of the same view ({options.batch}x3x{options.image}x"
        f"{options.image} float32), same clock; the last mixer is what a variant's step does (seed its "
        "generator, draw mode, lam and box on the host, mix).",
        "",
        *markdown_table(mixing_cost.COLUMNS, mixing_cost.rows(mixing)),
        "",
        mixing_cost.share_line(mixing) + ".",
        "",
        "## Pipeline",
        "",
    ]
    if pipe is None:
        out.append("Not run (`--no-pipeline`).")
    else:
        for line in pipeline.lines(pipe):
            out.extend([line, ""])
        out.append(f"A smoke-scale `unmix_ext.runner.run` (batch {pipeline.DEFAULT_BATCH}, loading, augmentation, "
                   "Lightning's loop, validation), Un-Mix on vs off; the ratio is of images/s, so the step ratio "
                   "inverted and diluted by the rest of the loop. The smoke shrink gives ResNet-18 its ImageNet "
                   "stem (16x cheaper convolutions than the step table's CIFAR stem). images/s are the runner's, "
                   "over wall time, so noisier on a loaded machine than the tables above.")
    return "\n".join(out) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__.split("\n")[0])
    add_options(parser, step_cost.DEFAULTS)
    parser.add_argument("--methods", help="comma-separated base methods (default: all 19 pairs)")
    parser.add_argument("--calls", type=int, default=mixing_cost.DEFAULT_CALLS, help="mixing calls a timing")
    parser.add_argument("--pipeline-rounds", type=int, default=pipeline.DEFAULT_ROUNDS)
    parser.add_argument("--pipeline-epochs", type=int, default=pipeline.DEFAULT_EPOCHS)
    parser.add_argument("--no-pipeline", action="store_true", help="skip the pipeline benchmark")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the report (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        options, methods = options_from(args), step_cost.parse_methods(args.methods)
    except ValueError as err:
        parser.error(str(err))
    for name in ("calls", "pipeline_rounds", "pipeline_epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    prepare(options)
    command = " ".join(["python -m benchmarks.run_all", shlex.join(sys.argv[1:] if argv is None else argv)]).strip()
    started, host = time.perf_counter(), machine(options.device)

    print(f"== step cost ({options})", flush=True)
    steps = step_cost.measure(methods, options, report=lambda line: print(line, flush=True))
    print("== mixing cost", flush=True)
    mixing_options = dataclasses.replace(options, repeats=max(options.repeats, MIXING_ROUNDS),
                                         warmup=max(options.warmup, 1))
    mixing = mixing_cost.measure(mixing_options, args.calls)
    print("\n".join(mixing_cost.lines(mixing)), flush=True)
    pipe = None
    if not args.no_pipeline:
        print("== pipeline", flush=True)
        pipe = pipeline.measure(epochs=args.pipeline_epochs, rounds=args.pipeline_rounds)
        print("\n".join(pipeline.lines(pipe)), flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(options, host, steps, mixing, pipe, command, time.perf_counter() - started))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
