// The gateway console's only script: live updates over server-sent events and the SVG chart.
// No framework, no inline code (the Content-Security-Policy forbids it); pages work without it.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const WINDOW = 120; // seconds the chart shows
  const PRIORITIES = ["high", "normal", "low"];

  function fmt(value, digits) {
    if (value === null || value === undefined) return "—";
    if (typeof value === "number" && !Number.isInteger(value)) return value.toFixed(digits === undefined ? 1 : digits);
    return String(value);
  }

  function clock(epoch) {
    if (!epoch) return "—";
    return new Date(epoch * 1000).toISOString().slice(11, 19);
  }

  function queues(byClass) {
    if (!byClass || !Object.values(byClass).some((n) => n > 0)) return "—";
    return PRIORITIES.map((p) => p + " " + (byClass[p] || 0)).join(" · ");
  }

  function show(field, row, now) {
    const value = row[field];
    if (field === "queues") return queues(value);
    if (field === "paused_until") return value && value > now ? clock(value) : "—";
    return fmt(value);
  }

  // Fill every [data-field] of a row (a table row or the credential page's list) from a live row.
  function update(container, row, now) {
    container.querySelectorAll("[data-field]").forEach((cell) => {
      const text = show(cell.dataset.field, row, now);
      if (cell.textContent !== text) cell.textContent = text;
    });
    container.classList.toggle("queued", row.queue_depth > 0);
    container.classList.toggle("paused", Boolean(row.paused_until && row.paused_until > now));
  }

  // ---- the credential page's chart --------------------------------------------------------------

  function chart(svg) {
    const state = {
      points: JSON.parse(svg.dataset.history || "[]").map((p) => ({ t: p[0], calls: p[1], wait: p[2] })),
      pauses: [],
      // One per bucket a call may take from: the credential's own first, then windows and rules.
      lines: JSON.parse(svg.dataset.lines || "[]"),
    };
    const paused = parseFloat(svg.dataset.pausedUntil);
    if (paused) state.pauses.push([Date.now() / 1000, paused]);
    draw(svg, state, Date.now() / 1000);
    return state;
  }

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    Object.entries(attrs).forEach(([key, value]) => node.setAttribute(key, String(value)));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // One value per second of the window (seconds without calls are zeros, not gaps).
  function perSecond(points, start, now) {
    const bySecond = new Map(points.map((p) => [p.t, p]));
    const seconds = [];
    for (let t = Math.floor(start) + 1; t < Math.floor(now); t += 1) seconds.push(bySecond.get(t) || { t: t, calls: 0, wait: 0 });
    return seconds;
  }

  function draw(svg, state, now) {
    const W = 720, H = 240, L = 44, R = 56, T = 12, B = 26;
    const start = now - WINDOW;
    const seconds = perSecond(state.points, start, now);
    const top = Math.max(1, ...state.lines.map((l) => l.per_second * 1.25), ...seconds.map((p) => p.calls));
    const waitTop = Math.max(1, ...seconds.map((p) => p.wait));
    const step = (W - L - R) / WINDOW;
    const x = (t) => L + (t - start) * step;
    const y = (v) => H - B - (v / top) * (H - T - B);
    const yw = (v) => H - B - (v / waitTop) * (H - T - B);
    const desc = svg.querySelector("desc");
    svg.replaceChildren();
    if (desc) svg.appendChild(desc);
    state.pauses.filter((p) => p[1] >= start).forEach(([from, to]) => {
      const x0 = x(Math.max(from, start)), x1 = x(Math.min(to, now));
      if (x1 > x0) svg.appendChild(el("rect", { class: "pause", x: x0, y: T, width: x1 - x0, height: H - T - B }));
    });
    seconds.filter((p) => p.calls > 0).forEach((p) => {
      svg.appendChild(el("rect", { class: "calls", x: x(p.t), y: y(p.calls), width: Math.max(1, step - 1), height: H - B - y(p.calls) }));
    });
    svg.appendChild(el("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
    svg.appendChild(el("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
    svg.appendChild(el("text", { class: "label", x: L - 6, y: T + 10, "text-anchor": "end" }, fmt(top, 1)));
    svg.appendChild(el("text", { class: "label", x: L - 6, y: H - B, "text-anchor": "end" }, "0"));
    svg.appendChild(el("text", { class: "label", x: W - R + 6, y: T + 10 }, fmt(waitTop, 0) + " ms"));
    svg.appendChild(el("text", { class: "label", x: L, y: H - 6 }, "−2 min"));
    svg.appendChild(el("text", { class: "label", x: W - R, y: H - 6, "text-anchor": "end" }, "now"));
    drawLines(svg, state.lines, y, L, W - R);
    if (seconds.length) {
      const line = seconds.map((p) => (x(p.t) + step / 2).toFixed(1) + "," + yw(p.wait).toFixed(1)).join(" ");
      svg.appendChild(el("polyline", { class: "wait", points: line }));
    }
  }

  // Each limit as a labelled horizontal line; labels are pushed apart so close limits stay readable.
  function drawLines(svg, lines, y, left, right) {
    let below = -Infinity;
    lines.slice().sort((a, b) => b.per_second - a.per_second).forEach((line) => {
      const at = y(line.per_second);
      svg.appendChild(el("line", { class: "limit " + line.kind, x1: left, y1: at, x2: right, y2: at, "data-label": line.label }));
      const labelY = Math.max(at - 3, below + 12);
      svg.appendChild(el("text", { class: "label line-label " + line.kind, x: right - 4, y: labelY, "text-anchor": "end" }, line.label));
      below = labelY;
    });
  }

  function addPoint(state, row, at) {
    const second = Math.floor(at) - 1;
    const last = state.points[state.points.length - 1];
    if (!last || last.t < second) state.points.push({ t: second, calls: row.calls_per_second, wait: row.wait_last_ms || 0 });
    while (state.points.length && state.points[0].t < at - WINDOW - 2) state.points.shift();
    if (row.limit_per_second && state.lines.length) state.lines[0].per_second = row.limit_per_second;
    if (row.paused_until && row.paused_until > at) {
      const pause = state.pauses[state.pauses.length - 1];
      if (pause && pause[1] >= at - 1.5) pause[1] = Math.max(pause[1], row.paused_until);
      else state.pauses.push([at, row.paused_until]);
    }
  }

  // ---- the live stream ----------------------------------------------------------------------------

  function live() {
    const url = document.body.dataset.live;
    if (!url || !window.EventSource) return;
    const statuses = document.querySelectorAll("[data-live-status]");
    const setStatus = (text, cls) => statuses.forEach((s) => { s.textContent = text; s.className = "live-status " + cls; });
    const rows = new Map();
    document.querySelectorAll("tr[data-credential], dl[data-credential]").forEach((r) => rows.set(r.dataset.credential, r));
    const svg = document.getElementById("chart");
    const plot = svg ? chart(svg) : null;
    const source = new EventSource(url);
    source.addEventListener("state", (event) => {
      const data = JSON.parse(event.data);
      setStatus("live", "on");
      const all = data.credentials || {};
      if (data.credential) all[document.querySelector("dl[data-credential]").dataset.credential] = data.credential;
      Object.entries(all).forEach(([id, row]) => {
        const target = rows.get(id);
        if (target) update(target, row, data.at);
      });
      if (plot && data.credential) {
        addPoint(plot, data.credential, data.at);
        draw(svg, plot, data.at);
      }
    });
    source.addEventListener("error", () => {
      setStatus("reconnecting…", "off");
      // Closed for good (e.g. the session ended): reload, and the server sends us to sign-in.
      if (source.readyState === EventSource.CLOSED) window.location.reload();
    });
  }

  function copyButtons() {
    document.querySelectorAll("button[data-copy]").forEach((button) => {
      button.addEventListener("click", () => {
        const text = document.getElementById(button.dataset.copy).textContent;
        if (navigator.clipboard) navigator.clipboard.writeText(text).then(() => { button.textContent = "Copied"; });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    live();
    copyButtons();
  });
})();
