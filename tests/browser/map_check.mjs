// The embedding map in headless Chromium, offline, opened from disk: captions are shown as text, hovering shows
// the right thumbnail (the synthetic thumbnails' colours are known), the legend hides a class, the caption
// filter works, clicking lists the precomputed neighbours; prints first-paint and hover timings and the size.
//
//   node tests/browser/map_check.mjs FIXTURE_PAGE.html SYNTHETIC_PAGE.html SCREENSHOT.png
import { createRequire } from "module";
import fs from "fs";
import path from "path";

const require = createRequire(import.meta.url);
const modules = process.env.PLAYWRIGHT_NODE_MODULES || path.resolve(".sdscope/browser-check-node/node_modules");
const { chromium } = require(path.join(modules, "playwright-core"));
const [fixturePage, syntheticPage, screenshot] = process.argv.slice(2);

const fail = (msg) => { console.error(`[map-check] FAIL: ${msg}`); process.exit(1); };
const log = (msg) => console.log(`[map-check] ${msg}`);
const median = (v) => [...v].sort((a, b) => a - b)[v.length >> 1];
// The background of synthetic thumbnail i: EmbeddingMap::synthetic_colour.
const colourOf = (i) => [(i * 67 + 40) & 255, (i * 151 + 90) & 255, (i * 29 + 160) & 255];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

async function open(context, file) {
  const page = await context.newPage();
  const errors = [], requests = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("dialog", (d) => { errors.push(`a dialog opened: ${d.message()}`); d.dismiss(); });
  page.on("request", (r) => { if (!/^(file|data):/.test(r.url())) requests.push(r.url()); });
  await page.goto("file://" + path.resolve(file));
  await page.waitForFunction(() => {
    const s = document.querySelector(".sdscope-map")?.sdscope?.state;
    return s && s.ready && s.atlasesLoaded === JSON.parse(document.querySelector(".sdscope-map [data-role=payload]").textContent).atlases.length;
  }, null, { timeout: 120000 });
  return { page, errors, requests };
}

// Hover point i with the real mouse; what the tooltip shows.
async function hover(page, i) {
  const { x, y } = await page.evaluate((i) => document.querySelector(".sdscope-map").sdscope.clientOf(i), i);
  await page.mouse.move(x, y);
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(r)));
  return page.evaluate(() => {
    const tip = document.querySelector(".sdscope-map [data-role=tip]");
    const text = (r) => tip.querySelector(`[data-role=${r}]`)?.textContent;
    const c = tip.querySelector("canvas");
    let rgb = null;
    if (c) {
      // The top-left corner of the picture (drawn centred in the square canvas): the background colour.
      const d = c.getContext("2d").getImageData(4, 16, 4, 4).data, s = [0, 0, 0];
      for (let p = 0; p < 16; p++) for (let ch = 0; ch < 3; ch++) s[ch] += d[4 * p + ch] / 16;
      rgb = s.map(Math.round);
    }
    return { shown: tip.style.display !== "none", index: tip.dataset.index === "" ? -1 : Number(tip.dataset.index),
             caption: text("caption"), label: text("label"), rgb };
  });
}
const close = (a, b, tol) => a && a.every((v, c) => Math.abs(v - b[c]) <= tol);

