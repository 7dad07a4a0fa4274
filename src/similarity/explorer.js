// sdscope similarity explorer: everything runs here, on float16 representations embedded in the page.
window.sdscopeExplorer = window.sdscopeExplorer || (function () {
  "use strict";
  const HALF = (function () {
    const t = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
      t[h] = e === 0 ? s * f * Math.pow(2, -24) : e === 31 ? (f ? NaN : s * Infinity) : s * (1 + f / 1024) * Math.pow(2, e - 15);
    }
    return t;
  })();

  function decode(b64) {
    const bin = atob(b64);
    const n = bin.length >> 1;
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = HALF[bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8)];
    return out;
  }

  function prepare(d) {
    const x = decode(d.f16), n = d.h * d.w, c = d.c;
    const norms = new Float32Array(n), mean = new Float64Array(c);
    for (let i = 0; i < n; i++) {
      let s = 0;
      const o = i * c;
      for (let k = 0; k < c; k++) { const v = x[o + k]; s += v * v; mean[k] += v; }
      norms[i] = Math.sqrt(s);
    }
    for (let k = 0; k < c; k++) mean[k] /= n;
    return { h: d.h, w: d.w, c: c, x: x, norms: norms, mean: mean };
  }

  // The explorer's measures; same semantics as sdscope::similarity.
  function measure(name, g, q, qNorm, srcMean) {
    const n = g.h * g.w, c = g.c, x = g.x, out = new Float32Array(n);
    if (name === "cosine" || name === "dot-product") {
      let maxAbs = 0;
      for (let i = 0; i < n; i++) {
        const o = i * c;
        let s0 = 0, s1 = 0, s2 = 0, s3 = 0, k = 0;
        for (; k + 3 < c; k += 4) {
          s0 += x[o + k] * q[k]; s1 += x[o + k + 1] * q[k + 1]; s2 += x[o + k + 2] * q[k + 2]; s3 += x[o + k + 3] * q[k + 3];
        }
        for (; k < c; k++) s0 += x[o + k] * q[k];
        const s = (s0 + s1) + (s2 + s3);
        out[i] = name === "cosine" ? s / (qNorm * g.norms[i] + 1e-10) : s;
        maxAbs = Math.max(maxAbs, Math.abs(s));
      }
      if (name === "dot-product") for (let i = 0; i < n; i++) out[i] = maxAbs > 0 ? out[i] / maxAbs : 0;
    } else if (name === "cosine-centered") {
      const m = new Float64Array(c), qc = new Float64Array(c);
      let qcn = 0;
      for (let k = 0; k < c; k++) { m[k] = (srcMean[k] + g.mean[k]) / 2; qc[k] = q[k] - m[k]; qcn += qc[k] * qc[k]; }
      qcn = Math.sqrt(qcn);
      for (let i = 0; i < n; i++) {
        let s = 0, tn = 0;
        const o = i * c;
        for (let k = 0; k < c; k++) { const t = x[o + k] - m[k]; s += t * qc[k]; tn += t * t; }
        out[i] = s / (qcn * Math.sqrt(tn) + 1e-10);
      }
    } else if (name === "rel-l2-norm") {
      let maxAbs = 0;
      for (let i = 0; i < n; i++) { out[i] = g.norms[i] - qNorm; maxAbs = Math.max(maxAbs, Math.abs(out[i])); }
      for (let i = 0; i < n; i++) out[i] = maxAbs > 0 ? out[i] / maxAbs : 0;
    } else {
      let maxD = 0;
      for (let i = 0; i < n; i++) {
        let d = 0;
        const o = i * c;
        if (name === "manhattan") for (let k = 0; k < c; k++) d += Math.abs(x[o + k] - q[k]);
        else if (name === "euclidean") { for (let k = 0; k < c; k++) { const t = x[o + k] - q[k]; d += t * t; } d = Math.sqrt(d); }
        else for (let k = 0; k < c; k++) d = Math.max(d, Math.abs(x[o + k] - q[k]));
        out[i] = d;
        maxD = Math.max(maxD, d);
      }
      for (let i = 0; i < n; i++) out[i] = maxD > 0 ? 1 - out[i] / maxD : 1;
    }
    let best = 0, sum = 0, sum2 = 0;
    for (let i = 0; i < n; i++) { if (out[i] > out[best]) best = i; sum += out[i]; }
    const mean = sum / n;
    for (let i = 0; i < n; i++) sum2 += (out[i] - mean) * (out[i] - mean);
    return { values: out, best: best, mean: mean, std: Math.sqrt(sum2 / n) };
  }

  return function (root) {
    const P = JSON.parse(root.querySelector("[data-role=payload]").textContent);
    const pick = (r) => root.querySelector("[data-role=" + r + "]");
    const cache = new Map();
    const state = { query: null, lastUpdateMs: null, lastMaps: null };
    const panels = [];
    const DISPLAY = 256;

    P.images.forEach(function (img, i) {
      const box = document.createElement("div");
      const scale = DISPLAY / Math.max(img.width, img.height);
      const w = Math.round(img.width * scale), h = Math.round(img.height * scale);
      box.style.cssText = "display:flex;flex-direction:column;align-items:center";
      const frame = document.createElement("div");
      frame.style.cssText = "position:relative;width:" + w + "px;height:" + h + "px;touch-action:none";
      const pic = document.createElement("img");
      pic.src = "data:image/png;base64," + img.png;
      pic.style.cssText = "width:" + w + "px;height:" + h + "px;display:block;image-rendering:auto";
      const canvas = document.createElement("canvas");
      canvas.width = w; canvas.height = h;
      canvas.style.cssText = "position:absolute;left:0;top:0;cursor:crosshair";
      const name = document.createElement("div");
      name.textContent = img.name;
      name.style.cssText = "max-width:" + w + "px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap";
      const stats = document.createElement("div");
      stats.style.cssText = "color:#555";
      stats.dataset.role = "stats";
      frame.appendChild(pic); frame.appendChild(canvas);
      box.appendChild(frame); box.appendChild(name); box.appendChild(stats);
      pick("images").appendChild(box);
      panels.push({ canvas: canvas, stats: stats, w: w, h: h });
      const onPointer = function (ev) {
        const g = grids()[i];
        const r = canvas.getBoundingClientRect();
        const col = Math.min(g.w - 1, Math.max(0, Math.floor((ev.clientX - r.left) / r.width * g.w)));
        const row = Math.min(g.h - 1, Math.max(0, Math.floor((ev.clientY - r.top) / r.height * g.h)));
        if (!state.query || state.query.image !== i || state.query.row !== row || state.query.col !== col) {
          schedule({ image: i, row: row, col: col });
        }
      };
      canvas.addEventListener("pointermove", onPointer);
      canvas.addEventListener("pointerdown", onPointer);
    });

    function grids() {
      const key = pick("position").value + "/" + pick("step").value;
      if (!cache.has(key)) cache.set(key, P.data[+pick("position").value][+pick("step").value].map(prepare));
      return cache.get(key);
    }

    let pending = null;
    function schedule(q) {
      if (pending === null) requestAnimationFrame(function () { const p = pending; pending = null; update(p.image, p.row, p.col); });
      pending = q;
    }

    function update(image, row, col) {
      const t0 = performance.now();
      const gs = grids();
      const src = gs[image];
      row = Math.min(src.h - 1, row); col = Math.min(src.w - 1, col);
      state.query = { image: image, row: row, col: col };
      const c = src.c, qi = row * src.w + col;
      const q = src.x.subarray(qi * c, (qi + 1) * c);
      const name = P.measures[+pick("measure").value];
      const maps = gs.map(function (g) { return measure(name, g, q, src.norms[qi], src.mean); });
      maps.forEach(function (m, i) { draw(panels[i], gs[i], m, i === image ? qi : -1); });
      state.lastMaps = maps;
      state.lastUpdateMs = performance.now() - t0;
      pick("status").textContent = name + " to token (" + row + ", " + col + ") of image " + (image + 1) +
        " · update " + state.lastUpdateMs.toFixed(1) + " ms";
      return state.lastUpdateMs;
    }

    // The map is painted into a canvas of one pixel per token, then scaled up without smoothing.
    function draw(panel, g, m, queryIndex) {
      if (!panel.small || panel.small.width !== g.w || panel.small.height !== g.h) {
        panel.small = document.createElement("canvas");
        panel.small.width = g.w; panel.small.height = g.h;
      }
      const sctx = panel.small.getContext("2d");
      const pixels = sctx.createImageData(g.w, g.h), px = pixels.data;
      for (let i = 0; i < g.h * g.w; i++) {
        const v = m.values[i], a = Math.min(1, Math.abs(v)), o = 4 * i;
        if (v >= 0) { px[o] = 255; px[o + 1] = 90; px[o + 2] = 0; } else { px[o] = 0; px[o + 1] = 110; px[o + 2] = 255; }
        px[o + 3] = Math.round(a * 255);
      }
      sctx.putImageData(pixels, 0, 0);
      const ctx = panel.canvas.getContext("2d");
      ctx.clearRect(0, 0, panel.w, panel.h);
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(panel.small, 0, 0, panel.w, panel.h);
      const cw = panel.w / g.w, ch = panel.h / g.h;
      const outline = function (i, color) {
        ctx.lineWidth = 2; ctx.strokeStyle = color;
        ctx.strokeRect((i % g.w) * cw + 1, Math.floor(i / g.w) * ch + 1, cw - 2, ch - 2);
      };
      if (queryIndex >= 0) outline(queryIndex, "#00c853"); else outline(m.best, "#ffffff");
      panel.stats.textContent = "mean " + m.mean.toFixed(3) + " ± " + m.std.toFixed(3) +
        (queryIndex >= 0 ? " (query)" : " · best (" + Math.floor(m.best / g.w) + ", " + (m.best % g.w) + ")");
      panel.canvas.dataset.best = String(m.best);
    }

    ["measure", "position", "step"].forEach(function (r) {
      pick(r).addEventListener("change", function () { if (state.query) update(state.query.image, state.query.row, state.query.col); });
    });

    // For scripts and tests: time `n` updates at random tokens, return the median in milliseconds.
    function benchmark(n) {
      const gs = grids(), times = [];
      for (let k = 0; k < n; k++) {
        const i = k % gs.length;
        times.push(update(i, Math.floor(Math.random() * gs[i].h), Math.floor(Math.random() * gs[i].w)));
      }
      times.sort(function (a, b) { return a - b; });
      return times[Math.floor(times.length / 2)];
    }
    root.sdscope = { update: update, benchmark: benchmark, state: state };
    const g0 = grids()[0];
    update(0, Math.floor(g0.h / 2), Math.floor(g0.w / 2));
  };
})();
