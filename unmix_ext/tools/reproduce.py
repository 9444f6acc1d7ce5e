"""``python -m unmix_ext.reproduce TABLE``: run every row of one of the paper's tables, compare.

Tables (``TABLE``; one recipe per row under ``recipes/``):

============ ===================== ==================================================
table        recipes               rows
============ ===================== ==================================================
table1       recipes/table1/       MoCo v2 vs + Un-Mix, ImageNet-1K, 200 and 800 epochs
moco-cifar   recipes/moco_cifar/   MoCo vs + Un-Mix, CIFAR-10/100, (a)symmetric loss
swav-cifar   recipes/swav_cifar/   SwAV vs + Un-Mix, CIFAR-10/100, 200 to 1000 epochs
small        recipes/small/        SimCLR, BYOL, W-MSE vs + Un-Mix on four small datasets
============ ===================== ==================================================

Each row's recipe runs in this process (:func:`unmix_ext.runner.run.run`), one after the
other; then the table is printed as markdown (row, paper, ours, difference) and
written to ``<out>/<table>.md`` and ``<out>/<table>.png`` (paper vs ours bars).
A smoke run (``--scale smoke``) writes ``<table>-smoke.md``/``.png`` instead, so it
never overwrites a reproduction, and says ``SMOKE RUN — not a reproduction`` in
its title and column labels. The paper's numbers come from the packaged copy
``unmix_ext/tools/paper_results.yaml`` (each with its source).

Every row's recipe is read as ``python -m unmix_ext.run`` reads it: ``key=value`` overrides
(and ``--scale``, ``--devices``, ``--num-nodes``) apply to every row, ``optimizer.batch_size``
is per device (solo-learn's meaning: N devices train N times the batch, and the learning rate
follows by solo-learn's rule), and relative paths are read from the working directory.

``--resume`` reads the rows whose run directory already holds ``results.json``
(same recipe, same overrides) instead of training them again; ``--render-only``
trains nothing and shows ``missing`` for rows without results. A row that fails
stops the command with one line naming the row.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml
from pytorch_lightning.utilities import rank_zero_only

import unmix_ext.methods  # noqa: F401  (patches solo-learn, registers the Un-Mix variants)
from unmix_ext.errors import CommandError
from unmix_ext.recipes import ROOT as RECIPES
from unmix_ext.runner.config import Config, ConfigError
from unmix_ext.runner.recipe import load_recipe
from unmix_ext.runner.run import as_run, run
from unmix_ext.runner.rundir import saved_results

PAPER_FILE = Path(__file__).with_name("paper_results.yaml")
SMOKE_MARKER = "SMOKE RUN — not a reproduction"
MISSING = "missing"
NOT_RETRIEVABLE = "n/a (not retrievable)"
#: exit status of a row that fails while running (a recipe or data mistake exits with 2, as every command)
ROW_FAILED = 1

_DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "stl10": "STL-10", "tiny_imagenet": "Tiny ImageNet"}


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of a table: its recipe (below ``recipes/``) and the published top-1 (%).

    ``paper`` None: the paper has the number but it could not be retrieved.
    ``rerun``: the authors' later re-run of the same row, where there is one.
    """

    label: str
    recipe: str
    paper: float | None
    rerun: float | None = None


@dataclasses.dataclass(frozen=True)
class Table:
    """A paper table: rows, the metric of ``results["metrics"]`` compared, and notes.

    ``extra_metrics``: (metric key, short label) columns shown after ``ours``.
    ``rerun_label``: header of the re-run column; when set, the difference is
    taken against the re-run (where a row has one) instead of the paper.
    """

    name: str
    title: str
    source: str
    metric: str
    metric_label: str
    rows: tuple[Row, ...]
    notes: tuple[str, ...] = ()
    extra_metrics: tuple[tuple[str, str], ...] = ()
    rerun_label: str | None = None

    def reference(self, row: Row) -> float | None:
        """The number ``ours`` is compared with: the re-run where the table has one, else the paper."""
        if self.rerun_label is not None and row.rerun is not None:
            return row.rerun
        return row.paper


# --------------------------------------------------------------------------- #
# The tables, built from the packaged paper numbers
# --------------------------------------------------------------------------- #

_BUILDERS: dict[str, Callable[[dict], Table]] = {}


