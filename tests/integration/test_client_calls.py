"""The CLI's one way to read a view and to send a checked call (``client.call_view``, ``client.transact_checked``)
against a real one-node devnet: a view is encoded and decoded with the contract's ABI, a reverting view raises
with its reason, a call mined and reverted raises "<what> failed: <reason>" as the commands print it, and
``chainshare access revoke`` of an unknown grant exits with the contract's reason."""

from __future__ import annotations

import pytest
from netkit import Devnet, run_cli

from chainshare.client import NodeClient, call_view, transact_checked
from chainshare.errors import ChainshareError, ExecutionReverted
from chainshare.execution.contracts import GOVERNANCE
from chainshare.execution.contracts.addresses import NOTARY
from chainshare.execution.contracts.governance import Governance
from chainshare.execution.contracts.membership import Membership
from chainshare.execution.contracts.notary import Notary
from chainshare.execution.runtime import encode_call

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("client-calls")]


def test_call_view_encodes_and_decodes_with_the_abi(devnet: Devnet) -> None:
    with NodeClient(devnet.rpc_url) as client:
        assert call_view(client, Membership(), "agencyOf", devnet.address) == ("agency1",)
        with pytest.raises(ExecutionReverted, match="not a member of any active agency"):
            call_view(client, Membership(), "agencyOf", "0x" + "00" * 20)
        assert int(call_view(client, Governance(), "requiredVotes")[0]) == 1
        with pytest.raises(ExecutionReverted, match="no proposal 999"):
            call_view(client, Governance(), "getProposal", 999)


def test_transact_checked_returns_the_receipt_or_raises_the_revert_reason(devnet: Devnet) -> None:
    with NodeClient(devnet.rpc_url) as client:
        receipt = transact_checked(client, devnet.key_bytes, NOTARY, encode_call(Notary(), "anchor", b"\x42" * 32),
                                   failure="anchoring failed")
        assert receipt["status"] == "0x1" and receipt["logs"]
        with pytest.raises(ChainshareError) as refused:  # an explicit gas: mined, reverted, the reason read back
            transact_checked(client, devnet.key_bytes, GOVERNANCE, encode_call(Governance(), "vote", 999, True),
                             failure="voting on proposal 999 failed", advice="see `chainshare credit govern`",
                             gas=300_000)
        assert refused.value.message == ("voting on proposal 999 failed: no proposal 999 "
                                         "(see `chainshare credit govern`)")


def test_revoking_an_unknown_grant_exits_with_the_contract_reason(devnet: Devnet) -> None:
    proc = run_cli("access", "revoke", 999, "--devnet", devnet.dir, "--as", "agency1")
    assert proc.returncode != 0 and "no grant 999" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
