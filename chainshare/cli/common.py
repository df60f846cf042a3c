"""Shared CLI plumbing: JSON/human output and the mapping of errors to exit codes."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from chainshare.errors import ChainshareError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def emit(result: Any, as_json: bool, human: str | None = None) -> None:
    """Print ``result`` as JSON (``--json``) or ``human`` text (default: indented JSON)."""
    if as_json or human is None:
        click.echo(json.dumps(result, indent=None if as_json else 2, sort_keys=False))
    else:
        click.echo(human)


def fail(message: str, code: int = EXIT_FAILURE) -> None:
    """Stop the command with ``message`` on stderr and exit ``code``."""
    raise click.exceptions.Exit(_print_error(message, code))


def _print_error(message: str, code: int) -> int:
    click.echo(f"error: {message}", err=True)
    return code


def run_cli(group: click.Group, argv: list[str] | None) -> int:
    """Run the click group; map chainshare errors to a message and exit code, never a traceback."""
    try:
        group.main(args=argv, prog_name="chainshare", standalone_mode=False)
        return EXIT_OK
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE
    except ChainshareError as exc:
        code = EXIT_USAGE if isinstance(exc, ValueError | LookupError | PermissionError) else EXIT_FAILURE
        return _print_error(exc.message, code)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        return _print_error(str(exc), EXIT_FAILURE)
    finally:
        sys.stdout.flush()
