"""``chainshare``: the one command-line entry point.

Every subcommand prints JSON with ``--json``; every user error becomes a clear message on stderr
and a non-zero exit (2 for bad usage/input, 1 for failures of the operation itself).
"""

from __future__ import annotations

import importlib
import sys

import click

from chainshare import __version__
from chainshare.cli.common import run_cli

# The subcommands, each the ``group`` of the module ``chainshare.cli.<name>``, imported only when that
# subcommand runs (or when help lists them all): most pull in heavy libraries (web3's ABI codec, the
# sharing service, the privacy runtime), ~0.9 s together.
SUBCOMMANDS = ("access", "audit", "bench", "ca", "chain", "credit", "dataset", "devnet", "emergency", "explorer",
               "genesis", "joint", "node", "tx")


class LazyGroup(click.Group):
    """A click group whose ``SUBCOMMANDS`` are imported on first use; help, completion and errors see
    every name."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(SUBCOMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in SUBCOMMANDS:
            command = importlib.import_module(f"chainshare.cli.{cmd_name}").group
            self.add_command(command, cmd_name)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chainshare")
def cli() -> None:
    """chainshare: permissioned blockchain node for governed inter-agency data sharing."""


def load_all_commands() -> None:
    """Import every subcommand now (for tools that walk the whole command tree)."""
    for name in SUBCOMMANDS:
        cli.get_command(click.Context(cli), name)


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(cli, argv))
