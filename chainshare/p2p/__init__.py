"""Peer-to-peer transport: asyncio TLS 1.3 with mutual authentication between consortium nodes.

The node wires it up as::

    p2p = P2PNode(P2PConfig(node_name=..., chain_id=..., genesis_hash=..., listen_port=..., peers=(...)),
                  TlsIdentity.from_dirs(ca_dir, node_dir, key_password),
                  is_allowed=membership_allows, on_message=..., on_request=...,
                  on_peer_up=..., on_peer_down=...)
    await p2p.start()
    ...
    await p2p.close()

See ``peers`` for the guarantees, ``framing`` for the wire format.
"""

from chainshare.p2p.errors import (
    FrameError,
    FrameTimeout,
    FrameTooLarge,
    IdleTimeout,
    P2PError,
    PeerClosed,
    PeerRefused,
    PeerUnavailable,
    ReadTimeout,
    RequestFailed,
    RequestTimeout,
)
from chainshare.p2p.framing import (
    DEFAULT_MAX_FRAME_SIZE,
    HEADER_SIZE,
    decode_payload,
    encode_frame,
    encode_payload,
    read_frame,
)
from chainshare.p2p.gossip import GossipFilter, compute_gossip_id
from chainshare.p2p.peers import (
    CONTROL_PREFIX,
    PROTOCOL_VERSION,
    DialStatus,
    MessageHandler,
    P2PConfig,
    P2PNode,
    PeerAddress,
    PeerDownHandler,
    PeerInfo,
    PeerUpHandler,
    RequestHandler,
    SendOverflow,
    compute_backoff,
)
from chainshare.p2p.tls import (
    AllowPolicy,
    TlsIdentity,
    build_client_context,
    build_server_context,
    describe_tls_error,
    verify_peer,
)

__all__ = [
    "CONTROL_PREFIX",
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER_SIZE",
    "PROTOCOL_VERSION",
    "AllowPolicy",
    "DialStatus",
    "FrameError",
    "FrameTimeout",
    "FrameTooLarge",
    "GossipFilter",
    "IdleTimeout",
    "MessageHandler",
    "P2PConfig",
    "P2PError",
    "P2PNode",
    "PeerAddress",
    "PeerClosed",
    "PeerDownHandler",
    "PeerInfo",
    "PeerRefused",
    "PeerUnavailable",
    "PeerUpHandler",
    "ReadTimeout",
    "RequestFailed",
    "RequestHandler",
    "RequestTimeout",
    "SendOverflow",
    "TlsIdentity",
    "build_client_context",
    "build_server_context",
    "compute_backoff",
    "compute_gossip_id",
    "decode_payload",
    "describe_tls_error",
    "encode_frame",
    "encode_payload",
    "read_frame",
    "verify_peer",
]
