"""``chainshare emergency ...``: the commands of the runbook's emergencies (docs/runbook.md).

Every action is a transaction, so it is an on-chain event anyone (and the explorer) sees:
- ``freeze-dataset ID --reason R``: the owner freezes its dataset at once (one transaction); with
  ``--governance`` it is a proposal instead (any member may propose; only Governance may lift it).
- ``unfreeze-dataset ID [--governance]``, ``pause-sharing --reason R``, ``resume-sharing``.
- ``revoke-agency NAME``: ONE Governance decision that retires the agency's validators (a new set
  from ``--retire-after`` blocks on) and revokes the agency (its nodes are refused at once, its
  accounts may no longer transact, every grant it holds or gave is invalid).
- ``rotate-validator NAME --identity node-identity.json``: a Governance decision that replaces the
  validator's BLS key by a new one from a later height (same name and agency).
- ``revoke-certificate CERT --reason R``: the certificate's agency (or, with ``--governance``, a
  Governance decision) revokes a node certificate on chain; once final, every node refuses it at the
  handshake and drops the sessions that use it.
- ``rotate-tls NAME``: a new TLS key and certificate for node NAME from the consortium CA, its vault
  re-sealed to the new key, the old certificate revoked; a devnet node is restarted with it.
- ``vote ID [--against]``, ``execute ID``: the other agencies' part of a proposal.
- ``status [--dataset ID]``: whether sharing is paused or a dataset frozen, and why.

A proposing command also votes yes as the proposer, and executes at once when that vote reaches the
threshold (one agency of one). Each command prints the block of its effect and the seconds it took.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from chainshare.cli.common import acting_options, emit, json_option, parse_positive_id, resolve_actor
from chainshare.cli.signing import api_get
from chainshare.client import NodeClient, call_view, get_proposal_id, transact_checked
from chainshare.crypto.ca import compute_certificate_fingerprint
from chainshare.errors import ChainshareError, InvalidInput
from chainshare.execution.contracts import ACCESS_CONTROL, GOVERNANCE, MEMBERSHIP
from chainshare.execution.contracts.governance import Governance
from chainshare.execution.contracts.membership import MAX_CERT, Membership
from chainshare.execution.runtime import encode_call
from chainshare.sharing.records import ACCESS_CONTRACT

group = click.Group("emergency", help="Freeze a dataset, pause sharing, revoke a compromised agency (runbook).")
GOV = Governance()
MEM = Membership()
MAX_REASON = 256


def _reason(reason: str) -> str:
    if not 1 <= len(reason.encode()) <= MAX_REASON:
        raise InvalidInput(f"--reason must be 1..{MAX_REASON} bytes")
    return reason


def _send(client: NodeClient, key: bytes, to: bytes, data: bytes, what: str) -> dict[str, Any]:
    return transact_checked(client, key, to, data, failure=f"{what} reverted", no_reason="no reason given",
                            timeout=120)


def _propose(client: NodeClient, key: bytes, target: bytes, data: bytes, description: str) -> dict[str, Any]:
    """Propose, vote yes, and execute if that vote already reaches the threshold."""
    receipt = _send(client, key, GOVERNANCE, encode_call(GOV, "propose", "0x" + target.hex(), data, description),
                    "Governance.propose")
    pid = get_proposal_id(receipt)
    _send(client, key, GOVERNANCE, encode_call(GOV, "vote", pid, True), "Governance.vote")
    return {"proposal_id": pid, **_try_execute(client, key, pid)}


def _votes(client: NodeClient, pid: int) -> tuple[int, int]:
    yes = int(call_view(client, GOV, "getProposal", pid)[4])
    required = int(call_view(client, GOV, "requiredVotes")[0])
    return yes, required


def _try_execute(client: NodeClient, key: bytes, pid: int) -> dict[str, Any]:
    yes, required = _votes(client, pid)
    if yes < required:
        return {"executed": False, "yes": yes, "required": required}
    receipt = _send(client, key, GOVERNANCE, encode_call(GOV, "execute", pid), f"Governance.execute({pid})")
    return {"executed": True, "yes": yes, "required": required, "block": int(receipt["blockNumber"], 16),
            "transactionHash": receipt["transactionHash"]}


def _report(result: dict[str, Any], started: float, as_json: bool, what: str) -> None:
    result["seconds"] = round(time.monotonic() - started, 3)
    if "proposal_id" in result and not result.get("executed"):
        human = (f"{what}: proposal {result['proposal_id']} has {result['yes']} of {result['required']} votes; other "
                 f"agencies run `chainshare emergency vote {result['proposal_id']}`")
    else:
        human = f"{what}: in effect from block {result.get('block')} ({result['seconds']} s)"
    emit(result, as_json, human)


def _act(target: bytes, data: bytes, description: str, governance: bool, devnet_dir: Any, as_agency: str | None,
         node_url: str | None, keystore: Any, password_file: Any, what: str) -> dict[str, Any]:
    url, key = resolve_actor(devnet_dir, as_agency, node_url, keystore, password_file)
    assert key is not None
    with NodeClient(url, timeout=60) as client:
        if governance:
            return _propose(client, key, target, data, description)
        receipt = _send(client, key, target, data, what)
        return {"block": int(receipt["blockNumber"], 16), "transactionHash": receipt["transactionHash"]}


@group.command("freeze-dataset")
@click.argument("dataset_id")
@click.option("--reason", required=True, help="Why (1..256 bytes; on chain, shown to every refused requester).")
@click.option("--governance", is_flag=True, help="Propose it to Governance instead of freezing as the owner.")
@acting_options
@json_option
def freeze_dataset(dataset_id: str, reason: str, governance: bool, as_json: bool, **actor: Any) -> None:
    """Suspend every grant of DATASET_ID: no delivery or computation, new requests denied."""
    ident, started = parse_positive_id(dataset_id, "DATASET_ID"), time.monotonic()
    data = encode_call(ACCESS_CONTRACT, "freezeDataset", ident, _reason(reason))
    result = _act(ACCESS_CONTROL, data, f"emergency: freeze dataset {ident}: {reason}", governance, **actor,
                  what="AccessControl.freezeDataset")
    _report({"dataset_id": ident, **result}, started, as_json, f"dataset {ident} frozen")


@group.command("unfreeze-dataset")
@click.argument("dataset_id")
@click.option("--governance", is_flag=True, help="Propose it to Governance (needed for a Governance freeze).")
@acting_options
@json_option
def unfreeze_dataset(dataset_id: str, governance: bool, as_json: bool, **actor: Any) -> None:
    """Lift the freeze of DATASET_ID: its unexpired grants are valid again."""
    ident, started = parse_positive_id(dataset_id, "DATASET_ID"), time.monotonic()
    data = encode_call(ACCESS_CONTRACT, "unfreezeDataset", ident)
    result = _act(ACCESS_CONTROL, data, f"emergency: lift the freeze of dataset {ident}", governance, **actor,
                  what="AccessControl.unfreezeDataset")
    _report({"dataset_id": ident, **result}, started, as_json, f"dataset {ident} unfrozen")


@group.command("pause-sharing")
@click.option("--reason", required=True, help="Why (1..256 bytes; on chain).")
@acting_options
@json_option
def pause_sharing(reason: str, as_json: bool, **actor: Any) -> None:
    """Propose to pause all data sharing of the consortium (a Governance decision)."""
    started = time.monotonic()
    data = encode_call(ACCESS_CONTRACT, "pauseSharing", _reason(reason))
    result = _act(ACCESS_CONTROL, data, f"emergency: pause all sharing: {reason}", True, **actor, what="")
    _report(result, started, as_json, "sharing paused")


@group.command("resume-sharing")
@acting_options
@json_option
def resume_sharing(as_json: bool, **actor: Any) -> None:
    """Propose to resume data sharing (a Governance decision)."""
    started = time.monotonic()
    result = _act(ACCESS_CONTROL, encode_call(ACCESS_CONTRACT, "resumeSharing"), "emergency: resume sharing", True,
                  **actor, what="")
    _report(result, started, as_json, "sharing resumed")


@group.command("revoke-agency")
@click.argument("name")
@click.option("--retire-after", type=click.IntRange(2, 100_000), default=200, show_default=True,
              help="Blocks from now after which the validator set without the agency's validators certifies (leave "
              "time for the votes: the decision reverts once this height has passed).")
@acting_options
@json_option
def revoke_agency(name: str, retire_after: int, as_json: bool, devnet_dir: Any, as_agency: str | None,
                  node_url: str | None, keystore: Any, password_file: Any) -> None:
    """Propose ONE decision: retire NAME's validators and revoke NAME (nodes cut off, grants invalid)."""
    started = time.monotonic()
    url, key = resolve_actor(devnet_dir, as_agency, node_url, keystore, password_file)
    assert key is not None
    sets = api_get(url, "/validators")
    latest = sets["epochs"][-1]["items"]
    keep = [v for v in latest if v["agency"] != name]
    targets, calls = [], []
    if len(keep) != len(latest):
        if not keep:
            raise InvalidInput(f"every validator belongs to {name!r}: the network cannot retire them all")
        with NodeClient(url) as client:
            head = int(client.rpc("eth_blockNumber"), 16)
        targets.append("0x" + MEMBERSHIP.hex())
        calls.append(encode_call(MEM, "setValidators", [v["name"] for v in keep], [v["agency"] for v in keep],
                                 [bytes.fromhex(v["bls_public_key"][2:]) for v in keep],
                                 [bytes.fromhex(v["bls_pop"][2:]) for v in keep], head + retire_after))
    targets.append("0x" + MEMBERSHIP.hex())
    calls.append(encode_call(MEM, "revokeAgency", name))
    data = encode_call(GOV, "executeBatch", targets, calls)
    retired = [v["name"] for v in latest if v["agency"] == name]
    with NodeClient(url, timeout=60) as client:
        result = _propose(client, key, GOVERNANCE, data,
                          f"emergency: revoke agency {name} and retire its validators {', '.join(retired) or '-'}")
    _report({"agency": name, "retired_validators": retired, **result}, started, as_json, f"agency {name} revoked")


