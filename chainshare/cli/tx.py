"""``chainshare tx ...``: send transactions to system contracts as an agency."""

from __future__ import annotations

import click

from chainshare.cli.common import acting_options, emit, json_option, parse_hash32, resolve_actor
from chainshare.client import NodeClient, transact
from chainshare.execution import abi
from chainshare.execution.contracts.addresses import NOTARY

group = click.Group("tx", help="Send transactions as an agency.")


@group.command("anchor")
@click.argument("digest")
@acting_options
@click.option("--no-wait", is_flag=True, help="Return after submission instead of waiting for the receipt.")
@json_option
def anchor(digest: str, devnet_dir: object, as_agency: str | None, node_url: str | None, keystore: object,
           password_file: object, no_wait: bool, as_json: bool) -> None:
    """Anchor a 32-byte DIGEST in the Notary contract (reverts if it was anchored before)."""
    d = parse_hash32(digest, "DIGEST")
    url, key = resolve_actor(devnet_dir, as_agency, node_url, keystore, password_file)
    assert key is not None
    name, params = abi.parse_signature("anchor(bytes32)")
    data = abi.compute_selector(name, params) + abi.encode_values(["bytes32"], [d])
    with NodeClient(url) as client:
        receipt = transact(client, key, NOTARY, data, wait=not no_wait)
    result = {"digest": "0x" + d.hex(), "transactionHash": receipt["transactionHash"],
              "status": receipt["status"] if no_wait else ("success" if receipt["status"] == "0x1" else "reverted")}
    if not no_wait:
        result["blockNumber"] = int(receipt["blockNumber"], 16)
        if receipt["status"] != "0x1":
            result["reason"] = receipt.get("revertReason")
    emit(result, as_json)
    if result["status"] == "reverted":
        raise click.exceptions.Exit(1)
