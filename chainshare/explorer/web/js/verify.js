// In-browser verification of a transaction's proof: Merkle inclusion under the header's
// tx root, the header hash, the validator set against the validator_set_hash of the parent header
// (whose hash the verified header names), each member's proof of possession, and the QC's BLS
// aggregate signature against that set; for epoch 0 also that the set is the one block 0 (the
// genesis hash shown) commits to. The chain of trust ends at the block hash (epoch 0: at the
// genesis hash): the page does not walk later epochs back to genesis (README "Explorer pages"). Cryptography from @noble/hashes (keccak-256) and @noble/curves (BLS12-381); the
// canonical msgpack from @msgpack/msgpack. Bundled by esbuild into ../static/verify.bundle.js.
import { keccak_256 } from "@noble/hashes/sha3.js";
import { bls12_381 } from "@noble/curves/bls12-381.js";
import { decode, encode } from "@msgpack/msgpack";

// blspy's PopSchemeMPL hashes to G2 with the proof-of-possession ciphersuite's DST.
export const POP_DST = "BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";
// ... and a proof of possession (a signature over the compressed public key) with this one.
export const POP_PROOF_DST = "BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

const unhex = (s) => {
  const h = s.startsWith("0x") ? s.slice(2) : s;
  if (h.length % 2 || /[^0-9a-fA-F]/.test(h)) throw new Error("not hex: " + s.slice(0, 20));
  const out = new Uint8Array(h.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(h.substr(i * 2, 2), 16);
  return out;
};
const hex = (b) => "0x" + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const cat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
};
const eq = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
const u64 = (n) => { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, BigInt(n)); return b; };

// chainshare/ledger/merkle.py: leaf = H(0x00||x), node = H(0x01||l||r), root = H(0x02||u64(n)||MTH).
export function computeRootFromPath(leaf, index, size, path) {
  if (!(0 <= index && index < size)) throw new Error(`index ${index} outside a tree of ${size}`);
  let fn = index, sn = size - 1;
  let r = keccak_256(cat(Uint8Array.of(0), leaf));
  for (const p of path) {
    if (sn === 0) throw new Error("proof path is longer than the tree");
    if ((fn & 1) || fn === sn) {
      r = keccak_256(cat(Uint8Array.of(1), p, r));
      if (!(fn & 1)) { while ((fn & 1) === 0 && fn !== 0) { fn >>= 1; sn >>= 1; } }
    } else {
      r = keccak_256(cat(Uint8Array.of(1), r, p));
    }
    fn >>= 1; sn >>= 1;
  }
  if (sn !== 0) throw new Error("proof path is shorter than the tree");
  return keccak_256(cat(Uint8Array.of(2), u64(size), r));
}

const HEADER_FIELDS = ["parent_hash", "height", "round", "timestamp_ms", "proposer", "tx_root", "receipts_root",
  "state_root", "logs_bloom", "validator_set_hash", "gas_limit", "gas_used", "justify_hash"];

function asInt(v) { return typeof v === "bigint" ? Number(v) : v; }

function decodeHeader(encoded, what) {
  const f = decode(unhex(encoded), { useBigInt64: true });
  if (!Array.isArray(f) || f.length !== 13) throw new Error(`the ${what} is not an array of 13 fields`);
  return Object.fromEntries(HEADER_FIELDS.map((k, i) => [k, f[i]]));
}

// chainshare/execution/contracts/membership.py compute_validator_set_hash: keccak-256 of the
// canonical encoding of [[name, agency, address, bls_public_key, bls_pop], ...] in set order.
export function computeValidatorSetHash(validators) {
  return keccak_256(encode(validators.map((v) => [v.name, v.agency, unhex(v.address), unhex(v.bls_public_key),
    unhex(v.bls_pop)])));
}

