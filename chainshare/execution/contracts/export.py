"""Write the ABIs of the system contracts to contracts/<Name>.json (artifacts web3.py/ethers load)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chainshare.crypto.secp import to_checksum_address
from chainshare.execution.contracts import all_contracts


def build_artifacts() -> dict[str, dict[str, Any]]:
    """{name: {"contractName", "address", "abi"}} for every system contract."""
    return {c.NAME: {"contractName": c.NAME, "address": to_checksum_address(c.ADDRESS), "abi": c.to_abi()}
            for c in all_contracts()}


def render_artifact(artifact: dict[str, Any]) -> str:
    return json.dumps(artifact, indent=2) + "\n"


def write_artifacts(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, artifact in build_artifacts().items():
        path = directory / f"{name}.json"
        path.write_text(render_artifact(artifact))
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write_artifacts(Path(__file__).resolve().parents[3] / "contracts"):
        print(p)
