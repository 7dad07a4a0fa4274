// Opens one executed notebook in JupyterLab in headless Chromium and checks that its pictures render.
// Run by kernel/browser_check (which installs Chromium and playwright-core, starts and stops JupyterLab):
//
//   node kernel/browser_check.mjs --base http://127.0.0.1:PORT --token T --notebook NAME.ipynb \
//        --expect-img N --expect-svg M --screenshot OUT.png [--timeout-s 900]
//
// Checks, in the notebook's output areas: at least N <img> with a data:image/png source, each loaded with a natural
// size > 0 and a bounding box > 0; when M > 0, at least one inline <svg> with a bounding box > 0; and that the
// notebook's kernel ("Rust (sdscope)", started by JupyterLab on opening) reaches "idle". Then it takes a screenshot
// of the whole page (the viewport made as tall as the notebook) and one of the first picture of each kind.
import { createRequire } from "node:module";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const base = args.base;
const token = args.token;
const notebook = args.notebook;
const expectImg = Number(args["expect-img"] ?? 0);
const expectSvg = Number(args["expect-svg"] ?? 0);
const shot = args.screenshot;
const timeoutMs = Number(args["timeout-s"] ?? 900) * 1000;
const nodeModules = process.env.SDSCOPE_BROWSER_NODE_MODULES;
if (!base || !token || !notebook || !shot || !nodeModules) {
  console.error("usage: SDSCOPE_BROWSER_NODE_MODULES=DIR node browser_check.mjs --base URL --token T --notebook NB --screenshot PNG");
  process.exit(2);
}
const { chromium } = createRequire(path.join(nodeModules, "noop.js"))("playwright-core");
const log = (msg) => console.error(`[browser] ${msg}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function kernels() {
  const r = await fetch(`${base}/api/kernels`, { headers: { Authorization: `token ${token}` } });
  if (!r.ok) throw new Error(`GET /api/kernels: ${r.status}`);
  return r.json();
}

const userData = mkdtempSync(path.join(tmpdir(), "sdscope-chromium-"));
let context;
let failed = false;
const fail = (msg) => {
  failed = true;
  log(`FAIL: ${msg}`);
};
try {
  context = await chromium.launchPersistentContext(userData, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1400, height: 1000 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (e) => log(`page error: ${e.message}`));
  const started = Date.now();
  const url = `${base}/lab/tree/${encodeURIComponent(notebook)}?token=${token}`;
  log(`opening ${url.replace(token, "…")}`);
  await page.goto(url, { waitUntil: "domcontentloaded", timeout: 120000 });
  await page.waitForSelector(".jp-NotebookPanel .jp-Notebook .jp-Cell", { timeout: 120000 });
  log(`notebook shown after ${((Date.now() - started) / 1000).toFixed(1)} s`);

  // Wait until the expected pictures are in the output areas and every <img> has loaded.
  const probe = () =>
    page.evaluate(() => {
      const outputs = [...document.querySelectorAll(".jp-NotebookPanel .jp-OutputArea-output")];
      const imgs = outputs.flatMap((o) => [...o.querySelectorAll("img")]).filter((i) => i.src.startsWith("data:image/png"));
      const svgs = outputs.flatMap((o) => [...o.querySelectorAll("svg")]).filter((s) => !s.parentElement.closest("svg"));
      const box = (e) => {
        const r = e.getBoundingClientRect();
        return { w: r.width, h: r.height };
      };
      return {
        outputs: outputs.length,
        imgs: imgs.map((i) => ({ complete: i.complete, nw: i.naturalWidth, nh: i.naturalHeight, ...box(i) })),
        svgs: svgs.map((s) => ({ ...box(s), children: s.childElementCount })),
      };
    });
  let state;
  for (;;) {
    state = await probe();
    const imgsReady = state.imgs.length >= expectImg && state.imgs.every((i) => i.complete);
    const svgsReady = expectSvg === 0 || state.svgs.length > 0;
    if (imgsReady && svgsReady) break;
    if (Date.now() - started > 120000) break;
    await sleep(500);
  }
  log(`output areas: ${state.outputs}; data:image/png <img>: ${state.imgs.length} (file has ${expectImg}); ` +
      `inline <svg>: ${state.svgs.length} (file has ${expectSvg})`);
  if (expectImg + expectSvg === 0) fail("the notebook file has no pictures in text/html outputs");
  if (state.imgs.length < expectImg) fail(`only ${state.imgs.length} of ${expectImg} PNG <img> rendered`);
  state.imgs.forEach((i, k) => {
    if (!(i.complete && i.nw > 0 && i.nh > 0 && i.w > 0 && i.h > 0))
      fail(`<img> #${k} is empty: ${JSON.stringify(i)}`);
  });
  if (expectSvg > 0 && state.svgs.length === 0) fail("no inline <svg> rendered");
  state.svgs.forEach((s, k) => {
    if (!(s.w > 0 && s.h > 0)) fail(`<svg> #${k} is empty: ${JSON.stringify(s)}`);
  });

  // The kernel JupyterLab started for the notebook reaches idle (its first start may compile).
  let idle = false;
  for (;;) {
    const ks = await kernels();
    if (ks.some((k) => k.name === "sdscope" && k.execution_state === "idle")) {
      idle = true;
      break;
    }
    if (ks.some((k) => k.execution_state === "dead")) break;
    if (Date.now() - started > timeoutMs) break;
    await sleep(1000);
  }
  const ks = await kernels();
  log(`kernels: ${JSON.stringify(ks.map((k) => [k.name, k.execution_state]))} after ${((Date.now() - started) / 1000).toFixed(1)} s`);
  if (!idle) fail("the sdscope kernel did not reach idle in JupyterLab");

  // Screenshots: the notebook panel scrolls inside JupyterLab's fixed layout, so make the viewport as tall as it.
  const height = await page.evaluate(() => {
    const s = document.querySelector(".jp-NotebookPanel .jp-WindowedPanel-outer") ||
      document.querySelector(".jp-NotebookPanel .jp-Notebook");
    return s ? s.scrollHeight : 1000;
  });
  await page.setViewportSize({ width: 1400, height: Math.min(Math.max(1000, height + 250), 12000) });
  await sleep(1500);
  await page.screenshot({ path: shot, fullPage: true });
  log(`screenshot ${shot}`);
  const first = async (selector, suffix) => {
    const el = page.locator(selector).first();
    if ((await el.count()) === 0) return;
    await el.scrollIntoViewIfNeeded();
    const file = shot.replace(/\.png$/, "") + suffix;
    await el.screenshot({ path: file });
    log(`screenshot ${file}`);
  };
  await first(".jp-NotebookPanel .jp-OutputArea-output img[src^='data:image/png']", "-img.png");
  await first(".jp-NotebookPanel .jp-OutputArea-output svg", "-svg.png");
} catch (e) {
  fail(e.stack || String(e));
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(userData, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
