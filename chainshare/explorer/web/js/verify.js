// In-browser verification of a transaction's proof: Merkle inclusion under the header's
// tx root, the header hash, the validator set against the validator_set_hash of the parent header
// (whose hash the verified header names), each member's proof of possession, and the QC's BLS
// aggregate signature against that set. The set itself is proven from genesis: for epoch 0 it is
// the set block 0 (the genesis hash shown) commits to; for a later epoch the page walks the chain's
// epoch-change proofs from that genesis set, each change certified by the set before it, exactly as
// a node catching up does (chainshare/consensus/epochs.py verify_epoch_change). The chain of trust
// ends at the genesis hash shown (README "Explorer pages"). Cryptography from @noble/hashes
// (keccak-256) and @noble/curves (BLS12-381); the canonical msgpack from @msgpack/msgpack. Bundled by
// esbuild into ../static/verify.bundle.js.
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

// chainshare/ledger/quorum.py verify_qc: a signer bitmap of ceil(n/8) bytes naming a quorum
// (n - floor((n-1)/3)) of ``validators``, whose aggregate BLS signature (PoP scheme) holds over the
// vote message of (chain id, epoch, block hash, height, round). Returns the signer indices; throws.
function signerIndices(signers, n) {
  if (signers.length !== Math.ceil(n / 8)) throw new Error(`signer bitmap of ${signers.length} bytes for ${n} validators`);
  const idx = [];
  for (let i = 0; i < signers.length * 8; i++) if ((signers[i >> 3] >> (i & 7)) & 1) idx.push(i);
  if (idx.some((i) => i >= n)) throw new Error("the QC names a signer outside the validator set");
  const quorum = n - Math.floor((n - 1) / 3);
  if (idx.length < quorum) throw new Error(`${idx.length} signers, quorum is ${quorum} of ${n}`);
  return idx;
}

function voteMessage(chainId, epoch, blockHash, height, round) {
  return keccak_256(encode(["chainshare/vote/v2", chainId, epoch, blockHash, height, round], { useBigInt64: false }));
}

// A pairing check costs ~70 ms in a browser, and a page of epoch e walks e set changes (two QCs each).
// A check that HELD is remembered for the tab's session (sessionStorage when the page has it, else
// this module's memory), under keccak-256 of everything the check reads: only a byte-identical check
// is ever skipped, and a failed one is always re-run. (The page and this code come from the same
// explorer; a remembered result trusts nothing the verification did not already trust.)
const heldChecks = new Map();
let pairingChecks = 0;
/** How many pairing checks this module has run (not answered from memory): for the tests. */
export const countPairingChecks = () => pairingChecks;
function session() {
  try {
    return globalThis.sessionStorage || null;
  } catch (e) {
    return null; // storage disabled by the browser's settings
  }
}
function checkedOnce(kind, parts, check) {
  const key = `chainshare/${kind}/` + hex(keccak_256(new TextEncoder().encode(parts.join("|"))));
  const store = session();
  if (heldChecks.has(key) || (store && store.getItem(key) === "1")) return true;
  pairingChecks++;
  const ok = check();
  if (ok) {
    heldChecks.set(key, true);
    try {
      if (store) store.setItem(key, "1");
    } catch (e) {
      // storage full or refused: the module's memory still holds it
    }
  }
  return ok;
}
const hexOf = (b) => (typeof b === "string" ? b.toLowerCase() : hex(b));

function aggregateHolds(qc, indices, validators, chainId, epoch) {
  const keys = indices.map((i) => hexOf(validators[i].bls_public_key));
  const parts = ["vote/v2", chainId, epoch, hexOf(qc.block_hash), qc.height, qc.round, hexOf(qc.signature), ...keys];
  return checkedOnce("qc", parts, () => {
    const bls = bls12_381.longSignatures;
    const msg = voteMessage(chainId, epoch, qc.block_hash, qc.height, qc.round);
    const pk = bls.aggregatePublicKeys(keys.map(unhex));
    try {
      return bls.verify(bls.Signature.fromBytes(qc.signature), bls.hash(msg, POP_DST), pk);
    } catch (e) {
      return false;
    }
  });
}

function possessionHolds(v) {
  return checkedOnce("pop", [hexOf(v.bls_public_key), hexOf(v.bls_pop)], () => {
    const bls = bls12_381.longSignatures;
    const pk = unhex(v.bls_public_key);
    try {
      return bls.verify(unhex(v.bls_pop), bls.hash(pk, POP_PROOF_DST), pk);
    } catch (e) {
      return false;
    }
  });
}

function qcOf(f) {
  if (!Array.isArray(f) || f.length !== 5) throw new Error("the QC is not an array of 5 fields");
  return { block_hash: f[0], height: asInt(f[1]), round: asInt(f[2]), signers: f[3], signature: f[4] };
}

function qcHolds(qc, validators, chainId, epoch) {
  let idx;
  try {
    idx = signerIndices(qc.signers, validators.length);
  } catch (e) {
    return false;
  }
  return aggregateHolds(qc, idx, validators, chainId, epoch);
}

