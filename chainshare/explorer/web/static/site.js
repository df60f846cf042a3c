// Progressive enhancement only: local times, copy buttons, search suggestions.
document.documentElement.classList.add("js");
function localize(root) {
  for (const t of root.querySelectorAll("time[datetime]:not([data-local])")) {
    const d = new Date(t.getAttribute("datetime"));
    if (isNaN(d)) continue;
    t.dataset.local = "1";
    const local = document.createElement("span");
    local.className = "local";
    local.textContent = d.toLocaleString() + " (local)";
    t.after(local);
  }
}
window.chainshareLocalize = localize;
localize(document);
document.addEventListener("click", (e) => {
  const b = e.target.closest("button.copy");
  if (!b) return;
  const done = () => { b.textContent = "copied"; setTimeout(() => (b.textContent = "copy"), 1500); };
  if (navigator.clipboard) navigator.clipboard.writeText(b.dataset.copy).then(done, () => {});
});
const q = document.getElementById("q"), list = document.getElementById("q-suggestions");
let timer = null;
if (q && list) q.addEventListener("input", () => {
  clearTimeout(timer);
  const v = q.value.trim();
  if (v.length < 2 || v.length > 128) return;
  timer = setTimeout(async () => {
    try {
      const r = await fetch("/api/v1/search?limit=8&q=" + encodeURIComponent(v));
      if (!r.ok) return;
      list.textContent = "";
      for (const x of (await r.json()).items) {
        const o = document.createElement("option");
        o.value = String(x.id);
        o.label = x.kind + (x.title ? ": " + x.title : "");
        list.append(o);
      }
    } catch (_) { /* suggestions are optional */ }
  }, 200);
});
