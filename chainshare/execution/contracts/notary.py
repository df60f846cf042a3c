"""Notary: evidence anchoring. A digest can be anchored once; who and when are on chain forever."""

from __future__ import annotations

from chainshare.execution.contracts.addresses import NOTARY
from chainshare.execution.runtime import CallContext, Revert, SystemContract, event, method


class Notary(SystemContract):
    NAME = "Notary"
    ADDRESS = NOTARY
    E_ANCHORED = event("Anchored(bytes32 indexed digest, address indexed by)")
    EVENTS = (E_ANCHORED,)

    @method("anchor(bytes32 digest)")
    def anchor(self, ctx: CallContext, digest: bytes) -> None:
        if ctx.sload(b"a" + digest) is not None:
            raise Revert("digest already anchored")
        ctx.sstore(b"a" + digest, ctx.env.height.to_bytes(8, "big") + ctx.sender)
        ctx.emit(self.E_ANCHORED, digest, ctx.sender)  # an address topic from its 20 bytes, as from its hex

    @method("isAnchored(bytes32 digest)", returns="bool", view=True)
    def is_anchored(self, ctx: CallContext, digest: bytes) -> bool:
        return ctx.sload(b"a" + digest) is not None

    @method("anchoredAt(bytes32 digest)", returns="uint64 blockNumber, address by", view=True)
    def anchored_at(self, ctx: CallContext, digest: bytes) -> tuple[int, str]:
        raw = ctx.sload(b"a" + digest)
        if raw is None:
            raise Revert("digest not anchored")
        return int.from_bytes(raw[:8], "big"), "0x" + raw[8:].hex()
