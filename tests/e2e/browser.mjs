// Drives Debian's chromium with playwright-core through a list of actions (JSON on argv[2]),
// printing one JSON line per action as it completes (so a test can act between two steps).
// Usage: node browser.mjs '{"js": true, "actions": [{"do": "goto", "url": "..."}, ...]}'
import { chromium } from "playwright-core";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const plan = JSON.parse(process.argv[2]);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const profile = mkdtempSync(join(tmpdir(), "chainshare-e2e-"));
const args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"];
const context = await chromium.launchPersistentContext(profile, {
  executablePath, args, headless: true, javaScriptEnabled: plan.js !== false, acceptDownloads: true,
  viewport: { width: 1280, height: 900 },
});
const page = context.pages()[0] || (await context.newPage());
const problems = [];
page.on("pageerror", (e) => problems.push("pageerror: " + e.message));
page.on("console", (m) => { if (m.type() === "error") problems.push("console: " + m.text()); });
const out = (x) => process.stdout.write(JSON.stringify(x) + "\n");
const T = plan.timeout_ms || 60000;

try {
  for (const a of plan.actions) {
    let r = null;
    switch (a.do) {
      case "goto": { const resp = await page.goto(a.url, { timeout: T }); r = { status: resp && resp.status(), url: page.url() }; break; }
      case "fill": await page.fill(a.sel, a.value, { timeout: T }); break;
      case "press": {
        const nav = a.navigates ? page.waitForNavigation({ timeout: T }) : null;
        await page.press(a.sel, a.key, { timeout: T });
        if (nav) await nav;
        r = { url: page.url() };
        break;
      }
      case "click": {
        const nav = a.navigates ? page.waitForNavigation({ timeout: T }) : null;
        await page.click(a.sel, { timeout: T });
        if (nav) await nav;
        r = { url: page.url() };
        break;
      }
      case "wait": await page.waitForSelector(a.sel, { timeout: a.timeout_ms || T, state: a.state || "attached" }); break;
      case "waitFunction": await page.waitForFunction(a.js, a.arg, { timeout: a.timeout_ms || T, polling: 200 }); break;
      case "text": r = await page.textContent(a.sel, { timeout: T }); break;
      case "texts": r = await page.$$eval(a.sel, (els) => els.map((e) => e.textContent.trim())); break;
      case "eval": r = await page.evaluate(a.js); break;
      case "html": r = await page.content(); break;
      case "viewport": await page.setViewportSize({ width: a.width, height: a.height }); break;
      case "screenshot": await page.screenshot({ path: a.path, fullPage: true }); r = a.path; break;
      case "mark": break;  // the test acts after seeing this line
      case "waitFileText": {  // wait for the test to write a text into a file, then for the page to show it
        let want = "";
        const until = Date.now() + (a.timeout_ms || T);
        while (!want && Date.now() < until) {
          try { want = readFileSync(a.path, "utf8").trim(); } catch (_) { /* not yet */ }
          if (!want) await new Promise((ok) => setTimeout(ok, 200));
        }
        if (!want) throw new Error("the test never wrote " + a.path);
        await page.waitForFunction(([sel, w]) => (document.querySelector(sel)?.textContent || "").includes(w),
          [a.sel, want], { timeout: a.timeout_ms || T, polling: 200 });
        r = want;
        break;
      }
      case "download": {
        const [dl] = await Promise.all([page.waitForEvent("download", { timeout: T }), page.click(a.sel)]);
        const path = join(profile, "download-" + Date.now());
        await dl.saveAs(path);
        r = { name: dl.suggestedFilename(), text: readFileSync(path, "utf8") };
        break;
      }
      case "verify": {
        await page.waitForSelector(".verdict[data-state=verified], .verdict[data-state=failed]", { timeout: T });
        r = await page.evaluate(() => {
          const v = document.querySelector(".verdict");
          const steps = [...document.querySelectorAll("ol.steps li")].map((li) => ({
            ok: li.dataset.ok === "true", step: li.querySelector("strong").textContent,
            detail: li.querySelector(".detail").textContent,
            color: getComputedStyle(li).color }));
          return { state: v.dataset.state, ms: Number(v.dataset.ms), text: v.textContent,
                   background: getComputedStyle(v).backgroundColor, steps };
        });
        break;
      }
      default: throw new Error("unknown action " + a.do);
    }
    out({ do: a.do, ok: true, result: r });
  }
  out({ do: "end", ok: true, problems });
} catch (e) {
  out({ do: "end", ok: false, error: String(e && e.stack || e), problems, url: page.url() });
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