// Integers as the chain encodes them (msgpack's smallest form), to re-encode a decoded header.
const toNumbers = (x) => (typeof x === "bigint" ? Number(x) : Array.isArray(x) ? x.map(toNumbers) : x);

// chainshare/ledger/types.py Block: [header fields, transactions, justify QC or null, TC or null, signature];
// its hash is keccak-256 of the canonical encoding of the header.
function blockOf(f, what) {
  if (!Array.isArray(f) || f.length !== 5 || !Array.isArray(f[0]) || f[0].length !== 13)
    throw new Error(`the ${what} is not a block`);
  const header = Object.fromEntries(HEADER_FIELDS.map((k, i) => [k, f[0][i]]));
  header.height = asInt(header.height);
  header.round = asInt(header.round);
  return { header, hash: keccak_256(encode(toNumbers(f[0]))), justify: f[2] === null ? null : qcOf(f[2]) };
}

// chainshare/ledger/finality.py is_finality_proof_of: the blocks link to ``block`` one by one, each
// carrying its parent's QC, and the final QC certifies the last, one view after its parent.
function isFinalityProofOf(blocks, qc, block) {
  let parent = block;
  for (const b of blocks) {
    const j = b.justify;
    if (!eq(b.header.parent_hash, parent.hash) || b.header.height !== parent.header.height + 1 || j === null ||
      !eq(j.block_hash, parent.hash) || j.height !== parent.header.height || j.round !== parent.header.round)
      return false;
    parent = b;
  }
  const last = blocks[blocks.length - 1];
  const grandparent = blocks.length > 1 ? blocks[blocks.length - 2] : block;
  return eq(qc.block_hash, last.hash) && qc.height === last.header.height && qc.round === last.header.round &&
    last.header.round === grandparent.header.round + 1;
}

export const MAX_SET_SIZE = 64;

// chainshare/consensus/epochs.py decode_epoch_change_proof: [last block, its finality proof
// [suffix blocks, certified child, QC], epoch, activation height, validator rows].
function decodeEpochChange(raw) {
  const f = decode(unhex(raw), { useBigInt64: true });
  if (!Array.isArray(f) || f.length !== 5) throw new Error("an epoch-change proof is not an array of 5 fields");
  const [lastRaw, proofRaw, epoch, activation, rows] = f;
  if (!Array.isArray(rows) || !(rows.length > 0 && rows.length <= MAX_SET_SIZE))
    throw new Error(`an epoch-change proof's set has 1..${MAX_SET_SIZE} validators`);
  const p = decode(proofRaw, { useBigInt64: true });
  if (!Array.isArray(p) || p.length !== 3 || !Array.isArray(p[0])) throw new Error("a finality proof is not [suffix, child, QC]");
  const blocks = [...p[0], p[1]].map((b) => blockOf(decode(b, { useBigInt64: true }), "2-chain block"));
  const validators = rows.map((r) => {
    if (!Array.isArray(r) || r.length !== 5 || typeof r[0] !== "string" || typeof r[1] !== "string")
      throw new Error("a validator row is not [name, agency, address, key, pop]");
    return { name: r[0], agency: r[1], address: hex(r[2]), bls_public_key: hex(r[3]), bls_pop: hex(r[4]) };
  });
  return {
    last: blockOf(decode(lastRaw, { useBigInt64: true }), "last block"), blocks,
    qc: qcOf(decode(p[2], { useBigInt64: true })),
    next: { epoch: asInt(epoch), activation_height: asInt(activation), validators },
  };
}

// chainshare/consensus/epochs.py verify_epoch_change, check for check: null iff ``change`` proves with
// the signatures of ``current`` alone that ``change.next`` followed it; otherwise the reason.
function refuseEpochChange(current, change, chainId) {
  const { last, next } = change;
  const h = last.header.height;
  if (next.epoch !== current.epoch + 1) return `proves epoch ${next.epoch} where epoch ${current.epoch + 1} comes next`;
  if (h < current.activation_height || next.activation_height !== h + 1)
    return `block ${h} is not the last block of epoch ${current.epoch} (active from ${current.activation_height}) ` +
      `before activation height ${next.activation_height}`;
  if (!eq(computeValidatorSetHash(next.validators), last.header.validator_set_hash))
    return `the members of epoch ${next.epoch} do not hash to block ${h}'s validator_set_hash`;
  if (eq(last.header.validator_set_hash, computeValidatorSetHash(current.validators)))
    return `block ${h} names the members of epoch ${current.epoch} again: no proven change`;
  if (!isFinalityProofOf(change.blocks, change.qc, last)) return `no 2-chain over block ${h}`;
  const signed = (qc) => qcHolds(qc, current.validators, chainId, current.epoch);
  if (!change.blocks.every((b) => b.justify !== null && signed(b.justify)) || !signed(change.qc))
    return `the 2-chain over block ${h} is not signed by a quorum of epoch ${current.epoch}`;
  return null;
}

