// ethers v6, unchanged, against a chainshare node: the calls a dapp makes with a contract object.
// Usage: node check.mjs RPC_URL PRIVATE_KEY ARTIFACT_JSON   (prints one JSON object; exit 0)
import { readFileSync } from "node:fs";
import { ethers } from "ethers";

const [rpcUrl, privateKey, artifactPath] = process.argv.slice(2);
const artifact = JSON.parse(readFileSync(artifactPath, "utf8"));
const provider = new ethers.JsonRpcProvider(rpcUrl);
const wallet = new ethers.Wallet(privateKey, provider);
const notary = new ethers.Contract(artifact.address, artifact.abi, wallet);
const out = {};

const network = await provider.getNetwork();
out.chainId = Number(network.chainId);
out.blockNumberBefore = await provider.getBlockNumber();

// A transaction built, signed (EIP-1559) and sent by ethers; wait() polls for the receipt.
const digest = ethers.hexlify(ethers.randomBytes(32));
const tx = await notary.anchor(digest);
const firstSentAt = Date.now();
out.txType = tx.type;
const receipt = await tx.wait(1, 30000);
out.status = receipt.status;
out.to = receipt.to;
out.from = receipt.from;
out.wallet = wallet.address;
out.txHashMatches = receipt.hash === tx.hash;
const parsed = receipt.logs.map((log) => notary.interface.parseLog(log)).filter((x) => x !== null);
out.events = parsed.map((e) => ({ name: e.name, digest: e.args.digest, by: e.args.by }));
out.digest = digest;

// Reads: a view call, the block and the transaction by hash, logs through a filter.
out.isAnchored = await notary.isAnchored(digest);
out.isAnchoredOther = await notary.isAnchored(ethers.hexlify(ethers.randomBytes(32)));
const block = await provider.getBlock(receipt.blockNumber);
out.blockHashMatches = block.hash === receipt.blockHash && block.transactions.includes(tx.hash);
const fetched = await provider.getTransaction(tx.hash);
out.fetchedFrom = fetched.from;
const found = await notary.queryFilter(notary.filters.Anchored(digest), 0, "latest");
out.filterCount = found.length;
out.nonce = await provider.getTransactionCount(wallet.address, "latest");

// With explicit EIP-1559 fee fields ethers sends a type-2 transaction (above, it chose a legacy one:
// ethers v6 treats a zero baseFeePerGas as "no EIP-1559", and this network charges no fees).
const digest2 = ethers.hexlify(ethers.randomBytes(32));
// ethers v6 answers a request identical to one made in the last 250 ms from its cache (the provider's
// cacheTimeout), the "pending" nonce lookup included: when this node has finalized the first transaction
// and served everything above within 250 ms, a second send would reuse nonce 0 and be refused (-32003).
// A dapp sending twice from one wallet that fast meets the same; README says so.
await new Promise((resolve) => setTimeout(resolve, Math.max(0, 300 - (Date.now() - firstSentAt))));
const tx2 = await notary.anchor(digest2, { maxFeePerGas: 1n, maxPriorityFeePerGas: 1n });
const receipt2 = await tx2.wait(1, 30000);
out.tx2 = { type: tx2.type, status: receipt2.status, anchored: await notary.isAnchored(digest2) };

// A revert: the simulated call and the gas estimate both fail with the contract's reason.
for (const [label, attempt] of [["staticCall", () => notary.anchor.staticCall(digest)],
                                ["estimateGas", () => notary.anchor.estimateGas(digest)]]) {
  try {
    await attempt();
    out[label] = { reverted: false };
  } catch (err) {
    out[label] = { reverted: true, code: err.code, reason: err.reason ?? null };
  }
}
console.log(JSON.stringify(out));