def _table(name: str) -> Callable[[Callable[[dict], Table]], Callable[[dict], Table]]:
    def register(builder: Callable[[dict], Table]) -> Callable[[dict], Table]:
        _BUILDERS[name] = builder
        return builder

    return register


def _pair(label: str, template: str, paper: Sequence[float | None],
          rerun: Sequence[float | None] = (None, None)) -> tuple[Row, Row]:
    """A base row and its Un-Mix row; ``template`` has ``{unmix}`` where ``_unmix`` goes in the recipe name."""
    return (Row(label, template.format(unmix=""), paper[0], rerun[0]),
            Row(f"{label} + Un-Mix", template.format(unmix="_unmix"), paper[1], rerun[1]))


@_table("table1")
def _table1(paper: dict) -> Table:
    spec = paper["table1"]
    # the paper's rows we have a recipe for; the others are quoted from other papers
    recipe_of = {"MoCo V2": "mocov2", "MoCo V2 + Un-Mix": "mocov2_unmix"}
    rows = tuple(
        Row(f"{r['method']}, {r['epochs']} ep", f"table1/{recipe_of[r['method']]}-{r['epochs']}ep.yaml", r["top1"])
        for r in spec["rows"]
        if r["method"] in recipe_of
    )
    return Table(
        name="table1", title=f"Table 1 — {spec['caption']}", source=spec["source"],
        metric="linear_top1", metric_label="linear top-1 (%)", rows=rows,
        notes=(
            f"Protocol: {spec['protocol']}.",
            "Rows the paper quotes from other work (MoCo, CMC, SimCLR, PIRL) and the multi-scale Un-Mix row "
            "(69.8; its setting is not described in the released code) have no recipe here.",
            "Batch 256 per device, the paper's total on one device; the paper's 8 GPUs (32 each, BatchNorm per GPU) "
            "are --devices 8 optimizer.batch_size=32 eval.linear.batch_size=32.",
        ),
    )


@_table("moco-cifar")
def _moco_cifar(paper: dict) -> Table:
    spec = paper["moco_cifar"]
    rows = [
        row
        for dataset in ("cifar10", "cifar100")
        for loss in ("asymmetric", "symmetric")
        for row in _pair(f"{_DATASET_NAMES[dataset]}, {loss}, MoCo", f"moco_cifar/moco{{unmix}}-{dataset}-{loss}.yaml",
                         spec[dataset][loss])
    ]
    return Table(
        name="moco-cifar", title=f"MoCo on CIFAR — {spec['caption']}", source=spec["source"],
        metric="knn_top1", metric_label="weighted kNN top-1 (%), k=200, t=0.1", rows=tuple(rows),
        notes=(
            "kNN features differ: the authors' kNN votes with the normalised 128-d head output; ours "
            "(unmix_ext/runner/evaluate.py) with the backbone's pooled 512-d features, as solo-learn's kNN does.",
            "Not reproduced: the demo's BatchNorm split into 8 groups and its shuffled-BN key encoder.",
        ),
    )


@_table("swav-cifar")
def _swav_cifar(paper: dict) -> Table:
    spec = paper["swav_cifar"]
    rows = [
        row
        for dataset in ("cifar10", "cifar100")
        for epochs, numbers in spec[dataset].items()
        for row in _pair(f"{_DATASET_NAMES[dataset]}, {epochs} ep, SwAV",
                         f"swav_cifar/swav{{unmix}}-{dataset}-{epochs}ep.yaml", numbers, spec[f"rerun_{dataset}"][epochs])
    ]
    return Table(
        name="swav-cifar", title=f"SwAV on CIFAR — {spec['caption']}",
        source=f"{spec['source']}; re-run: {spec['rerun_source']}",
        metric="linear_top1", metric_label="linear top-1 (%)", rows=tuple(rows),
        rerun_label="authors' re-run (CIFAR mean/std)",
        notes=(
            "Our recipes normalise with CIFAR mean/std and use batch 128, as the authors' re-run: the "
            "difference is taken against the re-run. The paper's figure used ImageNet mean/std and batch 256.",
            "The authors' queue of 120 rounds down to 0 in their code (a multiple of the batch of 128): "
            "no queue here either (recipes/swav_cifar/_base.yaml).",
        ),
    )