try {
  const context = await browser.newContext({ offline: true, viewport: { width: 1200, height: 900 } });

  // The fixture page: the caption holding <script> is text, hovering and filtering work on a real map.
  const fx = await open(context, fixturePage);
  const P0 = await fx.page.evaluate(() => JSON.parse(document.querySelector(".sdscope-map [data-role=payload]").textContent));
  const evil = P0.captions.findIndex((c) => c.includes("<script>alert(1)"));
  if (evil < 0) fail(`no caption holds the <script> file name: ${P0.captions}`);
  await fx.page.fill(".sdscope-map [data-role=filter]", "script");
  await fx.page.waitForFunction(() => document.querySelector(".sdscope-map").sdscope.state.visibleCount === 1);
  const t0 = await hover(fx.page, evil);
  if (t0.index !== evil || !t0.caption.includes("<script>alert(1)")) fail(`the <script> caption is not shown as text: ${JSON.stringify(t0)}`);
  const scripts = await fx.page.$$eval(".sdscope-map script", (s) => s.length);
  if (scripts !== 2) fail(`${scripts} script elements in the map (a caption became HTML?)`);
  await fx.page.fill(".sdscope-map [data-role=filter]", "");
  await fx.page.waitForFunction((n) => document.querySelector(".sdscope-map").sdscope.state.visibleCount === n, P0.n);
  await fx.page.mouse.click(...Object.values(await fx.page.evaluate((i) => document.querySelector(".sdscope-map").sdscope.clientOf(i), evil)));
  const listed = await fx.page.$$eval(".sdscope-map [data-role=neighbour]", (els) => els.length);
  if (listed !== P0.k) fail(`clicking listed ${listed} neighbours, expected ${P0.k}`);
  await fx.page.screenshot({ path: screenshot, fullPage: true });
  if (fx.errors.length) fail(fx.errors.join("; "));
  if (fx.requests.length) fail(`network requests: ${fx.requests.join(", ")}`);
  log(`fixture map: ${P0.n} points, ${P0.labels.length} labels; <script> caption shown as text; ${listed} neighbours listed; no errors, no requests`);

  // The synthetic page: timings, then hover, legend, filter and neighbours checked against the payload.
  const sy = await open(context, syntheticPage);
  const page = sy.page;
  const paint = await page.evaluate(() => {
    const s = document.querySelector(".sdscope-map").sdscope.state;
    return { first: s.firstPaintMs, frame: s.firstFrameMs, draw: s.lastDrawMs };
  });
  const P = await page.evaluate(() => JSON.parse(document.querySelector(".sdscope-map [data-role=payload]").textContent));
  const bytes = fs.statSync(syntheticPage).size;
  const atlasBytes = P.atlases.reduce((s, a) => s + a.length * 3 / 4, 0);
  // Visible points with no other point within 6 px (and room for the tooltip): hovering them must show them.
  const findIsolated = () => page.evaluate(() => {
    const api = document.querySelector(".sdscope-map").sdscope, out = [];
    const P = JSON.parse(document.querySelector(".sdscope-map [data-role=payload]").textContent);
    const b = document.querySelector(".sdscope-map [data-role=overlay]").getBoundingClientRect();
    const at = Array.from({ length: P.n }, (_, i) => api.clientOf(i));
    for (let i = 0; i < P.n && out.length < 12; i += 7) {
      const c = at[i];
      if (c.x < b.left + 20 || c.y < b.top + 20 || c.x > b.right - 20 || c.y > b.bottom - 20) continue;
      if (at.every((d, j) => j === i || Math.hypot(d.x - c.x, d.y - c.y) >= 6)) out.push(i);
    }
    return out;
  });
  let isolated = await findIsolated();
  if (isolated.length < 4) fail(`only ${isolated.length} isolated points to hover`);
  const checkHover = async (when, ids) => {
    for (const i of ids) {
      const t = await hover(page, i);
      if (t.index !== i) fail(`${when}: hovering point ${i} showed ${JSON.stringify(t)}`);
      if (t.caption !== P.captions[i] || !t.label.includes(P.labels[P.label[i]])) fail(`${when}: wrong text for ${i}: ${JSON.stringify(t)}`);
      if (!close(t.rgb, colourOf(i), 14)) fail(`${when}: thumbnail of ${i} has colour ${t.rgb}, expected ${colourOf(i)}`);
    }
  };
  await checkHover("hover", isolated);
  // Zoom into the first cluster's middle, where points are too dense to pick apart unzoomed.
  const centre = await page.evaluate(() => {
    const a = document.querySelector(".sdscope-map").sdscope, b = document.querySelector(".sdscope-map [data-role=overlay]").getBoundingClientRect();
    const c = a.clientOf(1); return { x: c.x - b.left, y: c.y - b.top };
  });
  await page.evaluate((c) => document.querySelector(".sdscope-map").sdscope.zoom(6, c.x, c.y), centre);
  const zoomed = await findIsolated();
  if (zoomed.length < 4) fail(`only ${zoomed.length} isolated points after zooming`);
  await checkHover("after zooming", zoomed);
  await page.dblclick(".sdscope-map [data-role=overlay]", { position: { x: 5, y: 5 } });
  log(`hover: ${isolated.length} points show their own thumbnail (colour checked), caption and label; ${zoomed.length} more after zooming ×6`);

  // The legend: clicking a class hides it (nothing of it can be hovered), clicking again shows it.
  const count0 = P.label.filter((l) => l === 0).length;
  await page.click(".sdscope-map [data-label='0']");
  await page.waitForFunction((v) => document.querySelector(".sdscope-map").sdscope.state.visibleCount === v, P.n - count0);
  for (const i of isolated.filter((i) => P.label[i] === 0)) {
    const t = await hover(page, i);
    if (t.shown && P.label[t.index] === 0) fail(`point ${i} of a hidden class still shows on hover`);
  }
  await page.click(".sdscope-map [data-label='0']");
  await page.waitForFunction((v) => document.querySelector(".sdscope-map").sdscope.state.visibleCount === v, P.n);
  // The caption filter.
  const dogs = P.captions.filter((c) => c.toLowerCase().includes("dog")).length;
  await page.fill(".sdscope-map [data-role=filter]", "DOG");
  await page.waitForFunction((v) => document.querySelector(".sdscope-map").sdscope.state.visibleCount === v, dogs);
  const other = isolated.find((i) => !P.captions[i].includes("dog"));
  if (other !== undefined && (await hover(page, other)).index === other) fail("a point filtered out by caption still shows on hover");
  await page.fill(".sdscope-map [data-role=filter]", "");
  await page.waitForFunction((v) => document.querySelector(".sdscope-map").sdscope.state.visibleCount === v, P.n);
  log(`filters: hiding "${P.labels[0]}" leaves ${P.n - count0} of ${P.n} points; "DOG" leaves ${dogs}`);

  // Neighbours: a click lists the precomputed ones, with their thumbnails.
  const target = isolated[0];
  const at = await page.evaluate((i) => document.querySelector(".sdscope-map").sdscope.clientOf(i), target);
  await page.mouse.click(at.x, at.y);
  const items = await page.$$eval(".sdscope-map [data-role=neighbour]", (els) => els.map((e) => {
    const d = e.querySelector("canvas").getContext("2d").getImageData(4, 16, 4, 4).data, s = [0, 0, 0];
    for (let p = 0; p < 16; p++) for (let ch = 0; ch < 3; ch++) s[ch] += d[4 * p + ch] / 16;
    return { index: Number(e.dataset.index), rgb: s.map(Math.round) };
  }));
  const expected = P.nn.slice(target * P.k, (target + 1) * P.k);
  if (JSON.stringify(items.map((e) => e.index)) !== JSON.stringify(expected)) fail(`neighbours of ${target}: ${items.map((e) => e.index)}, expected ${expected}`);
  for (const e of items) if (!close(e.rgb, colourOf(e.index), 14)) fail(`neighbour ${e.index} has thumbnail colour ${e.rgb}`);
  const sameLabel = expected.filter((j) => P.label[j] === P.label[target]).length;
  log(`neighbours: clicking point ${target} lists its ${items.length} neighbours (${sameLabel} of its own cluster) with the right thumbnails`);

  // Timings: the hover handler (look-up + tooltip), real pointer events end to end, and a full redraw (zoom/pan).
  const bench = await page.evaluate(() => document.querySelector(".sdscope-map").sdscope.benchmarkHover(400));
  const events = [];
  for (let t = 0; t < 40; t++) {
    const i = isolated[t % isolated.length];
    const c = await page.evaluate((i) => document.querySelector(".sdscope-map").sdscope.clientOf(i), i);
    await page.mouse.move(c.x + (t % 3), c.y);
    events.push(await page.evaluate(() => document.querySelector(".sdscope-map").sdscope.state.lastEventMs));
  }
  const redraw = await page.evaluate(() => {
    const a = document.querySelector(".sdscope-map").sdscope, v = [];
    for (let t = 0; t < 15; t++) { a.draw(); v.push(a.state.lastDrawMs); }
    return v;
  });
  if (sy.errors.length) fail(sy.errors.join("; "));
  if (sy.requests.length) fail(`network requests: ${sy.requests.join(", ")}`);
  log(`${P.n} points: time to first paint ${paint.first.toFixed(0)} ms from navigation start (first frame ${paint.frame.toFixed(0)} ms; scatter drawn in ${paint.draw.toFixed(1)} ms)`);
  log(`hover latency: handler ${bench.median.toFixed(2)} ms median, ${bench.p95.toFixed(2)} ms p95, ${bench.max.toFixed(2)} ms max (400 hovers); pointer event to tooltip ${median(events).toFixed(2)} ms median (40 real moves); goal < 16 ms`);
  log(`redraw (zoom/pan) ${median(redraw).toFixed(1)} ms median`);
  log(`size: ${(bytes / 1e6).toFixed(2)} MB for ${P.n} points = ${(bytes / P.n).toFixed(0)} bytes per point, of which thumbnails ${(atlasBytes / P.n).toFixed(0)} (JPEG, ${P.atlases.length} atlases of ${P.cell}px cells)`);
  if (bench.p95 > 16) fail(`hover handler p95 ${bench.p95.toFixed(2)} ms is over 16 ms`);
} finally {
  await browser.close();
}
