"""A verifier's use of the explorer's paste-a-proof page in headless chromium, on a real one-node devnet: from
the nav link, a credential holder's proof and the verifier's nonce pasted show "Valid" with the proven
predicates; garbage pasted shows what is wrong (no stack trace). Screenshots go to test-results/explorer-pages/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from browserkit import Browser
from netkit import DevnetPool, cli_json
from test_credential_network import _zk, configure_credit, serve_explorer

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("credential-page")]

SUBJECT = "91110000000000999X"


@pytest.fixture(scope="module")
def proof(devnet_pool: DevnetPool, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """agency1 issues an organisation a credential; the holder proves two predicates for a verifier's nonce."""
    from stdnum.cn import uscc

    net = configure_credit(devnet_pool.launch("credentialpage", nodes=1))
    tmp = tmp_path_factory.mktemp("credential-page")
    subject = SUBJECT[:17] + uscc.calc_check_digit(SUBJECT[:17])
    cred, out = tmp / "cred.json", tmp / "proof.json"
    cli_json(_zk(net, "issue", "--subject", subject, "--registry-size", "4", "--out", cred,
                 *net.as_agency("agency1"), "--json"))
    nonce = _zk(net, "nonce").stdout.strip()
    _zk(net, "prove", "--cred", cred, "--predicate", "score>=700", "--predicate", "black_list_active<=0",
        "--nonce", nonce, "--out", out, "--devnet", net.devnet.dir)
    return {"net": net, "proof": out.read_text(), "nonce": nonce, "tmp": tmp}


def test_a_pasted_proof_is_verified_and_garbage_is_explained(browser: Browser, proof: dict[str, Any],
                                                             tmp_path: Path) -> None:
    with serve_explorer(proof["net"], tmp_path) as base:
        results = browser.run([
            {"do": "goto", "url": base + "/"},
            {"do": "click", "sel": "nav a[href='/credentials/verify']", "navigates": True},
            {"do": "fill", "sel": "#proof", "value": proof["proof"]},
            {"do": "fill", "sel": "#nonce", "value": proof["nonce"]},
            {"do": "click", "sel": "main form button[type=submit]", "navigates": True},
            {"do": "text", "sel": "#verdict"},
            browser.shot("credential-verify-valid"),
            {"do": "fill", "sel": "#proof", "value": "{this is not a proof"},
            {"do": "fill", "sel": "#nonce", "value": proof["nonce"]},
            {"do": "click", "sel": "main form button[type=submit]", "navigates": True},
            {"do": "text", "sel": "#verdict"},
            {"do": "html"},
            browser.shot("credential-verify-garbage"),
        ], http_errors=True)
    assert results[1]["url"] == base + "/credentials/verify"
    valid = " ".join(results[5].split())
    assert valid.startswith("Valid") and "score>=700" in valid and "black_list_active<=0" in valid
    assert "issuer agency1" in valid
    garbage, html = " ".join(results[10].split()), results[11]
    assert garbage.startswith("Cannot verify") and "not JSON" in garbage, garbage
    assert "Traceback" not in html and "Internal Server Error" not in html