@_table("small")
def _small(paper: dict) -> Table:
    spec = paper["small_datasets"]
    methods = {"simclr": "SimCLR", "byol": "BYOL", "wmse": "W-MSE"}
    rows = tuple(
        row
        for dataset in _DATASET_NAMES
        for method, title in methods.items()
        for row in _pair(f"{_DATASET_NAMES[dataset]}, {title}", f"small/{method}{{unmix}}-{dataset}.yaml", (None, None))
    )
    return Table(
        name="small", title=f"Small datasets — {spec['caption']}", source=spec["source"],
        metric="linear_top1", metric_label="linear top-1 (%)", rows=rows,
        extra_metrics=(("knn_top1", "5-NN"),),
        notes=(
            "The paper's numbers for this table could not be retrieved: only ours are shown.",
            "5-NN is our weighted kNN (k=5, t=0.1) on backbone features; the linear probe is solo-learn's protocol.",
        ),
    )


TABLES = tuple(_BUILDERS)


def load_paper(path: Path = PAPER_FILE) -> dict:
    """The packaged paper numbers (a copy of the project's reference file)."""
    return yaml.safe_load(path.read_text())


def table_spec(name: str, paper: dict | None = None) -> Table:
    """The table called ``name`` (one of :data:`TABLES`) with the paper's numbers attached."""
    if name not in _BUILDERS:
        raise ConfigError(f"table: {name!r} is not one of the paper's tables ({', '.join(TABLES)})")
    return _BUILDERS[name](load_paper() if paper is None else paper)


# --------------------------------------------------------------------------- #
# Running the rows
# --------------------------------------------------------------------------- #


def row_config(row: Row, overrides: Sequence[str] = ()) -> Config:
    """The row's recipe with ``overrides``; raises ConfigError naming the recipe."""
    try:
        return load_recipe(RECIPES / row.recipe, overrides)
    except ConfigError as err:
        raise ConfigError(f"recipes/{row.recipe}: {err}") from None


class RowFailed(CommandError):
    """A row stopped the table; the message is one line naming it."""

    exit_status = ROW_FAILED


def run_rows(table: Table, configs: Sequence[Config], mode: str = "run") -> list[dict[str, Any] | None]:
    """Each row's results: trained (``run``), read when already there (``resume``) or only read (``render``).

    Raises:
        RowFailed: a row's recipe, data or training failed.
    """
    results: list[dict[str, Any] | None] = []
    for row, cfg in zip(table.rows, configs):
        done = None if mode == "run" else saved_results(as_run(cfg).cfg)  # a training row reads nothing first
        if mode == "render" or (mode == "resume" and done is not None):
            results.append(done)
            continue
        if rank_zero_only.rank == 0:
            print(f"== {table.name}: {row.label} ({row.recipe})", flush=True)
        try:
            results.append(run(cfg, RECIPES / row.recipe))
        except Exception as err:  # noqa: BLE001  (any failure ends the table with one line)
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise RowFailed(f"row {row.label!r} ({row.recipe}): {type(err).__name__}: {first}") from err
    return results


# --------------------------------------------------------------------------- #
# Rendering
# --------------------------------------------------------------------------- #


def difference(ours: float | None, reference: float | None) -> float | None:
    """``ours - reference`` in accuracy points, None when either is absent."""
    return None if ours is None or reference is None else ours - reference


def metric_of(results: dict[str, Any] | None, key: str) -> float | None:
    """``results["metrics"][key]``, None when the run or the metric is missing."""
    value = (results or {}).get("metrics", {}).get(key)
    return None if value is None else float(value)


def _paper_text(value: float | None) -> str:
    return NOT_RETRIEVABLE if value is None else f"{value:g}"