/** Run every step; return [{step, ok, detail}] (never throws: a failure is a failed step). */
export function verifyProof(bundle) {
  const steps = [];
  const run = (step, fn) => {
    try {
      const detail = fn();
      steps.push({ step, ok: true, detail });
      return true;
    } catch (e) {
      steps.push({ step, ok: false, detail: String(e && e.message ? e.message : e) });
      return false;
    }
  };
  let header, headerHash, qc;
  const ok =
    run("Header decoded", () => {
      header = decodeHeader(bundle.header, "header");
      if (asInt(header.height) !== bundle.block_height)
        throw new Error(`header height ${header.height} is not the block ${bundle.block_height} shown`);
      return `block ${header.height}, round ${header.round}, tx root ${hex(header.tx_root)}`;
    }) &&
    run("Transaction in the block (Merkle path to the header's tx root)", () => {
      const p = bundle.transaction.proof;
      const root = computeRootFromPath(unhex(bundle.transaction.leaf), p.index, p.size, p.path.map(unhex));
      if (!eq(root, header.tx_root))
        throw new Error(`the path gives root ${hex(root)}, the header has ${hex(header.tx_root)}`);
      const txHash = keccak_256(unhex(bundle.transaction.leaf));
      if (hex(txHash) !== bundle.tx_hash.toLowerCase())
        throw new Error(`keccak of the transaction is ${hex(txHash)}, not the hash shown ${bundle.tx_hash}`);
      return `leaf ${p.index + 1} of ${p.size}, ${p.path.length} path hashes → ${hex(root)}`;
    }) &&
    run("Receipt in the block (Merkle path to the header's receipts root)", () => {
      const p = bundle.receipt.proof;
      const root = computeRootFromPath(unhex(bundle.receipt.leaf), p.index, p.size, p.path.map(unhex));
      if (!eq(root, header.receipts_root))
        throw new Error(`the path gives root ${hex(root)}, the header has ${hex(header.receipts_root)}`);
      return `receipts root ${hex(root)}`;
    }) &&
    run("Header hash (keccak-256 of the encoded header)", () => {
      headerHash = keccak_256(unhex(bundle.header));
      if (hex(headerHash) !== bundle.block_hash.toLowerCase())
        throw new Error(`keccak(header) = ${hex(headerHash)}, the block hash shown is ${bundle.block_hash}`);
      return hex(headerHash);
    }) &&
    run("Validator set matches the chain (the validator_set_hash of the parent header this header names)", () => {
      if (!bundle.parent_header) throw new Error("the proof carries no parent header");
      const parent = decodeHeader(bundle.parent_header, "parent header");
      const parentHash = keccak_256(unhex(bundle.parent_header));
      if (!eq(parentHash, header.parent_hash))
        throw new Error(`keccak(parent header) = ${hex(parentHash)}, the header's parent hash is ${hex(header.parent_hash)}`);
      if (asInt(parent.height) + 1 !== asInt(header.height))
        throw new Error(`the parent header is block ${parent.height}, not ${asInt(header.height) - 1}`);
      const missing = bundle.validators.filter((v) => !v.bls_pop || !v.address).map((v) => v.name);
      if (missing.length) throw new Error(`no proof of possession or address served for ${missing.join(", ")}`);
      const setHash = computeValidatorSetHash(bundle.validators);
      if (!eq(setHash, parent.validator_set_hash))
        throw new Error(`the ${bundle.validators.length} validators served hash to ${hex(setHash)}; block ` +
          `${parent.height} commits to ${hex(parent.validator_set_hash)}: these are not the chain's keys`);
      return `${bundle.validators.length} validators hash to ${hex(setHash)} = validator_set_hash of block ${parent.height}`;
    }) &&
    (bundle.epoch !== 0 || run("Validator set is the genesis set (block 0 hashes to the genesis hash shown)", () => {
      if (!bundle.genesis_header || !bundle.genesis_hash) throw new Error("the proof carries no genesis header or hash");
      const g = decodeHeader(bundle.genesis_header, "genesis header");
      const gHash = keccak_256(unhex(bundle.genesis_header));
      if (hex(gHash) !== bundle.genesis_hash.toLowerCase())
        throw new Error(`keccak(block 0 header) = ${hex(gHash)}, the genesis hash shown is ${bundle.genesis_hash}`);
      if (asInt(g.height) !== 0) throw new Error(`the genesis header is block ${g.height}`);
      const setHash = computeValidatorSetHash(bundle.validators);
      if (!eq(setHash, g.validator_set_hash))
        throw new Error(`block 0 commits to validator set ${hex(g.validator_set_hash)}, the served set hashes to ${hex(setHash)}`);
      return `epoch 0 set = the set of genesis ${hex(gHash)}`;
    })) &&
    run("Validators' proofs of possession (BLS PoP) verify", () => {
      const bls = bls12_381.longSignatures;
      const bad = bundle.validators.filter((v) => {
        const pk = unhex(v.bls_public_key);
        try {
          return !bls.verify(unhex(v.bls_pop), bls.hash(pk, POP_PROOF_DST), pk);
        } catch (e) {
          return true;
        }
      });
      if (bad.length) throw new Error(`the proof of possession of ${bad.map((v) => v.name).join(", ")} does not verify`);
      return `${bundle.validators.length} of ${bundle.validators.length}`;
    }) &&
    run("QC certifies this block", () => {
      const f = decode(unhex(bundle.qc), { useBigInt64: true });
      if (!Array.isArray(f) || f.length !== 5) throw new Error("the QC is not an array of 5 fields");
      qc = { block_hash: f[0], height: asInt(f[1]), round: asInt(f[2]), signers: f[3], signature: f[4] };
      if (!eq(qc.block_hash, headerHash)) throw new Error(`the QC certifies block ${hex(qc.block_hash)}`);
      if (qc.height !== asInt(header.height) || qc.round !== asInt(header.round))
        throw new Error(`the QC is for height ${qc.height} round ${qc.round}`);
      return `height ${qc.height}, round ${qc.round}`;
    }) &&
    run("Quorum of the epoch's validator set signed", () => {
      const n = bundle.validators.length;
      if (qc.signers.length !== Math.ceil(n / 8)) throw new Error(`signer bitmap of ${qc.signers.length} bytes for ${n} validators`);
      const idx = [];
      for (let i = 0; i < qc.signers.length * 8; i++) if ((qc.signers[i >> 3] >> (i & 7)) & 1) idx.push(i);
      if (idx.some((i) => i >= n)) throw new Error("the QC names a signer outside the validator set");
      const quorum = n - Math.floor((n - 1) / 3);
      if (idx.length < quorum) throw new Error(`${idx.length} signers, quorum is ${quorum} of ${n}`);
      qc.indices = idx;
      return `${idx.length} of ${n} (quorum ${quorum}): ` + idx.map((i) => bundle.validators[i].name).join(", ");
    }) &&
    run("BLS aggregate signature (BLS12-381, PoP scheme) verifies", () => {
      const msg = keccak_256(encode(["chainshare/vote/v2", bundle.chain_id, bundle.epoch, headerHash, qc.height,
        qc.round], { useBigInt64: false }));
      const bls = bls12_381.longSignatures;
      const pk = bls.aggregatePublicKeys(qc.indices.map((i) => unhex(bundle.validators[i].bls_public_key)));
      const sig = bls.Signature.fromBytes(qc.signature);
      if (!bls.verify(sig, bls.hash(msg, POP_DST), pk))
        throw new Error("the aggregate signature does not verify against the signers' public keys");
      return `vote message ${hex(msg)}`;
    });
  return { ok: !!ok, steps };
}

