// The status page: fetches status.json, draws one card per connection, refreshes every 5 s.
// Text goes in with textContent only: connection names and error messages are never parsed as
// HTML.
"use strict";
(() => {
  const REFRESH_MS = 5000;
  const SVG = "http://www.w3.org/2000/svg";
  const W = 300;
  const H = 40;
  const byId = (id) => document.getElementById(id);
  let lastOk = null;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    return e;
  }

  const pct = (n, max) => (max > 0 ? Math.min(100, (100 * n) / max) : 0);
  const time = (ms) => new Date(ms).toLocaleTimeString();

  function ago(ms, now) {
    const s = Math.max(0, Math.round((now - ms) / 1000));
    if (s < 90) return s + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }

  function duration(ms) {
    const s = Math.round(ms / 1000);
    return s < 90 ? s + " s" : Math.round(s / 60) + " min";
  }

  function num(label, value) {
    const span = el("span", null, label + " ");
    span.append(el("b", null, String(value)));
    return span;
  }

  function bar(pool) {
    const b = el("div", "bar");
    b.setAttribute("role", "img");
    b.setAttribute("aria-label",
      `${pool.in_use} in use and ${pool.idle} idle of at most ${pool.max}`);
    b.dataset.open = pool.open;
    b.dataset.inUse = pool.in_use;
    b.dataset.idle = pool.idle;
    b.dataset.max = pool.max;
    const used = el("span", "seg in-use");
    used.style.width = pct(pool.in_use, pool.max) + "%";
    const idle = el("span", "seg idle");
    idle.style.width = pct(pool.idle, pool.max) + "%";
    b.append(used, idle);
    return b;
  }

  // A sparkline of `values` (null where there is no sample) over the window ending at `to`.
  function spark(kind, values, times, from, to, maxY, label) {
    const s = svg("svg", {
      class: "spark " + kind, viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none",
      role: "img", "aria-label": label,
    });
    const points = [];
    values.forEach((v, i) => {
      if (v === null || v === undefined) return;
      const x = to > from ? Math.max(0, ((times[i] - from) / (to - from)) * W) : W;
      const y = H - 2 - (maxY > 0 ? (v / maxY) * (H - 4) : 0);
      points.push(x.toFixed(1) + "," + y.toFixed(1));
    });
    s.dataset.points = points.length;
    if (points.length === 1) {
      const [x, y] = points[0].split(",");
      s.append(svg("circle", { cx: x, cy: y, r: 2 }));
    } else {
      s.append(svg("polyline", { points: points.join(" ") }));
    }
    return s;
  }

  function chart(title, detail, line) {
    const c = el("div", "chart");
    const label = el("div", "label");
    label.append(el("span", null, title), el("span", null, detail));
    c.append(label, line);
    return c;
  }

  function card(c, page) {
    const connecting = !c.up && c.last_check_ms === null;
    const state = connecting ? "connecting" : c.status;
    const div = el("section", "card " + state);
    div.dataset.connection = c.name;
    div.dataset.status = c.status;

    const head = el("div", "head");
    const title = el("h2", null, c.name);
    title.append(" ", el("span", "type", c.type));
    head.append(title, el("span", "status", state));
    div.append(head);

    if (!c.up) {
      div.append(el("p", "error", c.reason || "not connected"));
    } else if (c.last_error) {
      div.append(el("p", "error past", "previous error: " + c.last_error));
    }

    div.append(bar(c.pool));
    const nums = el("div", "nums");
    nums.append(num("open", c.pool.open), num("in use", c.pool.in_use),
      num("idle", c.pool.idle), num("max", c.pool.max), num("waits", c.wait_count));
    if (c.acquire_timeouts > 0) nums.append(num("timeouts", c.acquire_timeouts));
    if (c.reconnects_ok + c.reconnects_failed > 0) {
      nums.append(num("reconnects", `${c.reconnects_ok} ok / ${c.reconnects_failed} failed`));
    }
    if (c.last_success_ms !== null) nums.append(num("last ok", ago(c.last_success_ms, page.now)));
    div.append(nums);

    // The x axis spans the samples kept: up to the window, less after a restart.
    const h = c.history;
    const from = Math.max(page.now - page.window_seconds * 1000, h.t.length ? h.t[0] : page.now);
    const span = "last " + duration(page.now - from);
    const used = h.in_use;
    const peak = used.length ? Math.max(...used) : 0;
    div.append(chart("in use · " + span, `now ${c.pool.in_use} · peak ${peak}`,
      spark("in-use", used, h.t, from, page.now, Math.max(c.pool.max, peak, 1),
        `connections in use, ${span}, peak ${peak} of ${c.pool.max}`)));

    const lat = h.health_ms.filter((v) => v !== null);
    const latPeak = lat.length ? Math.max(...lat) : 0;
    const latText = lat.length
      ? `last ${lat[lat.length - 1].toFixed(1)} ms · peak ${latPeak.toFixed(1)} ms`
      : "no check in this span";
    div.append(chart("health check · " + span, latText,
      spark("latency", h.health_ms, h.t, from, page.now, latPeak,
        `health-check latency, ${span}: ${latText}`)));
    return div;
  }

  function layout() {
    const cards = byId("cards");
    const columns = getComputedStyle(cards).gridTemplateColumns.split(" ").filter(Boolean);
    cards.dataset.columns = columns.length;
    const root = document.documentElement;
    document.body.dataset.overflow = root.scrollWidth > root.clientWidth;
  }

  function render(page) {
    page.now = page.generated_at_ms;
    const down = page.total - page.up;
    byId("summary").textContent =
      `${page.total} connection${page.total === 1 ? "" : "s"}: ${page.up} up` +
      (down ? `, ${down} down` : "") + ` · ${page.ready ? "ready" : "NOT READY"}`;
    document.body.dataset.ready = page.ready;
    byId("updated").textContent = "updated " + time(page.now);
    byId("cards").replaceChildren(...page.connections.map((c) => card(c, page)));
    layout();
  }

  async function refresh() {
    // Leave the cards alone while someone selects text in them (to copy an error, say).
    const selection = window.getSelection();
    if (lastOk !== null && selection && selection.toString() !== "") return;
    try {
      const response = await fetch("status.json", { cache: "no-store" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      render(await response.json());
      lastOk = Date.now();
      byId("stale").hidden = true;
      document.body.classList.remove("stale-data");
    } catch (e) {
      const stale = byId("stale");
      stale.textContent = "Cannot reach the server (" + e.message + ")" +
        (lastOk ? "; showing data from " + time(lastOk) : "");
      stale.hidden = false;
      document.body.classList.add("stale-data");
    }
  }

  refresh();
  setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  window.addEventListener("resize", layout);
})();
