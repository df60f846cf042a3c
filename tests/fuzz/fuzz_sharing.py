"""Fuzz the data plane's messages from other agencies' nodes (sharing/protocol.py) and the query
text a grantee sends (sharing/compute.py ``parse_query``).

Contract: a frame payload decodes (``decode_payload``, else ``FrameError``); each message's
``from_wire`` returns it or raises ``InvalidInput`` (what sharing/service.py catches), and a parsed
message re-encodes (``to_wire``) to the body it came from; ``parse_query`` of any bytes returns a
query or raises ``ChainshareError`` (InvalidInput / Unauthorized), nothing else.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable

import _fuzzkit
import atheris

with atheris.instrument_imports(include=["chainshare"]):
    from chainshare.errors import ChainshareError, InvalidInput
    from chainshare.p2p.errors import FrameError
    from chainshare.p2p.framing import decode_payload, encode_payload
    from chainshare.sharing import protocol as wire
    from chainshare.sharing.compute import parse_query
    from chainshare.sharing.schema import validate_schema

QUERY = "data.query-json"  # not a wire type: this harness's name for "the bytes are a query's JSON text"
PARSERS = {
    wire.MSG_FETCH: wire.FetchRequest, wire.MSG_QUERY: wire.QueryRequest, "data.fetch-response": wire.FetchAccepted,
    "data.query-response": wire.QueryAnswer, wire.MSG_BEGIN: wire.Begin, wire.MSG_CHUNK: wire.Chunk,
    wire.MSG_ACK: wire.Ack, wire.MSG_END: wire.End, wire.MSG_ERROR: wire.Abort, wire.MSG_CANCEL: wire.Abort,
}
SCHEMA = validate_schema({"columns": [
    {"name": "citizen_id", "kind": "personal"}, {"name": "district", "kind": "string"},
    {"name": "age", "kind": "integer"}, {"name": "income", "kind": "number"},
    {"name": "registered", "kind": "date"}, {"name": "active", "kind": "boolean"}], "min_group": 5})
TID = b"\x07" * 16


def seeds() -> Iterable[bytes]:
    messages = [
        (wire.MSG_FETCH, wire.FetchRequest(1, 2, b"\x01" * 16, 1_700_000_000, 5, TID, b"-----BEGIN CERT", 8)),
        (wire.MSG_QUERY, wire.QueryRequest(1, 2, b"\x02" * 32, 1_700_000_000, 5, b'{"select":[{"fn":"count"}]}')),
        ("data.fetch-response", wire.FetchAccepted(TID, 4)),
        ("data.query-response", wire.QueryAnswer(b"\x03" * 32, b"\x04" * 32, b"{}", None, "refused")),
        (wire.MSG_BEGIN, wire.Begin(TID, "read", b"\x05" * 32, "csv")),
        (wire.MSG_CHUNK, wire.Chunk(TID, 3, b"ciphertext" * 5)),
        (wire.MSG_ACK, wire.Ack(TID, 3)),
        (wire.MSG_END, wire.End(TID, 4, 1000, b"\x06" * 32, b"\x08" * 32, b"wrapped")),
        (wire.MSG_ERROR, wire.Abort(TID, "grant revoked")),
    ]
    for msg_type, message in messages:
        yield encode_payload(msg_type, message.to_wire())
    for query in ({"select": [{"fn": "count"}], "group_by": ["district"]},
                  {"select": [{"fn": "sum", "column": "income", "bounds": [0, 9000]}, {"fn": "mean", "column": "age",
                   "bounds": [0, 120]}], "where": [{"column": "active", "op": "=", "value": True}], "epsilon": 0.5},
                  {"select": [{"fn": "count"}], "where": [{"column": "registered", "op": ">=",
                                                           "value": "2020-01-01"}]}):
        yield encode_payload(QUERY, json.dumps(query).encode())


def check(data: bytes) -> None:
    try:
        msg_type, body = decode_payload(data)
    except FrameError:
        msg_type, body = QUERY, data
    if msg_type == QUERY and isinstance(body, bytes):
        try:
            parse_query(body, SCHEMA)
        except ChainshareError:
            pass
        return
    parser = PARSERS.get(msg_type)
    if parser is None:
        return
    try:
        wire.parse_transfer_id(body)
    except InvalidInput:
        pass
    try:
        message = parser.from_wire(body)
    except InvalidInput:
        return
    if not isinstance(message, wire.Abort):  # Abort.to_wire cuts a long message: the one lossy encoding
        assert message.to_wire() == body, data.hex()


if __name__ == "__main__":
    _fuzzkit.run(check, seeds)
    sys.exit(0)
