"""schemathesis against a real node's REST API (every route of /api/v1/openapi.json, data plane included):
no answer is a 5xx, each answer's status, content type, headers and body are the ones its OpenAPI documents,
and a request outside the schema is refused. Next to it, the defects this fuzzing found, pinned through the
node's HTTP port as a client meets them.

The node runs with its data plane (a [p2p] TLS identity, no peers), so the signed data-plane routes answer
requests (403 for the fuzzer's signatures) instead of 503 "not configured"."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from netkit import Devnet, DevnetPool

from chainshare.bench import free_port_block

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("node_openapi_fuzz")]

EXAMPLES_PER_OPERATION = 12  # x 2 generation modes x ~35 operations: ~15 s on a 2-core machine
PATH_SAMPLES = {"tx_hash": "0x" + "00" * 32, "subject": "P-" + "0" * 64, "name": "agency1"}
SIGNED_HEADERS = {"X-Chainshare-Signature": "0x" + "00" * 65, "X-Chainshare-Nonce": "00" * 16}


def _with_data_plane(directory: Path) -> None:
    """Give the devnet's one node a P2P TLS identity (and no peers): what its data plane needs to start."""
    toml = directory / "nodes" / "node1" / "node.toml"
    p2p = (f'[p2p]\nlisten_host = "127.0.0.1"\nlisten_port = {free_port_block(1)}\npeers = []\n'
           'ca_cert = "../../ca/ca.crt"\nnode_cert = "keys/node.crt"\nnode_key = "keys/node.key"\n\n')
    toml.write_text(toml.read_text().replace("[sharing]", p2p + "[sharing]"))


@pytest.fixture(scope="module")
def devnet(devnet_pool: DevnetPool) -> Devnet:
    return devnet_pool.launch("openapi", prepare=_with_data_plane)


def test_rest_api_fuzzing_finds_no_server_error_and_no_answer_outside_the_schema(devnet: Devnet) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.config import SchemathesisConfig
    from schemathesis.core.failures import FailureGroup
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    # Not positive_data_acceptance: a schema cannot say which USCCs have the right check character, or which
    # raw transactions decode, so a schema-valid request may still be refused (400 naming the problem).
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
              response_schema_conformance, negative_data_rejection]
    # A request outside the schema is refused with one of the documented 4xx: 413 too, for a body over the
    # node's 1 MiB limit (a string at the schema's maxLength of non-ASCII characters, JSON-escaped, is larger).
    config = SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {
        "expected-statuses": [400, 403, 404, 405, 413, 429]}}})
    schema = schemathesis.openapi.from_url(devnet.api_url + "/openapi.json", config=config)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30
    failures: list[str] = []
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def run(case: Any) -> None:
                try:
                    case.call_and_validate(checks=checks, timeout=30)
                except (AssertionError, FailureGroup) as exc:  # a check failed: keep going, report all
                    failures.append(f"{case.method} {case.formatted_path} {case.query} {case.headers}: "
                                    f"{str(exc)[:300]}")

            try:
                run()
            except Unsatisfiable:  # an operation without parameters or body has no negative case
                assert mode == GenerationMode.NEGATIVE, f"no positive case of {op.label}"
    assert not failures, "\n".join(failures[:10])


def test_a_wrong_method_is_405_naming_every_method_of_the_path(devnet: Devnet) -> None:
    spec = httpx.get(devnet.api_url + "/openapi.json", timeout=30).json()
    for path, ops in spec["paths"].items():
        url = devnet.api_url + re.sub(r"\{(\w+)\}", lambda m: PATH_SAMPLES.get(m.group(1), "1"), path)
        r = httpx.request("TRACE", url, timeout=30)
        assert r.status_code == 405 and r.json()["error"]["type"] == "MethodNotAllowed", (path, r.text)
        assert sorted(r.headers["allow"].split(", ")) == sorted(m.upper() for m in ops), (path, r.headers)


@pytest.mark.parametrize("route", ["/joint/query", "/joint/jobs/1/opening", "/datasets/1/fetch",
                                   "/datasets/1/query"])
@pytest.mark.parametrize("timestamp", ["\u00b2", "12\u00b3", "tomorrow", ""])
def test_a_malformed_timestamp_header_is_403_on_every_signed_route(devnet: Devnet, route: str,
                                                                   timestamp: str) -> None:
    body = {"datasets": [1, 2], "query": {}} if route == "/joint/query" else {"query": {}}
    r = httpx.post(devnet.api_url + route, json=body, timeout=30,
                   headers={**SIGNED_HEADERS, "X-Chainshare-Timestamp": timestamp.encode("latin-1")})
    assert r.status_code == 403, r.text
    assert r.json()["error"]["type"] == "Unauthorized" and "X-Chainshare-Timestamp" in r.json()["error"]["message"]


def test_a_node_without_a_data_plane_checks_signed_requests_first_and_reads_joint_jobs(
        devnet_pool: DevnetPool) -> None:
    plain = devnet_pool.launch("no-data-plane")  # one node, no [p2p] identity: no data plane
    r = httpx.post(plain.api_url + "/datasets/1/query", json={"query": {}}, timeout=30,
                   headers={**SIGNED_HEADERS, "X-Chainshare-Timestamp": "soon"})
    assert r.status_code == 403 and "X-Chainshare-Timestamp" in r.json()["error"]["message"], r.text
    r = httpx.post(plain.api_url + "/joint/jobs/1/opening", timeout=30,
                   headers={**SIGNED_HEADERS, "X-Chainshare-Timestamp": "1", "X-Chainshare-Signature": "zz"})
    assert r.status_code == 403 and "X-Chainshare-Signature" in r.json()["error"]["message"], r.text
    r = httpx.get(plain.api_url + "/joint/jobs/1", timeout=30)
    assert r.status_code == 404 and r.json()["error"]["message"] == "no joint job 1 on this node's chain", r.text
    r = httpx.post(plain.api_url + "/datasets/1/query", json={"query": {}}, timeout=30,
                   headers={**SIGNED_HEADERS, "X-Chainshare-Timestamp": "1"})
    assert r.status_code == 503 and r.json()["error"]["type"] == "SharingUnavailable", r.text