@group.command("rotate-validator")
@click.argument("name")
@click.option("--identity", "identity_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="node-identity.json of the NEW key (from `chainshare ca issue-node NAME ...`).")
@click.option("--activate-after", type=click.IntRange(2, 100_000), default=200, show_default=True,
              help="Blocks from now after which the new key certifies instead of the old one (leave time for "
              "the votes).")
@acting_options
@json_option
def rotate_validator(name: str, identity_path: Path, activate_after: int, as_json: bool, devnet_dir: Any,
                     as_agency: str | None, node_url: str | None, keystore: Any, password_file: Any) -> None:
    """Propose replacing validator NAME's BLS key by a new one (same name and agency) from a later height.
    Restart the node with the new keys once the decision is executed: it follows the chain until the
    new set is in force, then votes with the new key; the old key certifies nothing after that."""
    from chainshare.config import read_json_file

    started = time.monotonic()
    identity = read_json_file(identity_path, "node identity")
    try:
        new_pk, new_pop = identity["bls_public_key"], identity["bls_pop"]
        if identity.get("node", identity.get("name", name)) != name:
            raise InvalidInput(f"{identity_path} is the identity of {identity.get('node')!r}, not of {name!r}")
    except (KeyError, TypeError, AttributeError) as exc:
        raise InvalidInput(f"{identity_path} is not a node identity (bls_public_key, bls_pop): {exc}") from exc
    url, key = resolve_actor(devnet_dir, as_agency, node_url, keystore, password_file)
    assert key is not None
    latest = api_get(url, "/validators")["epochs"][-1]["items"]
    if name not in [v["name"] for v in latest]:
        raise InvalidInput(f"{name!r} is not a validator of the latest set ({', '.join(v['name'] for v in latest)})")
    rows = [(v["name"], v["agency"], v["bls_public_key"], v["bls_pop"]) if v["name"] != name
            else (name, v["agency"], new_pk, new_pop) for v in latest]
    with NodeClient(url, timeout=60) as client:
        head = int(client.rpc("eth_blockNumber"), 16)
        data = encode_call(MEM, "setValidators", [r[0] for r in rows], [r[1] for r in rows],
                           [bytes.fromhex(str(r[2])[2:]) for r in rows], [bytes.fromhex(str(r[3])[2:]) for r in rows],
                           head + activate_after)
        result = _propose(client, key, MEMBERSHIP, data, f"emergency: rotate the BLS key of validator {name}")
    _report({"validator": name, "activation_height": head + activate_after, "bls_public_key": new_pk, **result},
            started, as_json, f"validator {name} rotated")


def _read_certificate(path: Path) -> bytes:
    try:
        pem = path.read_bytes()[:MAX_CERT + 1]
    except OSError as exc:
        raise InvalidInput(f"cannot read the certificate {path}: {exc.strerror or exc}") from exc
    if len(pem) > MAX_CERT:
        raise InvalidInput(f"{path} is larger than {MAX_CERT} bytes: not a node certificate")
    return pem


@group.command("revoke-certificate")
@click.argument("certificate", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--reason", required=True, help="Why (1..256 bytes; on chain).")
@click.option("--governance", is_flag=True, help="Propose it to Governance (a certificate of another agency).")
@acting_options
@json_option
def revoke_certificate(certificate: Path, reason: str, governance: bool, as_json: bool, **actor: Any) -> None:
    """Revoke CERTIFICATE (PEM) on chain: once final, every node refuses it at the handshake and drops
    the sessions that use it. Its own agency revokes at once; any certificate by --governance."""
    started, pem = time.monotonic(), _read_certificate(certificate)
    fingerprint = compute_certificate_fingerprint(pem)
    data = encode_call(MEM, "revokeCertificate", pem, _reason(reason))
    result = _act(MEMBERSHIP, data, f"emergency: revoke certificate 0x{fingerprint.hex()}: {reason}", governance,
                  **actor, what="Membership.revokeCertificate")
    _report({"fingerprint": "0x" + fingerprint.hex(), **result}, started, as_json,
            f"certificate 0x{fingerprint.hex()[:16]}… revoked")


@group.command("rotate-tls")
@click.argument("name")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="node.toml of node NAME (default with --devnet: DIR/nodes/NAME/node.toml).")
@click.option("--ca-dir", type=click.Path(file_okay=False, path_type=Path),
              help="The consortium CA directory (default with --devnet: DIR/ca).")
@click.option("--ca-password-file", type=click.Path(dir_okay=False, path_type=Path),
              help="CA key password file (default: $CHAINSHARE_PASSWORD; none for a devnet).")
@click.option("--reason", default="node TLS key compromised: certificate rotated", show_default=True,
              help="Why (1..256 bytes; on chain).")
@acting_options
@json_option
def rotate_tls(name: str, config_path: Path | None, ca_dir: Path | None, ca_password_file: Path | None,
               reason: str, as_json: bool, devnet_dir: Any, as_agency: str | None, node_url: str | None,
               keystore: Any, password_file: Any) -> None:
    """Give node NAME a new TLS key and certificate (same node, agency, host names) from the consortium
    CA, re-seal its vault to the new key, install them, and revoke the old certificate as its agency.
    A devnet node is restarted with them; a production node must be restarted by its operator (it
    presents the old certificate, which its peers refuse once the revocation is final, until then).
    In production, --node must be ANOTHER node than NAME: NAME is cut off when the revocation is final
    and may never see its receipt."""
    from chainshare.config import load_config
    from chainshare.crypto.keystore import read_password
    from chainshare.devnet import read_devnet, restart_node
    from chainshare.ops.tls_rotation import rotate_node_tls

    started = time.monotonic()
    _reason(reason)
    ca_password = None
    if devnet_dir is not None:
        node = next((n for n in read_devnet(devnet_dir)["nodes"] if n["name"] == name), None)
        if node is None:
            raise InvalidInput(f"no node {name!r} in {devnet_dir}")
        config_path = config_path or Path(devnet_dir) / "nodes" / name / "node.toml"
        ca_dir = ca_dir or Path(devnet_dir) / "ca"
        as_agency = as_agency or node["agency"]
    else:
        if config_path is None or ca_dir is None:
            raise InvalidInput("--config node.toml and --ca-dir DIR are required without --devnet")
        ca_password = read_password(ca_password_file)
    cfg = load_config(config_path)
    if cfg.node.name != name:
        raise InvalidInput(f"{config_path} configures node {cfg.node.name!r}, not {name!r}")
    key_password = None
    if not cfg.node.dev_mode:
        key_password = read_password(cfg.path(cfg.validator.password_file) if cfg.validator.password_file else None)
    url, key = resolve_actor(devnet_dir, as_agency, node_url, keystore, password_file)  # before touching a file
    assert key is not None
    if devnet_dir is not None:  # the node being rotated is cut off once the revocation is final: it may never
        # see its receipt, so send it through another node (as --node must name in production)
        url = next((n["rpc"] for n in read_devnet(devnet_dir)["nodes"] if n["name"] != name), url)
    rotated = rotate_node_tls(cfg, ca_dir, ca_password, key_password)
    revoking, submitted_at = time.monotonic(), time.time()  # wall clock: others measure the effect against it
    try:
        with NodeClient(url, timeout=60) as client:
            receipt = _send(client, key, MEMBERSHIP, encode_call(MEM, "revokeCertificate", rotated.old_cert_pem,
                                                                  reason), "Membership.revokeCertificate")
    except ChainshareError as exc:  # the new identity is installed: only the revocation is left to do
        raise ChainshareError(f"node {name} has its new certificate, but revoking the old one failed: {exc.message}; "
                              f"run `chainshare emergency revoke-certificate {rotated.old_cert_copy} --reason ...` "
                              "(not rotate-tls again)") from exc
    result = {"block": int(receipt["blockNumber"], 16)}
    out: dict[str, Any] = {**rotated.to_json(), "block": result["block"], "revocation_submitted_at": submitted_at,
                           "revocation_seconds": round(time.monotonic() - revoking, 3), "restarted": False}
    if devnet_dir is not None:
        restarting = time.monotonic()
        restart_node(Path(devnet_dir), name, timeout=120)
        out.update(restarted=True, restart_seconds=round(time.monotonic() - restarting, 3))
    else:
        click.echo(f"restart node {name} now: until then it presents the revoked certificate, which its peers "
                   "refuse", err=True)
    _report(out, started, as_json, f"node {name}: new TLS certificate 0x{rotated.new_fingerprint.hex()[:16]}…, "
            "the old one revoked")


@group.command("vote")
@click.argument("proposal_id")
@click.option("--against", is_flag=True, help="Vote no.")
@acting_options
@json_option
def vote(proposal_id: str, against: bool, as_json: bool, devnet_dir: Any, as_agency: str | None,
         node_url: str | None, keystore: Any, password_file: Any) -> None:
    """Vote on an emergency proposal; executes it when this vote reaches the threshold."""
    pid, started = parse_positive_id(proposal_id, "PROPOSAL_ID"), time.monotonic()
    url, key = resolve_actor(devnet_dir, as_agency, node_url, keystore, password_file)
    assert key is not None
    with NodeClient(url, timeout=60) as client:
        _send(client, key, GOVERNANCE, encode_call(GOV, "vote", pid, not against), f"Governance.vote({pid})")
        result = {"proposal_id": pid, **(_try_execute(client, key, pid) if not against else {"executed": False})}
    result.setdefault("yes", _votes_safe(url, pid)[0])
    result.setdefault("required", _votes_safe(url, pid)[1])
    _report(result, started, as_json, f"proposal {pid}")


@group.command("execute")
@click.argument("proposal_id")
@acting_options
@json_option
def execute(proposal_id: str, as_json: bool, devnet_dir: Any, as_agency: str | None, node_url: str | None,
            keystore: Any, password_file: Any) -> None:
    """Execute a proposal that has its votes (`vote` does it by itself when its vote reaches the threshold)."""
    pid, started = parse_positive_id(proposal_id, "PROPOSAL_ID"), time.monotonic()
    url, key = resolve_actor(devnet_dir, as_agency, node_url, keystore, password_file)
    assert key is not None
    with NodeClient(url, timeout=60) as client:
        result = {"proposal_id": pid, **_try_execute(client, key, pid)}
    if not result["executed"]:
        raise InvalidInput(f"proposal {pid} has {result['yes']} of the {result['required']} yes votes it needs")
    _report(result, started, as_json, f"proposal {pid}")


def _votes_safe(url: str, pid: int) -> tuple[int, int]:
    with NodeClient(url) as client:
        return _votes(client, pid)


@group.command("status")
@click.option("--dataset", "dataset_id", help="Also say whether this dataset is frozen.")
@click.option("--node", "node_url", default="http://127.0.0.1:8545", show_default=True, help="Node URL.")
@json_option
def status(dataset_id: str | None, node_url: str, as_json: bool) -> None:
    """Whether sharing is paused, or the dataset frozen, and why (from the node's finalized state)."""
    ident = parse_positive_id(dataset_id, "--dataset") if dataset_id is not None else 1
    with NodeClient(node_url) as client:
        paused, frozen, reason = call_view(client, ACCESS_CONTRACT, "getEmergencyStop", ident)
    result = {"sharing_paused": bool(paused), "reason": reason or None}
    if dataset_id is not None:
        result["dataset_id"], result["dataset_frozen"] = ident, bool(frozen)
    emit(result, as_json, reason or "no emergency stop in force")
