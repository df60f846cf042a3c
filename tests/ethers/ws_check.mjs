// ethers v6 WebSocketProvider, unchanged, against a chainshare node: "block" events (eth_subscribe
// newHeads), a contract event filter (eth_subscribe logs with address and topics), and a contract
// transaction sent over the same websocket.
// Usage: node ws_check.mjs WS_URL PRIVATE_KEY ARTIFACT_JSON   (prints one JSON object; exit 0)
import { readFileSync } from "node:fs";
import { ethers } from "ethers";

const [wsUrl, privateKey, artifactPath] = process.argv.slice(2);
const artifact = JSON.parse(readFileSync(artifactPath, "utf8"));
const provider = new ethers.WebSocketProvider(wsUrl);
const wallet = new ethers.Wallet(privateKey, provider);
const notary = new ethers.Contract(artifact.address, artifact.abi, wallet);
const out = {};

const within = async (ms, what, promise) => {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);  // a pending timer would keep node running
  }
};
const until = async (ms, what, predicate) => within(ms, what, (async () => {
  while (!predicate()) await new Promise((r) => setTimeout(r, 50));
})());

out.chainId = Number((await provider.getNetwork()).chainId);
const blocks = [];
await provider.on("block", (n) => blocks.push(n));

const digest = ethers.hexlify(ethers.randomBytes(32));
const other = ethers.hexlify(ethers.randomBytes(32));
const events = [];
const others = [];
// ethers hands a listener of a filter the event payload last (before it, the decoded args if any)
await notary.on(notary.filters.Anchored(digest), (...args) => {
  const log = args[args.length - 1].log;
  const parsed = notary.interface.parseLog(log);
  events.push({ digest: parsed.args.digest, by: parsed.args.by, blockNumber: log.blockNumber,
                blockHash: log.blockHash, transactionHash: log.transactionHash, index: log.index,
                removed: log.removed });
});
await notary.on(notary.filters.Anchored(other), () => others.push(1));
// Two heads after the subscriptions were sent: the node has registered them (frames are handled in order).
await until(60000, "two block events", () => blocks.length >= 2);

const tx = await notary.anchor(digest);  // eth_sendRawTransaction and friends, over the websocket
const receipt = await tx.wait(1, 60000);
await until(60000, "the Anchored event", () => events.length >= 1);
await until(60000, "the blocks after the event", () => blocks.length && blocks[blocks.length - 1] >= receipt.blockNumber + 1);
out.receipt = { blockNumber: receipt.blockNumber, blockHash: receipt.blockHash, hash: receipt.hash,
                index: receipt.logs[0].index };
out.events = events;
out.others = others.length;
out.wallet = wallet.address;
await provider.removeAllListeners();  // eth_unsubscribe for each (sent in the background)
await new Promise((r) => setTimeout(r, 200));
out.unknownUnsubscribe = await provider.send("eth_unsubscribe", ["0x" + "00".repeat(16)]);  // answered after them
out.blocks = blocks;
await provider.destroy();
console.log(JSON.stringify(out));
