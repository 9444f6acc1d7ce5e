"""The commands' one grammar (unmix_ext.cli): parsing, the shared recipe options, one-line errors,
and no heavy import before the arguments parse."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from unmix_ext import cli, demo, export, linear, main_pretrain, reproduce, run
from unmix_ext.errors import CommandError

COMMANDS = (run, linear, export, reproduce, demo, main_pretrain)


def test_commands_import_nothing_heavy():
    code = ("import sys, unmix_ext.cli, " + ", ".join(f"unmix_ext.{c.COMMAND.name}" for c in COMMANDS)
            + "; print(sorted(m for m in ('torch', 'pytorch_lightning', 'solo', 'omegaconf') if m in sys.modules))")
    shown = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert shown.strip() == "[]"


@pytest.mark.parametrize("module", COMMANDS, ids=lambda m: m.COMMAND.name)
def test_each_command_is_named_after_its_module_and_points_at_a_function(module):
    command = module.COMMAND
    assert module.__name__ == f"unmix_ext.{command.name}" and module.main == command.main
    path, function = command.implementation.split(":")
    assert callable(getattr(__import__(path, fromlist=[function]), function))


def _choices(command: cli.Command, dest: str) -> list[str]:
    metavar = next(a.options["metavar"] for a in command.arguments if a.options.get("dest", a.names[0]) == dest)
    return re.fullmatch(r"\{(.*)\}", metavar).group(1).split(",")


def test_the_help_names_exactly_what_the_tools_accept():
    from unmix_ext.tools import export as export_tool
    from unmix_ext.tools import reproduce as reproduce_tool

    assert _choices(reproduce.COMMAND, "table") == list(reproduce_tool.TABLES)
    assert sorted(_choices(export.COMMAND, "fmt")) == sorted(export_tool.FORMAT_NAMES)
    assert sorted(_choices(export.COMMAND, "--which")) == sorted(export_tool.WHICH)


def test_recipe_options_are_the_same_settings_as_key_value():
    keywords = run.COMMAND.keywords(["r.yaml", "optimizer.lr=0.1", "--scale", "smoke", "--num-nodes", "2"])
    assert keywords == {"recipe": "r.yaml", "overrides": ["optimizer.lr=0.1", "scale=smoke", "num_nodes=2"]}
    assert linear.COMMAND.keywords(["x.ckpt"]) == {"checkpoint": "x.ckpt", "overrides": []}
    with pytest.raises(SystemExit):
        run.COMMAND.keywords(["r.yaml", "--devices", "0"])


def test_a_command_error_is_one_line_with_its_exit_status(capsys):
    class Failed(CommandError):
        exit_status = 3

    def fail(**_):
        raise Failed("row x:\n  broke")

    assert cli.report_errors(fail) == 3
    assert capsys.readouterr().err == "error: row x: broke\n"
    assert cli.report_errors(lambda: None) == 0
