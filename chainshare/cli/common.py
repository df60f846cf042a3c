"""Shared CLI plumbing: JSON/human output and the mapping of errors to exit codes."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from chainshare.decimal_text import parse_ascii_decimal
from chainshare.errors import ChainshareError, InvalidInput
from chainshare.supervision import start_supervisor_watch

EXECUTION_INT_MAX_STR_DIGITS = 4300  # CPython's default

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


def parse_positive_id(value: str, what: str) -> int:
    """An on-chain id given on the command line (1..2**64-1), or a precise error naming ``what``."""
    number = parse_ascii_decimal(value, max_digits=20)
    if number is None or not 1 <= number < 2**64:
        raise InvalidInput(f"{what} must be a positive integer, got {value!r}")
    return number


def parse_hash32(text: str, what: str) -> bytes:
    """32 bytes given as 64 hex digits (``0x`` optional), or a precise error naming ``what``."""
    body = text[2:] if text.startswith("0x") else text
    try:
        raw = bytes.fromhex(body)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise InvalidInput(f"{what} must be 32 bytes of hex (64 hex digits), got {text[:80]!r}")
    return raw


def _print_error(message: str, code: int) -> int:
    click.echo(f"error: {message}", err=True)
    return code


def run_cli(group: click.Group, argv: list[str] | None) -> int:
    """Run the click group; map chainshare errors to a message and exit code, never a traceback. Under
    ``CHAINSHARE_EXIT_WITH_PID`` the process stops once that supervisor has ended (``chainshare.supervision``)."""
    # Contracts parse JSON (json.loads reads integers under this limit): every node must use the same one,
    # whatever PYTHONINTMAXSTRDIGITS its environment sets, or two nodes could execute a block differently.
    sys.set_int_max_str_digits(EXECUTION_INT_MAX_STR_DIGITS)
    try:
        start_supervisor_watch()
        rv = group.main(args=argv, prog_name="chainshare", standalone_mode=False)
        # With standalone_mode=False click *returns* the code of ``ctx.exit(code)`` instead of raising.
        return rv if isinstance(rv, int) else EXIT_OK
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


def acting_options(fn: Any) -> Any:
    """Options of a command that acts for an agency: --devnet DIR --as AGENCY, or --node URL --keystore FILE."""
    from pathlib import Path

    for opt in reversed([
        click.option("--devnet", "devnet_dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Devnet directory (node and key from its devnet.json)."),
        click.option("--as", "as_agency", help="Agency to act as (with --devnet)."),
        click.option("--node", "node_url", help="Node URL, e.g. http://127.0.0.1:8545 (with --keystore)."),
        click.option("--keystore", type=click.Path(dir_okay=False, path_type=Path),
                     help="V3 keystore of the agency account (with --node)."),
        click.option("--password-file", type=click.Path(dir_okay=False, path_type=Path),
                     help="Keystore password file (default: $CHAINSHARE_PASSWORD)."),
    ]):
        fn = opt(fn)
    return fn


def resolve_actor(devnet_dir: Any, as_agency: str | None, node_url: str | None, keystore: Any,
                  password_file: Any, need_key: bool = True) -> tuple[str, bytes | None]:
    """The node URL and the account key to act with, from either option set; clear errors otherwise."""
    from chainshare.errors import InvalidInput

    if devnet_dir is not None:
        if node_url or keystore:
            raise InvalidInput("use either --devnet/--as or --node/--keystore, not both")
        from chainshare.devnet import read_devnet

        info = read_devnet(devnet_dir)
        agencies = [a["agency"] for a in info["accounts"]]
        agency = as_agency or (agencies[0] if not need_key else None)
        if agency is None:
            raise InvalidInput(f"--as AGENCY is required with --devnet (one of: {', '.join(agencies)})")
        acct = next((a for a in info["accounts"] if a["agency"] == agency), None)
        if acct is None:
            raise InvalidInput(f"agency {agency!r} is not in {devnet_dir}/devnet.json (one of: {', '.join(agencies)})")
        node = next((n for n in info["nodes"] if n["agency"] == agency), info["nodes"][0])
        return node["rpc"], bytes.fromhex(acct["private_key"][2:])
    if node_url is None:
        raise InvalidInput("say where to send: --devnet DIR --as AGENCY, or --node URL --keystore FILE")
    if not need_key:
        return node_url, None
    if keystore is None:
        raise InvalidInput("--keystore FILE is required with --node")
    from chainshare.config import read_json_file
    from chainshare.crypto.keystore import decrypt_account_key, read_password

    return node_url, decrypt_account_key(read_json_file(keystore, "keystore"), read_password(password_file))
