"""The ``chainshare`` entry point imports a subcommand's module only when that subcommand runs
(chainshare/cli/__init__.py, ``LazyGroup``), and still knows every command by name."""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from chainshare.cli import SUBCOMMANDS, cli, load_all_commands


def test_a_subcommand_runs_without_importing_the_others() -> None:
    code = ("import sys\nfrom chainshare.cli import main\ntry:\n    main(['chain', '--help'])\nexcept SystemExit as e:\n"
            "    assert e.code == 0, e.code\nprint(sorted(m for m in sys.modules if m.startswith('chainshare.')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    loaded = proc.stdout.strip().splitlines()[-1]
    assert "'chainshare.cli.chain'" in loaded
    for other in ("chainshare.cli.joint", "chainshare.cli.dataset", "chainshare.cli.node", "chainshare.sharing.service"):
        assert f"'{other}'" not in loaded, other


def test_every_subcommand_is_listed_and_resolves_to_the_command_of_that_name() -> None:
    ctx = click.Context(cli)
    assert set(SUBCOMMANDS) <= set(cli.list_commands(ctx))
    load_all_commands()
    for name in SUBCOMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
    credit = cli.get_command(ctx, "credit")
    assert isinstance(credit, click.Group) and "credential" in credit.list_commands(ctx)


def test_an_unknown_subcommand_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["no-such-command"], prog_name="chainshare")
    assert result.exit_code == 2 and "No such command 'no-such-command'" in result.output
