// The similarity explorer in headless Chromium, offline, opened from disk: hovering changes the maps and moves
// the best-match outline, user text is shown as text, and one hover update is timed.
//
//   node tests/browser/explorer_check.mjs FIXTURE_PAGE.html SYNTHETIC_PAGE.html SCREENSHOT.png
import { createRequire } from "module";
import path from "path";

const require = createRequire(import.meta.url);
const modules = process.env.PLAYWRIGHT_NODE_MODULES || path.resolve(".sdscope/browser-check-node/node_modules");
const { chromium } = require(path.join(modules, "playwright-core"));
const [fixturePage, syntheticPage, screenshot] = process.argv.slice(2);

const fail = (msg) => { console.error(`[explorer-check] FAIL: ${msg}`); process.exit(1); };
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const context = await browser.newContext({ offline: true, viewport: { width: 1200, height: 800 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("dialog", (d) => { errors.push(`a dialog opened: ${d.message()}`); d.dismiss(); });
  await page.goto("file://" + path.resolve(fixturePage));
  await page.waitForFunction(() => document.querySelector(".sdscope-explorer")?.sdscope?.state?.lastMaps);
  const names = await page.$$eval(".sdscope-explorer [data-role=images] > div > div:nth-child(2)", (els) => els.map((e) => e.textContent));
  if (!names.some((n) => n.includes("<script>alert(1)"))) fail(`the file name with <script> is not shown as text: ${names}`);
  const canvases = await page.$$(".sdscope-explorer canvas");
  if (canvases.length < 2) fail(`expected a canvas per image, found ${canvases.length}`);
  const snapshot = () => page.evaluate(() => {
    const root = document.querySelector(".sdscope-explorer");
    return { pixels: [...root.querySelectorAll("canvas")].map((c) => c.toDataURL()),
             best: [...root.querySelectorAll("canvas")].map((c) => c.dataset.best),
             stats: [...root.querySelectorAll("[data-role=stats]")].map((s) => s.textContent) };
  });
  const box = await canvases[0].boundingBox();
  const seen = [];
  for (const [fx, fy] of [[0.1, 0.1], [0.9, 0.85], [0.5, 0.3], [0.2, 0.9]]) {
    await page.mouse.move(box.x + box.width * fx, box.y + box.height * fy);
    await page.waitForTimeout(100);
    seen.push(await snapshot());
  }
  const distinctMaps = new Set(seen.map((s) => s.pixels[1])).size;
  const distinctBest = new Set(seen.map((s) => s.best[1])).size;
  if (distinctMaps < 2) fail("hovering different tokens did not change the other image's map");
  if (distinctBest < 2) fail("the best-match outline never moved");
  for (const measure of ["2", "5", "6"]) {
    await page.selectOption(".sdscope-explorer [data-role=measure]", measure);
    await page.waitForTimeout(50);
  }
  await page.screenshot({ path: screenshot, fullPage: true });
  if (errors.length) fail(errors.join("; "));
  console.log(`[explorer-check] hover: ${distinctMaps} different maps and ${distinctBest} best-match positions over 4 pointer positions; text escaped; no errors`);

  const bench = await context.newPage();
  await bench.goto("file://" + path.resolve(syntheticPage));
  await bench.waitForFunction(() => document.querySelector(".sdscope-explorer")?.sdscope?.state?.lastMaps, null, { timeout: 120000 });
  const result = await bench.evaluate(() => {
    const root = document.querySelector(".sdscope-explorer");
    const sel = root.querySelector("[data-role=measure]");
    const out = {};
    for (const [i, name] of [[0, "cosine"], [1, "cosine-centered"], [4, "euclidean"]]) {
      sel.value = String(i);
      root.sdscope.benchmark(5);
      out[name] = root.sdscope.benchmark(41);
    }
    return out;
  });
  for (const [name, ms] of Object.entries(result)) {
    console.log(`[explorer-check] one hover update (${name}), 4 images × 32×32 tokens × 1280 channels: ${ms.toFixed(2)} ms (median of 41)`);
  }
} finally {
  await browser.close();
}
