"""``chainshare credit govern ...``: propose, vote and execute CreditRegistry configuration through Governance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from chainshare.cli.common import acting_options, emit, json_option, resolve_actor
from chainshare.cli.credit.records import REGISTRY, _actor, group, parse_period
from chainshare.client import NodeClient, get_proposal_id, transact
from chainshare.errors import InvalidInput
from chainshare.execution.contracts.addresses import CREDIT_REGISTRY
from chainshare.execution.runtime import encode_call

govern = click.Group("govern", help="Propose, vote and execute CreditRegistry configuration through Governance.")
group.add_command(govern)


def _governance_tx(kw: dict[str, Any], data: bytes, what: str) -> dict[str, Any]:
    from chainshare.execution.contracts.addresses import GOVERNANCE

    url, key = resolve_actor(*_actor(kw))
    assert key is not None
    with NodeClient(url) as client:
        receipt = transact(client, key, GOVERNANCE, data, gas=5_000_000, timeout=60)
    out: dict[str, Any] = {"transaction": receipt["transactionHash"], "block": int(receipt["blockNumber"], 16),
                           "status": "success" if receipt["status"] == "0x1" else "reverted"}
    if receipt["status"] != "0x1":
        out["reason"] = receipt.get("revertReason")
    elif what == "propose":
        out["proposal"] = get_proposal_id(receipt)
    return out


def _finish(out: dict[str, Any], as_json: bool, human: str) -> None:
    emit(out, as_json, human if out["status"] == "success" else f"reverted: {out.get('reason')}")
    if out["status"] != "success":
        raise click.exceptions.Exit(1)


def _propose(kw: dict[str, Any], method: str, args: list[Any], description: str) -> None:
    from chainshare.execution.contracts.governance import Governance

    as_json = kw.pop("as_json")
    data = encode_call(Governance(), "propose", "0x" + CREDIT_REGISTRY.hex(), encode_call(REGISTRY, method, *args),
                       description)
    out = _governance_tx(kw, data, "propose")
    _finish(out, as_json, f"proposal {out.get('proposal')}: {description} (agencies vote, then execute it)")


@govern.command("set-category")
@click.argument("code")
@click.argument("title")
@click.option("--inactive", is_flag=True, help="Close the category to new records.")
@acting_options
@json_option
def govern_set_category(code: str, title: str, inactive: bool, **kw: Any) -> None:
    """Propose defining (or closing) a credit category."""
    _propose(kw, "setCategory", [code, title, not inactive], f"credit category {code}: {title}")


@govern.command("set-issuer")
@click.argument("category")
@click.argument("agency")
@click.option("--revoke", is_flag=True)
@acting_options
@json_option
def govern_set_issuer(category: str, agency: str, revoke: bool, **kw: Any) -> None:
    """Propose authorising AGENCY to issue CATEGORY records (or revoking it)."""
    _propose(kw, "setIssuer", [category, agency, not revoke],
             f"{'revoke' if revoke else 'authorise'} {agency} as issuer of {category}")


@govern.command("set-registrar")
@click.argument("agency")
@click.option("--revoke", is_flag=True)
@acting_options
@json_option
def govern_set_registrar(agency: str, revoke: bool, **kw: Any) -> None:
    """Propose granting (or revoking) the credit_registrar role."""
    _propose(kw, "setRegistrar", [agency, not revoke], f"{'revoke' if revoke else 'grant'} credit_registrar {agency}")


@govern.command("set-objection-deadline")
@click.argument("period")
@acting_options
@json_option
def govern_set_deadline(period: str, **kw: Any) -> None:
    """Propose the issuers' deadline to answer an objection, e.g. 20d."""
    seconds = parse_period(period, "deadline")
    _propose(kw, "setObjectionDeadline", [seconds], f"objection deadline {period}")


@govern.command("install-rule")
@click.argument("rule_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@acting_options
@json_option
def govern_install_rule(rule_file: Path, **kw: Any) -> None:
    """Propose installing a scoring rule (JSON) as the next rule version; the rule is checked here first, as
    the contract will check it, so a rule the chain would refuse sends no transaction."""
    from chainshare.execution.contracts.credit_registry import canonicalize_scoring_rule
    from chainshare.execution.contracts.json_depth import JSON_DEPTH_CAP

    try:
        # The strictest rule (protocol v4's nesting cap): the proposal runs when executed, under the version in
        # force then, which may be later than today's; and no version takes a rule nested deeper (a rule nests 3).
        canonical = canonicalize_scoring_rule(rule_file.read_text(), JSON_DEPTH_CAP)
    except ValueError as exc:
        raise InvalidInput(f"{rule_file}: {exc}") from exc
    _propose(kw, "installScoringRule", [canonical], f"scoring rule {json.loads(canonical)['name']}")


@govern.command("vote")
@click.argument("proposal", type=click.IntRange(1))
@click.option("--no", "against", is_flag=True, help="Vote against.")
@acting_options
@json_option
def govern_vote(proposal: int, against: bool, **kw: Any) -> None:
    """Vote on a Governance proposal."""
    from chainshare.execution.contracts.governance import Governance

    as_json = kw.pop("as_json")
    out = _governance_tx(kw, encode_call(Governance(), "vote", proposal, not against), "vote")
    _finish(out, as_json, f"voted {'no' if against else 'yes'} on proposal {proposal}")


@govern.command("execute")
@click.argument("proposal", type=click.IntRange(1))
@acting_options
@json_option
def govern_execute(proposal: int, **kw: Any) -> None:
    """Execute a proposal that has enough yes votes (reverts with the count otherwise)."""
    from chainshare.execution.contracts.governance import Governance

    as_json = kw.pop("as_json")
    out = _governance_tx(kw, encode_call(Governance(), "execute", proposal), "execute")
    _finish(out, as_json, f"proposal {proposal} executed")
