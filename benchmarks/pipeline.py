"""Throughput of the whole pipeline: a smoke-sized ``unmix_ext.runner.run`` with Un-Mix on vs off.

The same recipe runs twice a round, ``unmix.enabled=false`` then ``true``, through
:func:`unmix_ext.runner.run.run` (loading, augmentation, Lightning's loop, validation
between epochs: everything a user's run does, except the offline evaluation, which
is switched off). The runner's ``pretrain_images_per_s`` counts training images over
the training batches' wall time, loading included. Reported: images/s of each, and
their ratio (Un-Mix / base; the step benchmark's ratio, inverted and diluted by
what the loop does besides the step). The smoke shrink (:mod:`unmix_ext.runner.smoke`)
gives ResNet-18 the ImageNet stem, so convolutions weigh about 16x less than in the
step benchmark's CIFAR stem, and the rest of the loop weighs more.

Usage::

    python -m benchmarks.pipeline [--recipe recipes/small/simclr-cifar10.yaml] [--batch 32] [--epochs 2] [--rounds 2]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from benchmarks.common import Options, paired_ratio, prepare

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RECIPE = REPO / "recipes" / "small" / "simclr-cifar10.yaml"
DEFAULT_BATCH = 32
DEFAULT_EPOCHS = 2
DEFAULT_ROUNDS = 2
SIDES = {"base": "false", "unmix": "true"}


@dataclass
class PipelineCost:
    """images/s of each side, one value per round; ``error`` says why there are none.

    ``smoke_changes``: what the runner's smoke shrink changed in the recipe (``{key: {"from", "to"}}``).
    """

    recipe: str
    images_per_s: Dict[str, List[float]] = field(default_factory=dict)
    smoke_changes: Dict[str, Dict[str, object]] = field(default_factory=dict)
    error: Optional[str] = None

    @property
    def ratio(self) -> float:
        """Un-Mix images/s over base images/s, median over rounds."""
        return paired_ratio(self.images_per_s["unmix"], self.images_per_s["base"])


def overrides(workdir: Path, batch: int, epochs: int) -> List[str]:
    """The recipe at smoke scale, ``batch`` images a step, no evaluation, outputs in ``workdir``."""
    return [
        "scale=smoke", f"optimizer.batch_size={batch}", f"max_epochs={epochs}", f"checkpoint.dir={workdir}",
        "checkpoint.enabled=false", "wandb.enabled=false", "eval.knn.enabled=false", "eval.linear.enabled=false",
    ]


def measure(recipe: Path = DEFAULT_RECIPE, batch: int = DEFAULT_BATCH, epochs: int = DEFAULT_EPOCHS,
            rounds: int = DEFAULT_ROUNDS) -> PipelineCost:
    """Runs the recipe ``rounds`` times each way, interleaved; a failing runner is reported, not raised."""
    cost = PipelineCost(str(recipe))
    try:
        from unmix_ext.runner.builder import ssl_methods
        from unmix_ext.runner.config import load_config
        from unmix_ext.runner.run import run
    except ImportError as err:
        cost.error = f"runner not available: {err}"
        return cost
    with tempfile.TemporaryDirectory(prefix="unmix-bench-") as workdir:  # fake data is written once, reused
        common = overrides(Path(workdir), batch, epochs)
        for _ in range(rounds):
            for side, enabled in SIDES.items():
                chatter = io.StringIO()  # progress bars and the run's summary
                try:
                    cfg = load_config(recipe, [*common, f"unmix.enabled={enabled}"], known_methods=ssl_methods())
                    with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
                        results = run(cfg, recipe)
                except Exception as err:  # noqa: BLE001  (any failure of the runner is the report)
                    cost.error = f"runner not available: {type(err).__name__}: {' '.join(str(err).split())}"
                    return cost
                cost.images_per_s.setdefault(side, []).append(results["pretrain_images_per_s"])
                cost.smoke_changes = results["smoke_changes"]
    return cost


def lines(cost: PipelineCost) -> List[str]:
    if cost.error:
        return [f"pipeline: {cost.error}"]
    base, unmix = (statistics.median(cost.images_per_s[side]) for side in SIDES)
    shrink = ", ".join(f"{key} {change['from']!r}->{change['to']!r}" for key, change in cost.smoke_changes.items())
    return [f"pipeline images/s ratio (unmix / base): {cost.ratio:.2f} "
            f"(base {base:.1f} images/s, unmix {unmix:.1f} images/s, {len(cost.images_per_s['base'])} rounds; "
            f"{cost.recipe})",
            f"smoke shrink: {shrink or 'nothing'}"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE, help="a recipe (default %(default)s)")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="images a step (%(default)s)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="epochs a run (%(default)s)")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="runs of each side (%(default)s)")
    parser.add_argument("--threads", type=int, default=Options().threads, help="torch CPU threads (%(default)s)")
    args = parser.parse_args(argv)
    for name in ("batch", "epochs", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    prepare(Options(threads=args.threads))
    print("\n".join(lines(measure(args.recipe, args.batch, args.epochs, args.rounds))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