// Block 0's header must hash to the genesis hash shown; returns its decoded header.
function checkGenesis(bundle) {
  if (!bundle.genesis_header || !bundle.genesis_hash) throw new Error("the proof carries no genesis header or hash");
  const g = decodeHeader(bundle.genesis_header, "genesis header");
  const gHash = keccak_256(unhex(bundle.genesis_header));
  if (hex(gHash) !== bundle.genesis_hash.toLowerCase())
    throw new Error(`keccak(block 0 header) = ${hex(gHash)}, the genesis hash shown is ${bundle.genesis_hash}`);
  if (asInt(g.height) !== 0) throw new Error(`the genesis header is block ${g.height}`);
  return { header: g, hash: gHash };
}

/** Walk ``bundle.epoch_changes`` from the genesis set (``bundle.genesis_set``, which block 0 commits to)
 * to the set of ``bundle.epoch``, which must be the set served for this block; returns a summary; throws. */
export function proveValidatorSet(bundle) {
  const g = checkGenesis(bundle);
  const gs = bundle.genesis_set;
  if (!gs || !Array.isArray(gs.validators) || !gs.validators.length) throw new Error("the proof carries no genesis set");
  if (!eq(computeValidatorSetHash(gs.validators), g.header.validator_set_hash))
    throw new Error(`the genesis set served does not hash to block 0's validator_set_hash ${hex(g.header.validator_set_hash)}`);
  const raws = bundle.epoch_changes || [];
  if (raws.length !== bundle.epoch)
    throw new Error(`block ${bundle.block_height} is in epoch ${bundle.epoch}: ${bundle.epoch} changes from genesis ` +
      `are needed, ${raws.length} served (a validator-set change is missing)`);
  let current = { epoch: 0, activation_height: asInt(gs.activation_height), validators: gs.validators };
  for (const [i, raw] of raws.entries()) {
    let change;
    try {
      change = decodeEpochChange(raw);
    } catch (e) {
      throw new Error(`change ${i + 1} is undecodable: ${e && e.message ? e.message : e}`);
    }
    const reason = refuseEpochChange(current, change, bundle.chain_id);
    if (reason !== null) throw new Error(`change ${i + 1} refused: ${reason}`);
    current = change.next;
  }
  if (current.epoch !== bundle.epoch || !eq(computeValidatorSetHash(current.validators),
    computeValidatorSetHash(bundle.validators)))
    throw new Error(`the set proven for epoch ${current.epoch} is not the set served for this block's epoch ${bundle.epoch}`);
  if (bundle.block_height < current.activation_height)
    throw new Error(`block ${bundle.block_height} lies before epoch ${current.epoch}'s activation height ${current.activation_height}`);
  return `genesis ${hex(g.hash)} → epoch ${current.epoch} (active from block ${current.activation_height}), ` +
    `each change signed by a quorum of the set before it`;
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
      const g = checkGenesis(bundle);
      const setHash = computeValidatorSetHash(bundle.validators);
      if (!eq(setHash, g.header.validator_set_hash))
        throw new Error(`block 0 commits to validator set ${hex(g.header.validator_set_hash)}, the served set hashes to ${hex(setHash)}`);
      return `epoch 0 set = the set of genesis ${hex(g.hash)}`;
    })) &&
    (bundle.epoch === 0 || run(`Validator set proven from genesis (${(bundle.epoch_changes || []).length} changes)`,
      () => proveValidatorSet(bundle))) &&
    run("Validators' proofs of possession (BLS PoP) verify", () => {
      const bad = bundle.validators.filter((v) => !possessionHolds(v));
      if (bad.length) throw new Error(`the proof of possession of ${bad.map((v) => v.name).join(", ")} does not verify`);
      return `${bundle.validators.length} of ${bundle.validators.length}`;
    }) &&
    run("QC certifies this block", () => {
      qc = qcOf(decode(unhex(bundle.qc), { useBigInt64: true }));
      if (!eq(qc.block_hash, headerHash)) throw new Error(`the QC certifies block ${hex(qc.block_hash)}`);
      if (qc.height !== asInt(header.height) || qc.round !== asInt(header.round))
        throw new Error(`the QC is for height ${qc.height} round ${qc.round}`);
      return `height ${qc.height}, round ${qc.round}`;
    }) &&
    run("Quorum of the epoch's validator set signed", () => {
      const n = bundle.validators.length;
      qc.indices = signerIndices(qc.signers, n);
      const quorum = n - Math.floor((n - 1) / 3);
      return `${qc.indices.length} of ${n} (quorum ${quorum}): ` + qc.indices.map((i) => bundle.validators[i].name).join(", ");
    }) &&
    run("BLS aggregate signature (BLS12-381, PoP scheme) verifies", () => {
      if (!aggregateHolds(qc, qc.indices, bundle.validators, bundle.chain_id, bundle.epoch))
        throw new Error("the aggregate signature does not verify against the signers' public keys");
      return `vote message ${hex(voteMessage(bundle.chain_id, bundle.epoch, headerHash, qc.height, qc.round))}`;
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