def _ours_text(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"


def render_markdown(table: Table, results: Sequence[dict[str, Any] | None], smoke: bool) -> str:
    """The table as markdown: row, recipe, paper (and re-run), ours, difference, then the notes."""
    against = "re-run" if table.rerun_label else "paper"
    ours_label = "smoke number (meaningless)" if smoke else "ours"
    diff_label = f"smoke − {against} (meaningless)" if smoke else f"ours − {against}"
    extra_labels = [f"smoke {label} (meaningless)" if smoke else f"ours {label}" for _, label in table.extra_metrics]
    header = ["row", "recipe", "paper", *([table.rerun_label] if table.rerun_label else []), ours_label,
              *extra_labels, diff_label]
    lines = [
        f"# {SMOKE_MARKER}: {table.title}" if smoke else f"# {table.title}",
        "",
    ]
    if smoke:
        lines += [f"**{SMOKE_MARKER}.** Every recipe was shrunk by `scale: smoke` (a few CPU minutes, tiny or "
                  "fake data); these numbers only show that the pipeline runs end to end.", ""]
    lines += [
        f"Metric: {table.metric_label} (`{table.metric}`). Paper numbers: {table.source} "
        "(`unmix_ext/tools/paper_results.yaml`).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for row, result in zip(table.rows, results):
        ours = metric_of(result, table.metric)
        diff = difference(ours, table.reference(row))
        cells = [row.label, f"`recipes/{row.recipe}`", _paper_text(row.paper)]
        if table.rerun_label:
            cells.append(_paper_text(row.rerun))
        cells.append(_ours_text(ours))
        cells += [_ours_text(metric_of(result, key)) for key, _ in table.extra_metrics]
        cells.append("—" if diff is None else f"{diff:+.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Notes:", *(f"- {note}" for note in table.notes), ""]
    return "\n".join(lines)


def render_png(table: Table, results: Sequence[dict[str, Any] | None], smoke: bool, path: Path) -> Path:
    """Paper (and re-run) vs ours, one group of bars per row; absent numbers are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [("paper", [row.paper for row in table.rows])]
    if table.rerun_label:
        series.append((table.rerun_label, [row.rerun for row in table.rows]))
    series.append(("smoke (meaningless)" if smoke else "ours", [metric_of(r, table.metric) for r in results]))
    width = 0.8 / len(series)
    figure, axes = plt.subplots(figsize=(max(6.0, 0.6 * len(table.rows) + 2), 4.5))
    for i, (label, values) in enumerate(series):
        xs = [x + (i - (len(series) - 1) / 2) * width for x, v in enumerate(values) if v is not None]
        axes.bar(xs, [v for v in values if v is not None], width, label=label)
    axes.set_xticks(range(len(table.rows)), [row.label for row in table.rows], rotation=60, ha="right", fontsize=7)
    axes.set_ylabel(table.metric_label)
    axes.set_ylim(0, 112)  # percent, with headroom for the legend above the tallest bars
    axes.set_title(f"{SMOKE_MARKER}\n{table.title}" if smoke else table.title, fontsize=9)
    axes.legend(fontsize=7, loc="upper center", ncol=len(series))
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_outputs(table: Table, results: Sequence[dict[str, Any] | None], smoke: bool, out_dir: Path) -> Path:
    """Writes ``<table>.md`` and ``<table>.png`` (``<table>-smoke.*`` for smoke runs); returns the .md path."""
    stem = f"{table.name}-smoke" if smoke else table.name
    markdown = out_dir / f"{stem}.md"
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(render_markdown(table, results, smoke))
    render_png(table, results, smoke, out_dir / f"{stem}.png")
    return markdown


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #


def reproduce(table: str, overrides: Sequence[str] = (), mode: str = "run", out: Path = Path("results")) -> str:
    """Runs (or reads) every row of ``table`` with ``overrides`` and writes its outputs; returns the markdown.

    Args:
        table: one of :data:`TABLES`.
        overrides: ``key=value`` settings for every row (``scale=smoke``, ``devices=4``, ...).
        mode: ``run`` trains every row, ``resume`` only those without results, ``render`` none.
        out: the folder of ``<table>.md`` and ``.png``.

    Raises:
        ConfigError: an unknown table, or a row's recipe or an override is wrong;
        RowFailed: a row failed while running.
    """
    spec = table_spec(table)
    configs = [row_config(row, overrides) for row in spec.rows]  # every row checked before the first trains
    results = run_rows(spec, configs, mode)
    smoke = configs[0].scale == "smoke"
    markdown = render_markdown(spec, results, smoke)
    if rank_zero_only.rank == 0:
        path = write_outputs(spec, results, smoke, out)
        print(f"\n{markdown}\nwritten: {path} and {path.with_suffix('.png')}")
    return markdown
