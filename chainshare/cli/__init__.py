"""``chainshare``: the one command-line entry point.

Every subcommand prints JSON with ``--json``; every user error becomes a clear message on stderr
and a non-zero exit (2 for bad usage/input, 1 for failures of the operation itself).
"""

from __future__ import annotations

import sys

import click

from chainshare import __version__
from chainshare.cli.common import run_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chainshare")
def cli() -> None:
    """chainshare: permissioned blockchain node for governed inter-agency data sharing."""


def _register() -> None:
    from chainshare.cli import (  # noqa: F401
        access,
        audit,
        bench,
        ca,
        chain,
        credit,
        dataset,
        devnet,
        emergency,
        explorer,
        genesis,
        joint,
        node,
        tx,
    )

    for mod in (ca, genesis, node, devnet, tx, chain, bench, dataset, access, audit, credit, explorer, joint, emergency):
        cli.add_command(mod.group)
    from chainshare.cli import credential

    credit.group.add_command(credential.group)  # chainshare credit credential ...


def main(argv: list[str] | None = None) -> None:
    _register()
    sys.exit(run_cli(cli, argv))
