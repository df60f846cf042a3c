// Credit pages' live updates: when the explorer indexes a new credit event (of this page's subject, or any
// for the lists), fetch this page again and swap its main content (server-rendered: the same HTML a reload gives).
(function () {
  const marker = document.getElementById("credit-live");
  if (!marker || !window.EventSource || !window.DOMParser) return;
  const subject = marker.dataset.subject;
  const es = new EventSource("/live/credit" + (subject ? "?subject=" + encodeURIComponent(subject) : ""));
  es.addEventListener("open", () => { marker.hidden = false; });
  es.addEventListener("error", () => { marker.hidden = true; });
  es.addEventListener("credit", async () => {
    if (document.getElementById("credit-verify-panel")) { window.location.reload(); return; }
    const r = await fetch(window.location.href, { headers: { Accept: "text/html" } });
    if (!r.ok) return;
    const doc = new DOMParser().parseFromString(await r.text(), "text/html");
    const main = doc.getElementById("main");
    if (!main) return;
    document.getElementById("main").replaceWith(main);
    const m = document.getElementById("credit-live");
    if (m) { m.hidden = false; m.dataset.updated = String(Date.now()); }
    if (window.chainshareLocalize) window.chainshareLocalize(main);
  });
})();
