"""Public APIs of a node: Ethereum JSON-RPC at ``/``, REST under ``/api/v1``, health and metrics."""