// A credit record's provenance: every lifecycle step's block proof (verifyProof), the event shown in that
// step's receipt, and the version chain (chainshare/credit/provenance.py: each version names the previous
// version's hash; versions count up from 1). The event's ABI data puts version, versionHash and
// previousVersionHash in head words 0, 17 and 18.
const word = (data, i) => data.slice(i * 32, (i + 1) * 32);
export function verifyCreditProvenance(bundle) {
  const steps = [];
  const fail = (step, e) => steps.push({ step, ok: false, detail: String(e && e.message ? e.message : e) });
  let previous = new Uint8Array(32), expected = 1n, recordTopic = null;
  for (const [i, s] of bundle.steps.entries()) {
    const where = `Step ${i + 1} (${s.event}, block ${s.block})`;
    const block = verifyProof(s.proof);
    for (const b of block.steps) steps.push({ step: `${where}: ${b.step}`, ok: b.ok, detail: b.detail });
    if (!block.ok) return { ok: false, steps };
    try {
      const receipt = decode(unhex(s.proof.receipt.leaf), { useBigInt64: true });
      if (asInt(receipt[0]) !== 1) throw new Error("the transaction failed: its receipt carries no event");
      const lg = receipt[3][s.log_in_receipt];
      if (!lg) throw new Error(`the receipt has no log ${s.log_in_receipt}`);
      const [address, topics, data] = lg;
      if (hex(address) !== bundle.registry.toLowerCase()) throw new Error(`log from ${hex(address)}, not the CreditRegistry`);
      const shown = s.log;
      if (!shown) throw new Error("the explorer has no indexed copy of this event");
      if (topics.length !== shown.topics.length || topics.some((t, k) => hex(t) !== shown.topics[k].toLowerCase()))
        throw new Error("the event's topics in the receipt differ from the event shown on this page");
      if (hex(data) !== shown.data.toLowerCase())
        throw new Error("the event's data in the receipt differs from the event shown on this page (the explorer's copy was altered)");
      if (recordTopic === null) recordTopic = hex(topics[1]);
      if (hex(topics[1]) !== recordTopic) throw new Error("this event is about another record");
      steps.push({ step: `${where}: the event shown is in the certified receipt`, ok: true,
        detail: `log ${s.log_in_receipt} of the receipt, ${data.length} bytes of data` });
      if (s.event === "RecordPublished" || s.event === "RecordCorrected") {
        const version = BigInt(hex(word(data, 0)));
        const versionHash = word(data, 17), prevHash = word(data, 18);
        if (version !== expected) throw new Error(`version ${version} where version ${expected} comes next`);
        if (!eq(prevHash, previous))
          throw new Error(`version ${version} points to ${hex(prevHash)}, the previous version's hash is ${hex(previous)}`);
        if (s.version_hash && hex(versionHash) !== s.version_hash.toLowerCase())
          throw new Error(`the page shows version hash ${s.version_hash}, the chain has ${hex(versionHash)}`);
        steps.push({ step: `${where}: version ${version} follows version ${expected - 1n} by hash`, ok: true,
          detail: `previous ${hex(prevHash)} → ${hex(versionHash)}` });
        previous = versionHash; expected += 1n;
      }
    } catch (e) {
      fail(`${where}: the event and version chain`, e);
      return { ok: false, steps };
    }
  }
  if (!bundle.steps.length || bundle.steps[0].event !== "RecordPublished") {
    fail("The history starts at the publication", "the first step is not RecordPublished");
    return { ok: false, steps };
  }
  return { ok: true, steps };
}

