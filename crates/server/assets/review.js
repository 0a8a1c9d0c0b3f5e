// The review page (GET /review): claims items through the JSON review API, draws the
// decoded pixels on a canvas (window/level on the full bit depth, zoom, pan, tile heat-map),
// and posts one verdict per key press. The next item is claimed and its pixels fetched
// while the inspector looks at the current one, so a verdict shows the next image at once.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const root = $("review");
  if (!root) return;
  const FLAGS = JSON.parse(root.dataset.flags || "{}");
  // Signed in with a token: the server records verdicts under the token's name.
  const SIGNED_IN = root.dataset.signedIn || "";
  // A signed-in session's state-changing requests carry its CSRF value (the server refuses
  // them without it); the page has it in <meta name="csrf-token">.
  const CSRF = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const csrfHeaders = CSRF ? { "x-csrf-token": CSRF } : {};
  const NAME_KEY = "vigil.inspector";
  const POLL_MS = 15000;
  // `/review?model=weldnet` works one model's items only.
  const MODEL = new URLSearchParams(location.search).get("model") || undefined;

  const view = $("view");
  const ctx = view.getContext("2d");
  const off = document.createElement("canvas"); // the image at its own size, after W/L
  const offCtx = off.getContext("2d");

  const S = {
    inspector: SIGNED_IN || localStorage.getItem(NAME_KEY) || "",
    cur: null, // { item, px, shownAt }
    next: null, // Promise<{item, px} | null>
    busy: false,
    done: Number(sessionStorage.getItem("vigil.done") || 0),
    spent: Number(sessionStorage.getItem("vigil.spent") || 0),
    wl: { win: 255, lev: 128, invert: false },
    zoom: 1, panX: 0, panY: 0,
    heat: false,
    poll: null,
  };

  // ---- API --------------------------------------------------------------------------
  async function api(method, path, body) {
    const r = await fetch(path, {
      method,
      headers: Object.assign(body ? { "content-type": "application/json" } : {}, method === "GET" ? {} : csrfHeaders),
      body: body ? JSON.stringify(body) : undefined,
    });
    if (r.status === 204) return null;
    if (r.status === 401) {
      // The sign-in ran out (12 hours): sign in again and come back here.
      location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
      throw new Error("signed out");
    }
    const text = await r.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
    if (!r.ok) {
      const e = new Error((json && json.error) || `${r.status} ${r.statusText}`);
      e.status = r.status;
      throw e;
    }
    return json;
  }

  async function pixels(item) {
    if (!item.image) return null;
    const r = await fetch(`/v1/review/items/${item.id}/pixels`);
    if (!r.ok) return { error: `the image could not be read (${r.status})` };
    const w = Number(r.headers.get("x-width"));
    const h = Number(r.headers.get("x-height"));
    const bits = Number(r.headers.get("x-bit-depth")) || 16;
    const buf = await r.arrayBuffer();
    const dv = new DataView(buf);
    const n = Math.min(w * h, buf.byteLength >> 1);
    const data = new Uint16Array(n);
    for (let i = 0; i < n; i++) data[i] = dv.getUint16(i * 2, true);
    return { w, h, bits, data, max: (1 << Math.min(bits, 16)) - 1 };
  }

  // Claims the next item and fetches its pixels; null when nothing is left.
  async function fetchNext() {
    const item = await api("POST", "/v1/review/claim", { inspector: S.inspector, model: MODEL });
    if (!item) return null;
    let px = null;
    try { px = await pixels(item); } catch (e) { px = { error: String(e.message || e) }; }
    return { item, px };
  }

  function prefetch() {
    S.next = fetchNext().catch((e) => { status(`could not claim the next item: ${e.message}`, true); return null; });
  }

  function release(entry) {
    if (!entry || !entry.item.claim) return;
    fetch(`/v1/review/items/${entry.item.id}/release`, {
      method: "POST", keepalive: true,
      headers: Object.assign({ "content-type": "application/json" }, csrfHeaders),
      body: JSON.stringify({ token: entry.item.claim.token }),
    }).catch(() => {});
  }

  // ---- flow ---------------------------------------------------------------------------
  async function start() {
    $("inspector").textContent = S.inspector;
    S.cur = null;
    S.next = null;
    await advance();
  }

  // Shows the prefetched item (or claims one), then prefetches the one after.
  async function advance() {
    let entry = S.next ? await S.next : null;
    S.next = null;
    if (!entry) {
      try { entry = await fetchNext(); } catch (e) { status(`could not claim an item: ${e.message}`, true); entry = null; }
    }
    if (!entry) { showEmpty(); return; }
    show(entry);
    prefetch();
  }

  function showEmpty() {
    S.cur = null;
    $("item").hidden = true;
    $("empty").hidden = false;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, view.width, view.height);
    message("Queue empty");
    $("viewinfo").textContent = "";
    clearTimeout(S.poll);
    S.poll = setTimeout(advance, POLL_MS);
  }

  async function verdict(label) {
    if (!S.cur || S.busy) return;
    S.busy = true;
    const { item } = S.cur;
    const spent = Math.max(0, Math.round(performance.now() - S.cur.shownAt));
    const comment = $("comment").value.trim();
    const btn = document.querySelector(`.labels button[data-label="${CSS.escape(label)}"]`);
    if (btn) btn.classList.add("flash");
    try {
      await api("POST", `/v1/review/items/${item.id}/verdict`, {
        token: item.claim.token, inspector: S.inspector, label,
        comment: comment || undefined, time_spent_ms: spent,
      });
      S.done += 1;
      S.spent += spent;
      sessionStorage.setItem("vigil.done", S.done);
      sessionStorage.setItem("vigil.spent", S.spent);
      tick();
      status(`✓ #${item.id}: ${label}`);
    } catch (e) {
      status(e.status === 409
        ? `#${item.id}: your claim had lapsed or was taken; the verdict was not recorded`
        : `#${item.id}: verdict refused: ${e.message}`, true);
      if (e.status !== 409) { S.busy = false; if (btn) btn.classList.remove("flash"); return; }
    }
    S.busy = false;
    await advance();
  }

  async function skip() {
    if (!S.cur || S.busy) return;
    S.busy = true;
    const { item } = S.cur;
    try {
      await api("POST", `/v1/review/items/${item.id}/skip`, { token: item.claim.token, inspector: S.inspector });
      status(`skipped #${item.id}`);
    } catch (e) {
      status(`#${item.id}: skip refused: ${e.message}`, true);
    }
    S.busy = false;
    await advance();
  }

  // ---- the panel ----------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c);
    return e;
  }

  function ago(iso) {
    const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (s < 60) return `${Math.round(s)} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }

  function show(entry) {
    clearTimeout(S.poll);
    S.cur = { ...entry, shownAt: performance.now() };
    const it = entry.item;
    $("empty").hidden = true;
    $("item").hidden = false;
    $("pred-label").textContent = it.label;
    $("pred-conf").textContent = `${(it.confidence * 100).toFixed(1)}%`;

    const why = $("why");
    why.replaceChildren();
    for (const f of it.flags) why.append(el("div", { class: `why-${f}` }, FLAGS[f] || f));
    if (it.state === "awaiting_second") why.append(el("div", { class: "why-state" }, "second opinion: an inspector overturned the model"));
    if (it.state === "disputed") why.append(el("div", { class: "why-state" }, "disputed: inspectors disagree; yours decides with theirs"));

    const probs = $("probs");
    probs.replaceChildren();
    it.labels.forEach((l, i) => {
      const p = it.probabilities[i] || 0;
      const bar = el("span", { class: "bar" });
      bar.style.width = `${Math.max(0.5, p * 100).toFixed(1)}%`;
      probs.append(el("tr", { class: l === it.label ? "top" : "" }, el("td", {}, l), el("td", {}, el("span", { class: "track" }, bar)), el("td", { class: "num" }, `${(p * 100).toFixed(1)}%`)));
    });

    const meta = $("meta");
    meta.replaceChildren();
    const row = (k, v) => meta.append(el("dt", {}, k), el("dd", {}, String(v)));
    row("model", `${it.model} v${it.version}`);
    row("item", `#${it.id}`);
    row("request", it.request_id);
    row("predicted", ago(it.at));
    for (const [k, v] of Object.entries(it.details || {})) {
      if (typeof v === "number") row(k.replace(/_/g, " "), Number.isInteger(v) ? v : v.toFixed(4));
      else if (typeof v === "string" || typeof v === "boolean") row(k.replace(/_/g, " "), v);
    }

    const labels = $("labels");
    labels.replaceChildren();
    it.labels.slice(0, 9).forEach((l, i) => {
      const b = el("button", { type: "button", "data-label": l, class: l === it.label ? "agree" : "" }, el("kbd", {}, String(i + 1)), l);
      if (l === it.label) b.append(el("span", { class: "hint" }, "model"));
      b.addEventListener("click", () => verdict(l));
      labels.append(b);
    });
    $("comment").value = "";
    $("heat").disabled = !tiles();
    $("heat").setAttribute("aria-pressed", String(S.heat && !!tiles()));

    S.zoom = 0; // fit on first draw
    if (!entry.px) { off.width = off.height = 0; message("No image was kept for this item."); }
    else if (entry.px.error) { off.width = off.height = 0; message(entry.px.error); }
    else {
      // Size the offscreen image now, so the first fit uses this image's size.
      off.width = entry.px.w;
      off.height = entry.px.h;
      message("");
      autoWindow();
    }
    draw();
    tick();
  }

  function status(text, error) {
    const s = $("status");
    s.textContent = text;
    s.classList.toggle("error", !!error);
  }

  function message(text) {
    $("viewer-msg").textContent = text;
    $("viewer-msg").hidden = !text;
  }

  function tick() {
    $("done-count").textContent = S.done;
    $("avg-time").textContent = S.done ? `${(S.spent / S.done / 1000).toFixed(1)} s` : "–";
    $("item-time").textContent = S.cur ? `${Math.round((performance.now() - S.cur.shownAt) / 1000)} s` : "–";
  }
  setInterval(tick, 1000);

  // ---- the image ----------------------------------------------------------------------
  // Window/level from the 1st to the 99th percentile of the pixel values.
  function autoWindow() {
    const px = S.cur && S.cur.px;
    if (!px || px.error) return;
    const hist = new Uint32Array(px.max + 1);
    for (let i = 0; i < px.data.length; i++) hist[Math.min(px.data[i], px.max)]++;
    const n = px.data.length;
    const pick = (q) => { let acc = 0; for (let v = 0; v <= px.max; v++) { acc += hist[v]; if (acc >= q * n) return v; } return px.max; };
    const lo = pick(0.01);
    const hi = pick(0.99);
    setWindow(Math.max(1, hi - lo), (hi + lo) / 2);
  }

  function setWindow(win, lev) {
    const px = S.cur && S.cur.px;
    const max = px && !px.error ? px.max : 255;
    S.wl.win = Math.max(1, Math.min(max + 1, win));
    S.wl.lev = Math.max(0, Math.min(max, lev));
    $("win").max = String(max + 1);
    $("lev").max = String(max);
    $("win").value = String(Math.round(S.wl.win));
    $("lev").value = String(Math.round(S.wl.lev));
    render();
  }

  let pending = false;
  function render() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; renderNow(); draw(); });
  }

  // Applies window/level through a lookup table into the offscreen canvas.
  function renderNow() {
    const px = S.cur && S.cur.px;
    if (!px || px.error || !px.w || !px.h) return;
    const lut = new Uint8ClampedArray(px.max + 1);
    const lo = S.wl.lev - S.wl.win / 2;
    for (let v = 0; v <= px.max; v++) {
      const g = ((v - lo) / S.wl.win) * 255;
      lut[v] = S.wl.invert ? 255 - g : g;
    }
    if (off.width !== px.w || off.height !== px.h) { off.width = px.w; off.height = px.h; }
    const img = offCtx.createImageData(px.w, px.h);
    const out = img.data;
    for (let i = 0, j = 0; i < px.data.length; i++, j += 4) {
      const g = lut[Math.min(px.data[i], px.max)];
      out[j] = g; out[j + 1] = g; out[j + 2] = g; out[j + 3] = 255;
    }
    offCtx.putImageData(img, 0, 0);
    info();
  }

  // The status line under the image: size, bit depth, window/level, zoom.
  function info() {
    const px = S.cur && S.cur.px;
    if (!px || px.error) { $("viewinfo").textContent = ""; return; }
    $("viewinfo").textContent = `${px.w}×${px.h}, ${px.bits}-bit · W ${Math.round(S.wl.win)} L ${Math.round(S.wl.lev)} · ${Math.round(S.zoom * 100)}%${S.wl.invert ? " · inverted" : ""}`;
  }

  function fit() {
    const r = view.getBoundingClientRect();
    if (!off.width) return;
    S.zoom = Math.min(r.width / off.width, (r.height - 34) / off.height) * 0.96;
    S.panX = (r.width - off.width * S.zoom) / 2;
    S.panY = (r.height - 34 - off.height * S.zoom) / 2;
  }

  function tiles() {
    const t = S.cur && S.cur.item.details && S.cur.item.details.tiles;
    if (!t || !t.columns || !t.rows || !t.scores) return null;
    const flat = [];
    const score = (s) => typeof s === "number" ? s : Array.isArray(s) ? Math.max(...s.map(score)) : (s && typeof s === "object") ? Math.max(...Object.values(s).map(score)) : 0;
    const walk = (s) => { if (Array.isArray(s) && s.length && Array.isArray(s[0]) && t.scores.length === t.rows) s.forEach((r) => r.forEach((v) => flat.push(score(v)))); else s.forEach((v) => flat.push(score(v))); };
    walk(t.scores);
    return { columns: t.columns, rows: t.rows, scores: flat };
  }

  function draw() {
    const dpr = window.devicePixelRatio || 1;
    const r = view.getBoundingClientRect();
    if (view.width !== Math.round(r.width * dpr) || view.height !== Math.round(r.height * dpr)) {
      view.width = Math.round(r.width * dpr);
      view.height = Math.round(r.height * dpr);
    }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, view.width, view.height);
    if (!S.cur || !off.width) return;
    if (!S.zoom) { fit(); info(); }
    ctx.setTransform(S.zoom * dpr, 0, 0, S.zoom * dpr, S.panX * dpr, S.panY * dpr);
    ctx.imageSmoothingEnabled = S.zoom < 2;
    ctx.drawImage(off, 0, 0);
    const t = S.heat && tiles();
    if (t) {
      const tw = off.width / t.columns;
      const th = off.height / t.rows;
      for (let y = 0; y < t.rows; y++) {
        for (let x = 0; x < t.columns; x++) {
          const s = Math.max(0, Math.min(1, t.scores[y * t.columns + x] || 0));
          if (s < 0.05) continue; // leave quiet tiles untinted: the grey is what is judged
          ctx.fillStyle = `rgba(255, ${Math.round(180 - 180 * s)}, 0, ${(0.12 + 0.45 * s).toFixed(3)})`;
          ctx.fillRect(x * tw, y * th, tw, th);
        }
      }
      ctx.strokeStyle = "rgba(255,255,255,0.18)";
      ctx.lineWidth = 1 / S.zoom;
      for (let x = 1; x < t.columns; x++) { ctx.beginPath(); ctx.moveTo(x * tw, 0); ctx.lineTo(x * tw, off.height); ctx.stroke(); }
      for (let y = 1; y < t.rows; y++) { ctx.beginPath(); ctx.moveTo(0, y * th); ctx.lineTo(off.width, y * th); ctx.stroke(); }
    }
  }

  function zoomBy(f, cx, cy) {
    if (!off.width) return;
    const r = view.getBoundingClientRect();
    if (cx === undefined) { cx = r.width / 2; cy = r.height / 2; }
    const z = Math.max(0.05, Math.min(40, S.zoom * f));
    S.panX = cx - ((cx - S.panX) * z) / S.zoom;
    S.panY = cy - ((cy - S.panY) * z) / S.zoom;
    S.zoom = z;
    draw();
    info();
  }

  function toggleHeat() {
    if (!tiles()) return;
    S.heat = !S.heat;
    $("heat").setAttribute("aria-pressed", String(S.heat));
    draw();
  }

  // ---- input --------------------------------------------------------------------------
  view.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = view.getBoundingClientRect();
    zoomBy(e.deltaY < 0 ? 1.15 : 1 / 1.15, e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });
  view.addEventListener("contextmenu", (e) => e.preventDefault());
  let drag = null;
  view.addEventListener("mousedown", (e) => {
    drag = { button: e.button, x: e.clientX, y: e.clientY, panX: S.panX, panY: S.panY, win: S.wl.win, lev: S.wl.lev };
    view.classList.add("dragging");
  });
  window.addEventListener("mouseup", () => { drag = null; view.classList.remove("dragging"); });
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x;
    const dy = e.clientY - drag.y;
    if (drag.button === 2) {
      const px = S.cur && S.cur.px;
      const k = px && !px.error ? (px.max + 1) / 512 : 1;
      setWindow(drag.win + dx * k, drag.lev - dy * k);
    } else {
      S.panX = drag.panX + dx;
      S.panY = drag.panY + dy;
      draw();
    }
  });
  window.addEventListener("resize", () => { S.zoom = 0; draw(); });
  $("win").addEventListener("input", (e) => setWindow(Number(e.target.value), S.wl.lev));
  $("lev").addEventListener("input", (e) => setWindow(S.wl.win, Number(e.target.value)));
  $("auto").addEventListener("click", autoWindow);
  $("heat").addEventListener("click", toggleHeat);
  $("fit").addEventListener("click", () => { S.zoom = 0; draw(); });
  $("skip").addEventListener("click", skip);
  $("again").addEventListener("click", advance);

  document.addEventListener("keydown", (e) => {
    const typing = e.target instanceof HTMLInputElement || e.target instanceof HTMLTextAreaElement;
    if (typing) { if (e.key === "Escape") e.target.blur(); return; }
    if (!$("who-dialog").hidden || e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key.toLowerCase();
    if (/^[1-9]$/.test(k) && S.cur) {
      const l = S.cur.item.labels[Number(k) - 1];
      if (l !== undefined) { e.preventDefault(); verdict(l); }
    } else if (k === "s") { e.preventDefault(); skip(); }
    else if (k === "h") toggleHeat();
    else if (k === "a") autoWindow();
    else if (k === "i") { S.wl.invert = !S.wl.invert; render(); }
    else if (k === "+" || k === "=") zoomBy(1.25);
    else if (k === "-" || k === "_") zoomBy(0.8);
    else if (k === "0") { S.zoom = 0; draw(); }
    else if (k === "c") { e.preventDefault(); $("comment").focus(); }
  });

  // ---- who is reviewing -----------------------------------------------------------------
  function askName() {
    $("who-dialog").hidden = false;
    $("who-name").value = S.inspector;
    $("who-name").focus();
  }
  $("who-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = $("who-name").value.trim();
    if (!name) return;
    if (name !== S.inspector) {
      release(S.cur);
      if (S.next) release(await S.next);
    }
    S.inspector = name;
    localStorage.setItem(NAME_KEY, name);
    $("who-dialog").hidden = true;
    start();
  });
  if (SIGNED_IN) {
    // The name comes with the token; "change" signs out instead.
    $("change-who").textContent = "sign out";
    $("change-who").addEventListener("click", async () => {
      release(S.cur);
      if (S.next) release(await S.next);
      await fetch("/logout", {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: "csrf=" + encodeURIComponent(CSRF),
      });
      location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
    });
  } else {
    $("change-who").addEventListener("click", askName);
  }
  window.addEventListener("pagehide", () => {
    release(S.cur);
    if (S.next) S.next.then(release);
  });

  if (S.inspector) start(); else { message(""); askName(); }
})();
