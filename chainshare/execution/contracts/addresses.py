"""Fixed addresses of the system contracts (outside Ethereum's precompile range)."""

from __future__ import annotations


def system_address(n: int) -> bytes:
    return bytes(18) + bytes([0xC5, n])


MEMBERSHIP = system_address(0x01)
GOVERNANCE = system_address(0x02)
NOTARY = system_address(0x03)
DATASETS = system_address(0x04)
ACCESS_CONTROL = system_address(0x05)
CREDIT_REGISTRY = system_address(0x06)
EVIDENCE = system_address(0x07)
JOINT_COMPUTE = system_address(0x0A)
CREDENTIAL_REGISTRY = system_address(0x0B)