function render(panel, result, ms) {
  const list = panel.querySelector("ol.steps");
  list.textContent = "";
  for (const s of result.steps) {
    const li = document.createElement("li");
    li.className = s.ok ? "pass" : "fail";
    li.dataset.ok = String(s.ok);
    const b = document.createElement("strong");
    b.textContent = (s.ok ? "✔ passed: " : "✘ FAILED: ") + s.step;
    const d = document.createElement("div");
    d.className = "detail mono";
    d.textContent = s.detail;
    li.append(b, d);
    list.append(li);
  }
  const verdict = panel.querySelector(".verdict");
  verdict.className = "verdict " + (result.ok ? "pass" : "fail");
  verdict.dataset.state = result.ok ? "verified" : "failed";
  verdict.dataset.ms = String(ms);
  verdict.textContent = result.ok
    ? `Verified in your browser: all ${result.steps.length} steps passed (${ms.toFixed(0)} ms).`
    : `NOT VERIFIED: the step "${result.steps[result.steps.length - 1].step}" failed. Do not trust this page's data.`;
}

function runPanel(panelId, dataId, verify) {
  const panel = document.getElementById(panelId);
  const data = document.getElementById(dataId);
  if (!panel || !data) return;
  const t0 = performance.now();
  let result;
  try {
    result = verify(JSON.parse(data.textContent));
  } catch (e) {
    result = { ok: false, steps: [{ step: "Read the proof", ok: false, detail: String(e) }] };
  }
  render(panel, result, performance.now() - t0);
}

function start() {
  runPanel("verify-panel", "proof-data", verifyProof);
  runPanel("credit-verify-panel", "credit-proof-data", verifyCreditProvenance);
}

if (typeof document !== "undefined") {
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
}
