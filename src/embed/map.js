// sdscope embedding map: a scatter drawn into pixels, hover thumbnails from JPEG atlases, legend, caption
// filter, zoom and pan, and nearest neighbours (precomputed in the embedding space) on click. No libraries.
window.sdscopeMap = window.sdscopeMap || (function () {
  "use strict";
  const PALETTE = [
    [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75], [227, 119, 194],
    [127, 127, 127], [188, 189, 34], [23, 190, 207], [174, 199, 232], [255, 187, 120], [152, 223, 138],
    [255, 152, 150], [197, 176, 213], [196, 156, 148], [247, 182, 210], [199, 199, 199], [219, 219, 141], [158, 218, 229]];

  function colourOf(i) {
    if (i < PALETTE.length) return PALETTE[i];
    const h = (i * 0.6180339887) % 1, f = (t) => { const k = (t + h * 12) % 12; return Math.round(255 * (0.5 - 0.4 * Math.max(-1, Math.min(k - 3, 9 - k, 1)))); };
    return [f(0), f(8), f(4)];
  }
  const css = (c) => "rgb(" + c[0] + "," + c[1] + "," + c[2] + ")";

  return function (root) {
    const pick = (r) => root.querySelector("[data-role=" + r + "]");
    const P = JSON.parse(pick("payload").textContent);
    const n = P.n, k = P.k, W = P.width, H = P.height;
    const xs = Float32Array.from(P.x), ys = Float32Array.from(P.y), lab = Uint32Array.from(P.label);
    const nn = Int32Array.from(P.nn);
    const wh = Uint8Array.from(atob(P.wh), (c) => c.charCodeAt(0));
    const colours = P.labels.map((_, i) => colourOf(i));
    const packed = new Uint32Array(colours.map((c) => ((255 << 24) | (c[2] << 16) | (c[1] << 8) | c[0]) >>> 0));
    const plot = pick("plot"), over = pick("overlay"), tip = pick("tip"), frame = pick("frame");
    const dpr = Math.max(1, Math.min(3, window.devicePixelRatio || 1));
    plot.width = over.width = Math.round(W * dpr); plot.height = over.height = Math.round(H * dpr);
    const pctx = plot.getContext("2d"), octx = over.getContext("2d");
    const pixels = pctx.createImageData(plot.width, plot.height), px32 = new Uint32Array(pixels.data.buffer);
    const hidden = new Uint8Array(P.labels.length), visible = new Uint8Array(n).fill(1);
    const state = { ready: false, firstPaintMs: null, visibleCount: n, hover: -1, selected: -1, atlasesLoaded: 0,
                    lastHoverMs: null, lastEventMs: null, lastDrawMs: null, filter: "" };
    let lower = null;

    // Data coordinates are in the unit square; screen = (ox + x·s, oy − y·s), CSS pixels.
    const view = {};
    function resetView() { view.s = 0.92 * Math.min(W, H); view.ox = (W - view.s) / 2; view.oy = (H + view.s) / 2; }
    resetView();

    // A uniform grid over the unit square for hover look-ups.
    const G = Math.max(8, Math.min(512, Math.round(Math.sqrt(n) / 2)));
    const cellOf = (x, y) => Math.min(G - 1, Math.max(0, Math.floor(x * G))) * G + Math.min(G - 1, Math.max(0, Math.floor(y * G)));
    const start = new Int32Array(G * G + 1), items = new Int32Array(n);
    for (let i = 0; i < n; i++) start[cellOf(xs[i], ys[i]) + 1]++;
    for (let c = 0; c < G * G; c++) start[c + 1] += start[c];
    { const fill = start.slice(0, G * G); for (let i = 0; i < n; i++) items[fill[cellOf(xs[i], ys[i])]++] = i; }

    const atlases = P.atlases.map(function (b64) {
      const img = new Image();
      img.onload = function () { state.atlasesLoaded++; if (state.hover >= 0) showTip(state.hover); if (state.selected >= 0) listNeighbours(state.selected); };
      img.src = "data:image/jpeg;base64," + b64;
      return img;
    });

    const R = Math.max(1, Math.round(2 * dpr)), disc = [];
    for (let dy = -R; dy <= R; dy++) for (let dx = -R; dx <= R; dx++) if (dx * dx + dy * dy <= R * R + R) disc.push([dx, dy]);
    function draw() {
      const t0 = performance.now(), pw = plot.width, ph = plot.height;
      px32.fill(0xffffffff);
      const s = view.s * dpr, ox = view.ox * dpr, oy = view.oy * dpr;
      const offsets = Int32Array.from(disc.map((d) => d[1] * pw + d[0])), m = offsets.length;
      for (let i = 0; i < n; i++) {
        if (!visible[i]) continue;
        const x = Math.round(ox + xs[i] * s), y = Math.round(oy - ys[i] * s), c = packed[lab[i]];
        if (x >= R && y >= R && x < pw - R && y < ph - R) {
          const o = y * pw + x;
          for (let j = 0; j < m; j++) px32[o + offsets[j]] = c;
        } else if (x > -R && y > -R && x < pw + R && y < ph + R) {
          for (let j = 0; j < m; j++) {
            const xx = x + disc[j][0], yy = y + disc[j][1];
            if (xx >= 0 && yy >= 0 && xx < pw && yy < ph) px32[yy * pw + xx] = c;
          }
        }
      }
      pctx.putImageData(pixels, 0, 0);
      drawOverlay();
      state.lastDrawMs = performance.now() - t0;
    }

    const screenX = (i) => view.ox + xs[i] * view.s, screenY = (i) => view.oy - ys[i] * view.s;
    function ring(i, colour, radius, width) {
      octx.beginPath(); octx.arc(screenX(i), screenY(i), radius, 0, 2 * Math.PI);
      octx.lineWidth = width; octx.strokeStyle = colour; octx.stroke();
    }
    function drawOverlay() {
      octx.setTransform(dpr, 0, 0, dpr, 0, 0);
      octx.clearRect(0, 0, W, H);
      if (state.selected >= 0) {
        for (let j = 0; j < k; j++) ring(nn[state.selected * k + j], "#000", 5, 1.5);
        ring(state.selected, "#e00", 7, 2.5);
      }
      if (state.hover >= 0) ring(state.hover, "#000", 6, 2);
    }

    let frameQueued = false;
    function redraw() { if (!frameQueued) { frameQueued = true; requestAnimationFrame(function () { frameQueued = false; draw(); }); } }

    // The visible point nearest to (sx, sy) in CSS pixels of the frame, within `maxPx`; −1 if none.
    function nearestAt(sx, sy, maxPx) {
      const x = (sx - view.ox) / view.s, y = (view.oy - sy) / view.s, r = maxPx / view.s;
      const c0 = Math.max(0, Math.floor((x - r) * G)), c1 = Math.min(G - 1, Math.floor((x + r) * G));
      const r0 = Math.max(0, Math.floor((y - r) * G)), r1 = Math.min(G - 1, Math.floor((y + r) * G));
      let best = -1, bestD = r * r;
      for (let cx = c0; cx <= c1; cx++) for (let cy = r0; cy <= r1; cy++) {
        const cell = cx * G + cy;
        for (let p = start[cell]; p < start[cell + 1]; p++) {
          const i = items[p];
          if (!visible[i]) continue;
          const dx = xs[i] - x, dy = ys[i] - y, d = dx * dx + dy * dy;
          if (d <= bestD) { bestD = d; best = i; }
        }
      }
      return best;
    }

    function thumbnail(i, side) {
      const c = document.createElement("canvas");
      c.width = c.height = side; c.style.cssText = "width:" + side + "px;height:" + side + "px;display:block";
      c.dataset.index = String(i);
      const g = c.getContext("2d"), a = Math.floor(i / P.per), j = i % P.per;
      const img = atlases[a], w = wh[2 * i] + 1, h = wh[2 * i + 1] + 1;
      if (!img || !img.complete || !img.naturalWidth) {
        g.fillStyle = "#eee"; g.fillRect(0, 0, side, side);
        return c;
      }
      const f = side / Math.max(w, h), dw = Math.round(w * f), dh = Math.round(h * f);
      g.drawImage(img, (j % P.cols) * P.cell, Math.floor(j / P.cols) * P.cell, w, h, (side - dw) >> 1, (side - dh) >> 1, dw, dh);
      return c;
    }
    function line(text, style) { const d = document.createElement("div"); d.textContent = text; if (style) d.style.cssText = style; return d; }
    function swatch(l) {
      const s = document.createElement("span");
      s.style.cssText = "display:inline-block;width:10px;height:10px;border-radius:5px;margin-right:4px;background:" + css(colours[l]);
      return s;
    }
    function describe(box, i, side) {
      box.appendChild(thumbnail(i, side));
      const l = line(P.labels[lab[i]], "font-weight:bold;margin-top:2px"); l.prepend(swatch(lab[i])); l.dataset.role = "label";
      box.appendChild(l);
      const cap = line(P.captions[i], "word-break:break-word"); cap.dataset.role = "caption"; box.appendChild(cap);
      const idx = line("#" + i, "color:#666"); idx.dataset.role = "index"; box.appendChild(idx);
    }

    function showTip(i, sx, sy) {
      tip.textContent = "";
      if (i < 0) { tip.style.display = "none"; tip.dataset.index = ""; return; }
      if (P.atlases.length) describe(tip, i, 128);
      else { tip.appendChild(line(P.labels[lab[i]], "font-weight:bold")); tip.appendChild(line(P.captions[i])); tip.appendChild(line("#" + i, "color:#666")); }
      tip.dataset.index = String(i);
      tip.style.display = "block";
      if (sx !== undefined) {
        const left = sx + 14 + 270 > W ? Math.max(0, sx - 14 - 270) : sx + 14;
        tip.style.left = left + "px"; tip.style.top = Math.max(0, Math.min(H - 200, sy - 20)) + "px";
      }
    }

    function hoverAt(sx, sy) {
      const t0 = performance.now();
      const i = nearestAt(sx, sy, 8);
      if (i !== state.hover) { state.hover = i; showTip(i, sx, sy); drawOverlay(); }
      else if (i >= 0) { const left = sx + 14 + 270 > W ? Math.max(0, sx - 14 - 270) : sx + 14; tip.style.left = left + "px"; }
      state.lastHoverMs = performance.now() - t0;
      return state.lastHoverMs;
    }

    function listNeighbours(i) {
      const box = pick("neighbours");
      box.textContent = "";
      state.selected = i;
      drawOverlay();
      if (i < 0) return;
      box.appendChild(line("Point #" + i + " and its " + k + " nearest neighbours in the embedding space (" + P.metric + "), nearest first:", "margin-bottom:4px"));
      const row = document.createElement("div");
      row.style.cssText = "display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start";
      [i].concat(Array.from(nn.subarray(i * k, (i + 1) * k))).forEach(function (j, rank) {
        const item = document.createElement("div");
        item.style.cssText = "width:104px;cursor:pointer;padding:2px;border:1px solid " + (rank ? "#ddd" : "#e00");
        item.dataset.role = rank ? "neighbour" : "selected";
        item.dataset.index = String(j);
        if (P.atlases.length) describe(item, j, 96);
        else { item.appendChild(line(P.labels[lab[j]])); item.appendChild(line(P.captions[j])); item.appendChild(line("#" + j)); }
        item.addEventListener("click", function () { listNeighbours(j); });
        row.appendChild(item);
      });
      box.appendChild(row);
    }

    function refilter() {
      const f = state.filter;
      if (f && !lower) lower = P.captions.map((c) => c.toLowerCase());
      let count = 0;
      for (let i = 0; i < n; i++) {
        const v = !hidden[lab[i]] && (!f || lower[i].indexOf(f) >= 0);
        visible[i] = v ? 1 : 0; count += v;
      }
      state.visibleCount = count;
      pick("status").textContent = count + " of " + n + " points shown · hover for the picture, click for neighbours, wheel to zoom, drag to pan";
      if (state.hover >= 0 && !visible[state.hover]) { state.hover = -1; showTip(-1); }
      redraw();
    }
    function setFilter(text) { state.filter = String(text).trim().toLowerCase(); refilter(); }
    function toggleLabel(l) { hidden[l] ^= 1; legendRows[l].style.opacity = hidden[l] ? "0.35" : "1"; refilter(); }

    const counts = new Uint32Array(P.labels.length);
    for (let i = 0; i < n; i++) counts[lab[i]]++;
    const legendRows = P.labels.map(function (name, l) {
      const r = line(name + " (" + counts[l] + ")", "cursor:pointer;white-space:nowrap;user-select:none;padding:1px 0");
      r.prepend(swatch(l));
      r.dataset.label = String(l);
      r.title = "click to hide or show";
      r.addEventListener("click", function () { toggleLabel(l); });
      pick("legend").appendChild(r);
      return r;
    });

    const local = (ev) => { const b = over.getBoundingClientRect(); return [ev.clientX - b.left, ev.clientY - b.top]; };
    let drag = null;
    over.addEventListener("pointerdown", function (ev) {
      const [sx, sy] = local(ev);
      drag = { sx: sx, sy: sy, ox: view.ox, oy: view.oy, moved: false };
      over.setPointerCapture(ev.pointerId);
    });
    over.addEventListener("pointermove", function (ev) {
      const [sx, sy] = local(ev);
      if (drag) {
        if (Math.abs(sx - drag.sx) + Math.abs(sy - drag.sy) > 3) drag.moved = true;
        if (drag.moved) {
          view.ox = drag.ox + sx - drag.sx; view.oy = drag.oy + sy - drag.sy;
          if (state.hover >= 0) { state.hover = -1; showTip(-1); }
          redraw();
          return;
        }
      }
      hoverAt(sx, sy);
      state.lastEventMs = performance.now() - ev.timeStamp;
    });
    over.addEventListener("pointerup", function (ev) {
      const [sx, sy] = local(ev);
      if (drag && !drag.moved) { const i = nearestAt(sx, sy, 8); if (i >= 0) listNeighbours(i); }
      drag = null;
    });
    over.addEventListener("pointerleave", function () { if (!drag && state.hover >= 0) { state.hover = -1; showTip(-1); drawOverlay(); } });
    over.addEventListener("wheel", function (ev) {
      ev.preventDefault();
      const [sx, sy] = local(ev), f = Math.exp(-Math.max(-300, Math.min(300, ev.deltaY)) * 0.002);
      view.ox = sx - (sx - view.ox) * f; view.oy = sy - (sy - view.oy) * f; view.s *= f;
      redraw();
    }, { passive: false });
    over.addEventListener("dblclick", function () { resetView(); redraw(); });
    pick("reset").addEventListener("click", function () { resetView(); redraw(); });
    let filterQueued = false;
    pick("filter").addEventListener("input", function () {
      if (filterQueued) return;
      filterQueued = true;
      requestAnimationFrame(function () { filterQueued = false; setFilter(pick("filter").value); });
    });

    // For scripts and tests: where a point is on screen (client pixels), and timings.
    function clientOf(i) { const b = over.getBoundingClientRect(); return { x: b.left + screenX(i), y: b.top + screenY(i) }; }
    function benchmarkHover(m) {
      const times = [], shown = [];
      for (let i = 0; i < n && shown.length < 1000; i += Math.max(1, Math.floor(n / 1000))) if (visible[i]) shown.push(i);
      for (let t = 0; t < m; t++) {
        const i = shown[(t * 7919) % shown.length];
        state.hover = -1;
        times.push(hoverAt(screenX(i) + 1, screenY(i) - 1));
      }
      times.sort((a, b) => a - b);
      return { median: times[times.length >> 1], p95: times[Math.floor(times.length * 0.95)], max: times[times.length - 1] };
    }
    function zoom(f, sx, sy) { view.ox = sx - (sx - view.ox) * f; view.oy = sy - (sy - view.oy) * f; view.s *= f; draw(); }
    root.sdscope = { state: state, view: view, hoverAt: hoverAt, clientOf: clientOf, select: listNeighbours, setFilter: setFilter,
                     toggleLabel: toggleLabel, benchmarkHover: benchmarkHover, zoom: zoom, nearestAt: nearestAt, draw: draw };
    refilter();
    draw();
    state.firstPaintMs = performance.now();
    requestAnimationFrame(function () { state.firstFrameMs = performance.now(); state.ready = true; });
  };
})();
