"""The paper-table recipes and ``python -m unmix_ext.reproduce``: no training here.

Every recipe must load and validate; each table must carry the paper's rows with the
paper's numbers, each row pointing at a recipe that trains what the row says; the
renderer must write markdown and a PNG from given results, mark smoke runs, subtract
correctly and show ``missing`` for a row without results.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from unmix_ext.runner.rundir import RunDir
from unmix_ext.runner.run import as_run
from unmix_ext.tools import reproduce
from unmix_ext.runner.builder import solo_method_kwargs, ssl_methods
from unmix_ext.runner.config import ConfigError, load_config, resolved_method
from unmix_ext.tools.reproduce import (
    MISSING,
    NOT_RETRIEVABLE,
    RECIPES,
    SMOKE_MARKER,
    TABLES,
    difference,
    render_markdown,
    row_config,
    run_rows,
    table_spec,
    write_outputs,
)

# Row recipes only: files starting with "_" are shared bases, not runnable alone.
ROW_RECIPES = sorted(p for p in RECIPES.rglob("*.yaml") if not p.name.startswith("_"))


@pytest.fixture(scope="module")
def known():
    return set(ssl_methods())


@pytest.fixture(scope="module")
def tables():
    return {name: table_spec(name) for name in TABLES}


def _fake_results(value: float, **extra: float) -> dict:
    """A results.json with every field its readers take (unmix_ext.runner.rundir.RESULTS_FIELDS)."""
    return {"metrics": {"linear_top1": value, "knn_top1": value, **extra}, "recipe_hash": "0" * 12,
            "method": "simclr", "run_dir": "runs/x", "checkpoint": None, "pretrain_seconds": 1.0,
            "pretrain_images_per_s": None}


@pytest.mark.parametrize("path", ROW_RECIPES, ids=lambda p: str(p.relative_to(RECIPES)))
def test_every_recipe_loads_and_validates(path, known):
    cfg = load_config(path, known_methods=known)
    assert cfg.name  # each row names its run directory
    assert cfg.scale == "full"  # shrinking is the command's --scale, never a recipe's


def test_every_table_recipe_is_a_row_and_every_row_has_its_recipe(tables):
    rows = {row.recipe for table in tables.values() for row in table.rows}
    # recipes/ itself holds standalone examples, recipes/demo/ the `make demo` runs, recipes/newer_solo/
    # the methods of newer solo-learn (no table reports them)
    on_disk = {str(p.relative_to(RECIPES)) for p in ROW_RECIPES
               if p.parent != RECIPES and p.parent.name not in ("demo", "newer_solo")}
    assert rows == on_disk


def test_table1_rows_carry_the_paper_numbers(tables, known):
    table = tables["table1"]
    got = {(r.label, r.paper) for r in table.rows}
    assert got == {
        ("MoCo V2, 200 ep", 67.5), ("MoCo V2 + Un-Mix, 200 ep", 68.6),
        ("MoCo V2, 800 ep", 71.1), ("MoCo V2 + Un-Mix, 800 ep", 71.8),
    }
    for row in table.rows:
        cfg = load_config(RECIPES / row.recipe, known_methods=known)
        assert resolved_method(cfg) == ("mocov2_unmix" if "Un-Mix" in row.label else "mocov2")
        assert cfg.max_epochs == int(row.label.split(", ")[1].split()[0])
        assert (cfg.data.dataset, cfg.backbone.name, cfg.optimizer.batch_size) == ("imagenet", "resnet50", 256)
        assert cfg.method_kwargs["symmetric"] is False and cfg.unmix.symmetric is False
        assert cfg.momentum.base_tau == cfg.momentum.final_tau == 0.999
        lin = cfg.eval.linear
        assert (lin.lr, lin.batch_size, lin.max_epochs, lin.lr_decay_steps, lin.weight_decay) == (
            30.0, 256, 100, [60, 80], 0.0)


def test_moco_cifar_rows_carry_the_paper_numbers(tables, known):
    table = tables["moco-cifar"]
    assert len(table.rows) == 8 and table.metric == "knn_top1"
    papers = {r.recipe: r.paper for r in table.rows}
    assert papers["moco_cifar/moco-cifar10-asymmetric.yaml"] == 89.11
    assert papers["moco_cifar/moco_unmix-cifar100-symmetric.yaml"] == 68.83
    for row in table.rows:
        cfg = load_config(RECIPES / row.recipe, known_methods=known)
        symmetric = "symmetric" in row.label and "asymmetric" not in row.label
        assert cfg.method_kwargs["symmetric"] is symmetric and cfg.unmix.symmetric is symmetric
        assert cfg.data.dataset == ("cifar100" if "CIFAR-100" in row.label else "cifar10")
        assert (cfg.max_epochs, cfg.eval.knn.k, cfg.eval.knn.temperature) == (1000, 200, 0.1)
        assert resolved_method(cfg).endswith("_unmix") == ("Un-Mix" in row.label)


def test_swav_cifar_rows_carry_paper_and_rerun(tables, known):
    table = tables["swav-cifar"]
    assert len(table.rows) == 20 and table.rerun_label
    row = next(r for r in table.rows if r.recipe == "swav_cifar/swav_unmix-cifar100-600ep.yaml")
    assert (row.paper, row.rerun) == (64.9, 68.5)
    assert table.reference(row) == 68.5  # our CIFAR normalisation is compared with the re-run
    for row in table.rows:
        cfg = load_config(RECIPES / row.recipe, known_methods=known)
        assert f"{cfg.max_epochs} ep" in row.label
        assert resolved_method(cfg) == ("swav_unmix" if "Un-Mix" in row.label else "swav")


def test_small_table_has_no_paper_numbers(tables):
    table = tables["small"]
    assert len(table.rows) == 24 and all(r.paper is None for r in table.rows)
    text = render_markdown(table, [None] * len(table.rows), smoke=False)
    assert text.count(NOT_RETRIEVABLE) == 24


def test_unknown_table_is_a_one_line_error():
    with pytest.raises(ConfigError, match=r"^table: 'table2' is not one of the paper's tables "
                                          r"\(table1, moco-cifar, swav-cifar, small\)$"):
        table_spec("table2")


def test_difference_arithmetic():
    assert difference(70.0, 67.5) == pytest.approx(2.5)
    assert difference(66.0, 67.5) == pytest.approx(-1.5)
    assert difference(None, 67.5) is None and difference(70.0, None) is None


def test_renderer_writes_markdown_and_png(tables, tmp_path):
    table = tables["table1"]
    results = [_fake_results(v) for v in (66.0, 69.1, 71.1, 72.3)]
    md_path = write_outputs(table, results, smoke=False, out_dir=tmp_path)
    assert md_path == tmp_path / "table1.md"
    text = md_path.read_text()
    assert SMOKE_MARKER not in text
    assert "| MoCo V2, 200 ep | `recipes/table1/mocov2-200ep.yaml` | 67.5 | 66.00 | -1.50 |" in text
    assert "| MoCo V2 + Un-Mix, 800 ep | `recipes/table1/mocov2_unmix-800ep.yaml` | 71.8 | 72.30 | +0.50 |" in text
    png = (tmp_path / "table1.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_smoke_run_is_marked_and_kept_apart(tables, tmp_path):
    table = tables["moco-cifar"]
    md_path = write_outputs(table, [_fake_results(10.0)] * len(table.rows), smoke=True, out_dir=tmp_path)
    assert md_path.name == "moco-cifar-smoke.md" and (tmp_path / "moco-cifar-smoke.png").is_file()
    text = md_path.read_text()
    assert text.startswith(f"# {SMOKE_MARKER}")
    assert "smoke number (meaningless)" in text and "| ours |" not in text


def test_missing_result_shows_missing(tables):
    table = tables["swav-cifar"]
    results = [None, {"metrics": {}}] + [_fake_results(90.0)] * (len(table.rows) - 2)
    lines = render_markdown(table, results, smoke=False).splitlines()
    first, second = (next(l for l in lines if l.startswith(f"| {r.label} |")) for r in table.rows[:2])
    assert first.endswith(f"| {MISSING} | — |") and second.endswith(f"| {MISSING} | — |")
    # the third row is compared with the authors' re-run (84.9 for SwAV, CIFAR-10, 400 ep is 88.8)
    third = next(l for l in lines if l.startswith(f"| {table.rows[2].label} |"))
    assert third.endswith(f"| 90.00 | {90.0 - table.rows[2].rerun:+.2f} |")


def test_rows_read_batch_size_per_device_and_paths_as_run_does(tables, known):
    row = tables["table1"].rows[0]
    plain = load_config(RECIPES / row.recipe, known_methods=known)
    cfg = row_config(row, ["scale=smoke", "devices=2"])
    assert cfg.scale == "smoke" and cfg.devices == 2
    # per device, as solo-learn and python -m unmix_ext.run read it: 2 devices train twice the batch
    assert cfg.optimizer.batch_size == plain.optimizer.batch_size == 256
    assert solo_method_kwargs(cfg, 1000, world_size=2)["lr"] == pytest.approx(cfg.optimizer.lr * 2 * 256 / 256)
    assert cfg.data.train_path == "data/imagenet"  # as written: the run reads it from the working directory
    with pytest.raises(ConfigError, match=r"^recipes/table1/mocov2-200ep.yaml: optimizer.batch_size: must be >= 2"):
        row_config(row, ["optimizer.batch_size=1"])


def test_render_only_reads_saved_results_and_leaves_the_rest_missing(tables, tmp_path):
    table = tables["table1"]
    configs = [row_config(r, ["scale=smoke", f"checkpoint.dir={tmp_path}"]) for r in table.rows]
    saved = RunDir.of(as_run(configs[1]).cfg).path / "results.json"
    saved.parent.mkdir(parents=True)
    saved.write_text(json.dumps(_fake_results(42.0)))
    results = run_rows(table, configs, mode="render")
    assert [reproduce.metric_of(r, "linear_top1") for r in results] == [None, 42.0, None, None]


# a results.json that no finished run wrote: each reads as no results, never a traceback
MALFORMED_RESULTS = {
    "a list": b"[1, 2]",
    "metrics a string": json.dumps({**_fake_results(1.0), "metrics": "oops"}).encode(),
    "a metric a string": json.dumps(_fake_results("42")).encode(),
    "a metric true": json.dumps(_fake_results(True)).encode(),
    "a field missing": json.dumps({"metrics": {"linear_top1": 1.0}}).encode(),
    "200,000 levels deep": b"[" * 200_000 + b"]" * 200_000,
    "truncated": json.dumps(_fake_results(1.0)).encode()[:20],
    "not UTF-8": b"\xff\xfe{}",
}


@pytest.mark.parametrize("content", MALFORMED_RESULTS.values(), ids=MALFORMED_RESULTS.keys())
def test_render_only_reads_a_malformed_results_file_as_no_results(tables, tmp_path, content):
    table = tables["table1"]
    configs = [row_config(r, ["scale=smoke", f"checkpoint.dir={tmp_path}"]) for r in table.rows]
    saved = RunDir.of(configs[1]).path / "results.json"
    saved.parent.mkdir(parents=True)
    saved.write_bytes(content)

    results = run_rows(table, configs, mode="render")

    assert results == [None] * 4
    assert "| — |" in render_markdown(table, results, smoke=True)


def test_cli_spells_recipe_settings_as_every_command_does(capsys):
    from unmix_ext.reproduce import COMMAND, main

    keywords = COMMAND.keywords(["table1", "--scale", "smoke", "data.num_workers=0", "--devices", "2"])
    assert keywords == {"table": "table1", "overrides": ["data.num_workers=0", "scale=smoke", "devices=2"],
                        "mode": "run", "out": Path("results")}
    assert COMMAND.keywords(["small", "--render-only"])["mode"] == "render"
    assert main(["table2", "--render-only"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: table: 'table2' is not one of the paper's tables")
    with pytest.raises(SystemExit):
        main(["table1", "--devices", "0"])


def test_paper_numbers_are_packaged_with_their_sources():
    # read from the package, not from a path outside the repository
    assert Path(reproduce.PAPER_FILE).parent == Path(reproduce.__file__).parent
    paper = reproduce.load_paper()
    for key in ("table1", "moco_cifar", "swav_cifar", "small_datasets"):
        assert paper[key]["source"]
