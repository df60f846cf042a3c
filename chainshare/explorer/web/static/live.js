// The home page's live updates: new finalized blocks and their transactions over server-sent events.
(function () {
  const table = document.querySelector("#latest-blocks tbody");
  if (!table || !window.EventSource) return;
  const first = table.querySelector("tr[data-height]");
  const after = first ? first.dataset.height : "";
  const es = new EventSource("/live/blocks" + (after ? "?after=" + after : ""));
  const badge = document.getElementById("live-state");
  const fmt = (n) => Number(n).toLocaleString("en-US");
  const cell = (tr, html) => { const td = document.createElement("td"); td.append(html); tr.append(td); return td; };
  const link = (href, text) => { const a = document.createElement("a"); a.href = href; a.textContent = text; return a; };
  es.addEventListener("open", () => { if (badge) badge.hidden = false; });
  es.addEventListener("error", () => { if (badge) badge.hidden = true; });
  es.addEventListener("block", (ev) => {
    const { block: b, txs, status } = JSON.parse(ev.data);
    const tr = document.createElement("tr");
    tr.dataset.height = b.height; tr.className = "new";
    cell(tr, link("/block/" + b.height, fmt(b.height)));
    const t = document.createElement("time"); t.setAttribute("datetime", new Date(b.timestamp_ms).toISOString());
    t.textContent = new Date(b.timestamp_ms).toISOString().replace("T", " ").slice(0, 19) + " UTC"; cell(tr, t);
    cell(tr, fmt(b.tx_count));
    const h = document.createElement("span"); h.className = "mono hash"; h.title = b.hash;
    h.textContent = b.hash.slice(0, 10) + "…" + b.hash.slice(-6); cell(tr, h);
    table.prepend(tr);
    while (table.rows.length > 10) table.deleteRow(table.rows.length - 1);
    const txBody = document.querySelector("#latest-txs tbody");
    for (const x of txs.slice().reverse()) {
      if (!txBody) break;
      const r = document.createElement("tr"); r.className = "new";
      cell(r, link("/tx/" + x.hash, x.hash.slice(0, 10) + "…" + x.hash.slice(-6)));
      cell(r, link("/block/" + x.block_height, fmt(x.block_height)));
      cell(r, new Date(x.timestamp_ms).toISOString().replace("T", " ").slice(0, 19) + " UTC");
      cell(r, link("/address/" + x.from, x.from.slice(0, 10) + "…")).append(x.agency ? " " + x.agency : "");
      cell(r, (x.contract || "") + (x.method ? "." + x.method : ""));
      cell(r, x.status === 1 ? "success" : "reverted");
      txBody.prepend(r);
      while (txBody.rows.length > 10) txBody.deleteRow(txBody.rows.length - 1);
    }
    const ih = document.getElementById("indexed-height"); if (ih) ih.textContent = fmt(status.indexed_height);
    const lag = document.getElementById("indexer-lag"); if (lag && status.lag !== null) lag.textContent = fmt(status.lag) + " blocks";
    if (window.chainshareLocalize) window.chainshareLocalize(table);
  });
})();
