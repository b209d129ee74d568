// GPT-Trader dashboard: renders /api/snapshot into the page. Vanilla JS and inline SVG, no external assets.
// Live updates come over Server-Sent Events (api/stream); if the stream cannot be used, the page polls every second.
"use strict";

(function () {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const POLL_MS = 1000;
  const SPARK_POINTS = 60;

  // The token arrives once as ?token=...; keep it for this tab only and take it out of the address bar.
  const params = new URLSearchParams(window.location.search);
  let token = params.get("token") || window.sessionStorage.getItem("gpt-trader-token") || "";
  if (params.has("token")) {
    window.sessionStorage.setItem("gpt-trader-token", token);
    params.delete("token");
    const rest = params.toString();
    window.history.replaceState(null, "", window.location.pathname + (rest ? "?" + rest : ""));
  }

  const $ = (id) => document.getElementById(id);
  const money = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", maximumFractionDigits: 2 });
  const num = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });
  const wholeMoney = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", maximumFractionDigits: 0 });
  const last = {}; // section name -> JSON of what was rendered, so unchanged sections are not rebuilt
  const sparks = { pipeline: {}, models: {} }; // name -> recent values, gathered from the updates this tab saw
  let latest = null;

  // -- helpers -------------------------------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  function fmtMoney(x) { return x === null || x === undefined ? "–" : money.format(x); }
  function fmtNum(x, digits) {
    if (x === null || x === undefined) return "–";
    return digits === undefined ? num.format(x) : x.toFixed(digits);
  }
  function fmtMs(x) { return x === null || x === undefined ? "–" : (x < 1 ? x.toFixed(3) : x.toFixed(2)) + " ms"; }
  function fmtLag(secs) {
    if (secs === null || secs === undefined) return "–";
    return secs < 1 ? fmtMs(secs * 1000) : secs.toFixed(2) + " s";
  }
  function fmtTime(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return d.toISOString().replace("T", " ").slice(0, 19);
  }
  function signed(node, x) {
    node.classList.remove("pos", "neg");
    if (x > 0) node.classList.add("pos");
    else if (x < 0) node.classList.add("neg");
  }
  function setMoney(id, x) { const n = $(id); n.textContent = fmtMoney(x); signed(n, x); }
  function changed(name, value) {
    const json = JSON.stringify(value);
    if (last[name] === json) return false;
    last[name] = json;
    return true;
  }
  function fillBody(table, rows, emptyText, columns) {
    const body = $(table).tBodies[0];
    body.replaceChildren(...(rows.length ? rows : [el("tr", { class: "empty" }, el("td", { colspan: columns }, emptyText))]));
  }
  function withToken(url) {
    return token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
  }
  async function api(path, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    if (token) opts.headers.Authorization = "Bearer " + token;
    const res = await fetch(path, opts);
    if (!res.ok) throw new Error(path + ": HTTP " + res.status);
    return res.json();
  }

  // -- charts --------------------------------------------------------------------------------------------------

  function niceTicks(lo, hi, count) {
    const span = hi - lo || Math.abs(hi) || 1;
    const raw = span / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
    const ticks = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) ticks.push(v);
    return ticks;
  }

  function drawEquity() {
    const chart = $("equity-chart");
    const points = (latest && latest.equity_curve) || [];
    const w = chart.clientWidth || 800;
    const h = chart.clientHeight || 300;
    chart.setAttribute("viewBox", `0 0 ${w} ${h}`);
    const m = { l: 78, r: 12, t: 10, b: 24 };
    const nodes = [];
    if (points.length < 2) {
      nodes.push(svg("text", { x: w / 2, y: h / 2, "text-anchor": "middle", class: "axis" }));
      nodes[0].textContent = "Waiting for equity marks…";
      chart.replaceChildren(...nodes);
      return;
    }
    const xs = points.map((p) => p[0]);
    const ys = points.map((p) => p[1]);
    const initial = latest.pnl ? latest.pnl.initial : null;
    let lo = Math.min(...ys), hi = Math.max(...ys);
    if (initial !== null && initial >= lo - (hi - lo) * 0.5 && initial <= hi + (hi - lo) * 0.5) {
      lo = Math.min(lo, initial); hi = Math.max(hi, initial);
    }
    const pad = (hi - lo) * 0.06 || Math.abs(hi) * 0.01 || 1;
    lo -= pad; hi += pad;
    const x0 = xs[0], x1 = xs[xs.length - 1];
    const sx = (t) => m.l + ((t - x0) / (x1 - x0 || 1)) * (w - m.l - m.r);
    const sy = (v) => m.t + (1 - (v - lo) / (hi - lo)) * (h - m.t - m.b);

    for (const v of niceTicks(lo, hi, 4)) {
      nodes.push(svg("line", { x1: m.l, x2: w - m.r, y1: sy(v), y2: sy(v), class: "grid" }));
      const label = svg("text", { x: m.l - 8, y: sy(v) + 4, "text-anchor": "end", class: "axis" });
      label.textContent = wholeMoney.format(v);
      nodes.push(label);
    }
    const spanDays = (x1 - x0) / 86400000;
    const fmtX = (t) => {
      const iso = new Date(t).toISOString();
      return spanDays > 2 ? iso.slice(0, 10) : iso.slice(11, 19);
    };
    const xTicks = Math.max(2, Math.min(6, Math.floor((w - m.l) / 140)));
    for (let i = 0; i <= xTicks; i++) {
      const t = x0 + ((x1 - x0) * i) / xTicks;
      const anchor = i === 0 ? "start" : i === xTicks ? "end" : "middle";
      const label = svg("text", { x: sx(t), y: h - 6, "text-anchor": anchor, class: "axis" });
      label.textContent = fmtX(t);
      nodes.push(label);
    }
    if (initial !== null && initial > lo && initial < hi) {
      nodes.push(svg("line", { x1: m.l, x2: w - m.r, y1: sy(initial), y2: sy(initial), class: "baseline" }));
    }
    const coords = points.map((p) => sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1));
    const line = "M" + coords.join("L");
    const bottom = sy(lo).toFixed(1);
    nodes.push(svg("path", { d: `${line}L${sx(x1).toFixed(1)},${bottom}L${sx(x0).toFixed(1)},${bottom}Z`, class: "area" }));
    nodes.push(svg("path", { d: line, class: "line", id: "equity-line", "data-points": points.length }));
    const cursor = svg("line", { class: "cursor", y1: m.t, y2: h - m.b, x1: 0, x2: 0, visibility: "hidden" });
    const dot = svg("circle", { class: "dot", r: 3.5, cx: 0, cy: 0, visibility: "hidden" });
    nodes.push(cursor, dot);
    chart.replaceChildren(...nodes);

    const tip = $("equity-tooltip");
    chart.onmousemove = (ev) => {
      const box = chart.getBoundingClientRect();
      const t = x0 + ((ev.clientX - box.left - m.l) / (w - m.l - m.r)) * (x1 - x0);
      let best = 0;
      for (let i = 1; i < xs.length; i++) if (Math.abs(xs[i] - t) < Math.abs(xs[best] - t)) best = i;
      const px = sx(xs[best]), py = sy(ys[best]);
      cursor.setAttribute("x1", px); cursor.setAttribute("x2", px);
      dot.setAttribute("cx", px); dot.setAttribute("cy", py);
      cursor.setAttribute("visibility", "visible"); dot.setAttribute("visibility", "visible");
      tip.hidden = false;
      tip.textContent = fmtX(xs[best]) + "  " + money.format(ys[best]);
      tip.style.left = Math.min(Math.max(px + 10, 0), w - tip.offsetWidth) + "px";
    };
    chart.onmouseleave = () => {
      tip.hidden = true;
      cursor.setAttribute("visibility", "hidden"); dot.setAttribute("visibility", "hidden");
    };
  }

  function sparkline(values) {
    const w = 120, h = 26;
    const s = svg("svg", { class: "spark", viewBox: `0 0 ${w} ${h}`, "aria-hidden": "true" });
    const vs = values.filter((v) => v !== null && v !== undefined);
    if (vs.length >= 2) {
      const lo = Math.min(...vs), hi = Math.max(...vs);
      const span = hi - lo || 1;
      const d = vs.map((v, i) => (i ? "L" : "M") + ((i / (vs.length - 1)) * (w - 2) + 1).toFixed(1) + ","
        + (h - 2 - ((v - lo) / span) * (h - 4)).toFixed(1)).join("");
      s.append(svg("path", { d }));
    }
    return s;
  }

  function pushSpark(kind, name, value) {
    const series = sparks[kind][name] || (sparks[kind][name] = []);
    series.push(value);
    if (series.length > SPARK_POINTS) series.shift();
    return series;
  }

  // -- sections ------------------------------------------------------------------------------------------------

  function renderHeader(snap) {
    const health = snap.health || {};
    $("health").dataset.status = health.status || "unknown";
    $("health-score").textContent = health.score === undefined ? "–" : fmtNum(health.score, 0);
    $("health-status").textContent = health.status || "unknown";
    const comps = Object.entries(health.components || {}).map(([k, v]) => `${k} ${Math.round(v)}`).join(", ");
    $("health").title = comps ? "Components: " + comps : "";
    const cond = snap.scaling ? snap.scaling.market_condition : null;
    $("condition").dataset.condition = cond || "unknown";
    $("condition-value").textContent = cond || "n/a";
    $("updated").textContent = fmtTime(snap.generated_at);
    renderDrift(snap.drift || []);
  }

  function driftVerdict(d) {
    if (d.drift_detected === true) return "drift";
    if (d.drift_detected === false) return "no drift";
    return "report";
  }

  function renderDrift(reports) {
    if (!changed("drift", reports)) return;
    // The header links the newest report; the card lists every dataset's latest one.
    const link = $("drift-link");
    link.hidden = reports.length === 0;
    $("drift-card").hidden = reports.length === 0;
    if (!reports.length) return;
    const newest = reports[0];
    link.href = withToken(newest.url);
    link.dataset.drift = String(newest.drift_detected);
    $("drift-when").textContent = (newest.dataset || "latest") + ": " + driftVerdict(newest);
    link.title = "Latest drift report, written " + fmtTime(newest.modified);
    const rows = reports.map((d) => el("tr", {},
      el("th", { scope: "row" }, d.dataset || "(all)"),
      el("td", { class: "drift-" + String(d.drift_detected) }, driftVerdict(d)),
      el("td", { class: "num" }, d.share_drifted === null || d.share_drifted === undefined
        ? "–" : (d.share_drifted * 100).toFixed(0) + " %"),
      el("td", { class: "when" }, fmtTime(d.modified)),
      el("td", {}, el("a", { href: withToken(d.url), target: "_blank", rel: "noopener" }, "Open report"))));
    fillBody("drift-reports", rows, "No drift reports", 5);
  }

  function renderPnl(snap) {
    const p = snap.pnl;
    if (!changed("pnl", p)) return;
    if (!p) return;
    $("equity-value").textContent = fmtMoney(p.equity);
    setMoney("pnl-total", p.total);
    setMoney("pnl-daily", p.daily);
    setMoney("pnl-realized", p.realized);
    setMoney("pnl-unrealized", p.unrealized);
    $("pnl-commissions").textContent = fmtMoney(p.commissions);
    const r = $("pnl-return");
    r.textContent = p.return_pct === null ? "–" : (p.return_pct >= 0 ? "+" : "") + p.return_pct.toFixed(2) + " %";
    signed(r, p.return_pct);
  }

  function renderPositions(snap) {
    if (!changed("positions", snap.positions)) return;
    const rows = snap.positions.map((p) => {
      const u = el("td", { class: "num" }, fmtMoney(p.unrealized_pnl));
      signed(u, p.unrealized_pnl);
      return el("tr", {},
        el("th", { scope: "row" }, p.symbol),
        el("td", { class: "num" }, fmtNum(p.quantity)),
        el("td", { class: "num" }, fmtMoney(p.avg_price)),
        el("td", { class: "num" }, fmtMoney(p.mark)),
        el("td", { class: "num" }, fmtMoney(p.market_value)),
        u);
    });
    fillBody("positions", rows, "No open positions", 6);
  }

  async function alertAction(button, id, action) {
    for (const b of button.parentNode.querySelectorAll("button")) b.disabled = true;
    try {
      await api(`api/alerts/${encodeURIComponent(id)}/${action}`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ by: "dashboard" }),
      });
    } catch (err) {
      $("connection").textContent = "action failed: " + err.message;
    }
    await refresh();
  }

  function alertCells(a) {
    return [
      el("td", {}, el("span", { class: "sev sev-" + a.severity }, a.severity)),
      el("td", { class: "message" }, el("strong", {}, a.rule), el("br"), a.message),
      el("td", { class: "state state-" + a.state }, a.state),
      el("td", { class: "when" }, fmtTime(a.fired_at)),
    ];
  }

  function renderAlerts(snap) {
    const alerts = snap.alerts || { active: [], recent: [], counts: {} };
    if (changed("alerts-active", alerts.active)) {
      const rows = alerts.active.map((a) => {
        const actions = el("td", { class: "actions" });
        if (a.state === "firing") {
          actions.append(el("button", {
            type: "button", class: "ack", "aria-label": "Acknowledge alert " + a.rule,
            onclick: (ev) => alertAction(ev.currentTarget, a.id, "ack"),
          }, "Ack"));
        }
        actions.append(el("button", {
          type: "button", class: "resolve", "aria-label": "Resolve alert " + a.rule,
          onclick: (ev) => alertAction(ev.currentTarget, a.id, "resolve"),
        }, "Resolve"));
        return el("tr", { "data-alert-id": a.id }, ...alertCells(a), actions);
      });
      fillBody("alerts", rows, "No active alerts", 5);
      const counts = Object.entries(alerts.counts || {}).filter(([, n]) => n > 0).map(([s, n]) => `${n} ${s}`);
      $("alert-counts").textContent = counts.length ? "(" + counts.join(", ") + ")" : "";
    }
    if (changed("alerts-recent", alerts.recent)) {
      const rows = alerts.recent.map((a) => el("tr", { "data-alert-id": a.id }, ...alertCells(a),
        el("td", {}, a.resolved_by || a.acknowledged_by || "")));
      fillBody("alert-history", rows, "No alerts yet", 5);
    }
  }

  function renderPipeline(snap) {
    const rows = (snap.pipeline || []).map((p) => {
      const series = pushSpark("pipeline", p.source, p.ingest_rate);
      return el("tr", {},
        el("th", { scope: "row" }, p.source),
        el("td", { class: "num" }, fmtNum(p.ingest_rate, 2)),
        el("td", {}, sparkline(series)),
        el("td", { class: "num" }, fmtNum(p.ticks_total)),
        el("td", { class: "num" }, fmtNum(p.errors_total)),
        el("td", { class: "num" }, fmtNum(p.dead_letters_total)),
        el("td", { class: "num" }, fmtLag(p.lag_secs)));
    });
    fillBody("pipeline", rows, "No pipeline reports yet", 7);
  }

  function renderModels(snap) {
    const rows = (snap.models || []).map((m) => {
      const series = pushSpark("models", m.model, m.last_latency_ms);
      return el("tr", {},
        el("th", { scope: "row" }, m.model),
        el("td", { class: "num" }, fmtMs(m.latency_p50_ms)),
        el("td", { class: "num" }, fmtMs(m.latency_p95_ms)),
        el("td", {}, sparkline(series)),
        el("td", { class: "num" }, fmtNum(m.predictions)),
        el("td", { class: "num" }, m.accuracy === null ? "–" : (m.accuracy * 100).toFixed(1) + " %"));
    });
    fillBody("models", rows, "No predictions yet", 6);
  }

  function renderScaling(snap) {
    const s = snap.scaling;
    if (!changed("scaling", s)) return;
    if (!s) {
      fillBody("decisions", [], "No scaler attached", 5);
      return;
    }
    const r = s.resources || {};
    $("scale-condition").textContent = s.market_condition + (s.target_condition !== s.market_condition ? " → " + s.target_condition : "");
    $("scale-profile").textContent = r.profile || "–";
    $("scale-workers").textContent = fmtNum(r.workers);
    $("scale-cores").textContent = `${fmtNum(r.cores)} / ${fmtNum(r.gpus)}`;
    $("scale-cost").textContent = `${fmtMoney(s.cost_per_hour)}/h of ${fmtMoney(s.cost_limit_per_hour)}`;
    $("scale-training").textContent = r.training_paused ? "paused" : "running";
    const rows = s.decisions.map((d) => el("tr", {},
      el("td", { class: "when" }, fmtTime(d.at)),
      el("td", {}, d.condition + (d.target !== d.condition ? " → " + d.target : "")),
      el("td", { class: "num" }, fmtNum(d.workers)),
      el("td", { class: "num" }, fmtNum(d.cost_usd_per_hour, 2)),
      el("td", { class: "reason" }, d.reason)));
    fillBody("decisions", rows, "No decisions yet", 5);
  }

  function render(snap) {
    latest = snap;
    renderHeader(snap);
    renderPnl(snap);
    if (changed("curve", [snap.equity_curve, snap.pnl && snap.pnl.initial])) drawEquity();
    renderPositions(snap);
    renderAlerts(snap);
    renderPipeline(snap);
    renderModels(snap);
    renderScaling(snap);
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  }

  // -- transport -----------------------------------------------------------------------------------------------

  let pollTimer = null;
  let lastMessage = 0;

  async function refresh() {
    try {
      render(await api("api/snapshot"));
      return true;
    } catch (err) {
      $("connection").textContent = "disconnected (" + err.message + ")";
      return false;
    }
  }

  function startPolling() {
    if (pollTimer !== null) return;
    $("connection").textContent = "polling";
    pollTimer = window.setInterval(async () => {
      if (await refresh()) $("connection").textContent = "polling";
    }, POLL_MS);
  }

  function stopPolling() {
    if (pollTimer !== null) window.clearInterval(pollTimer);
    pollTimer = null;
  }

  function connect() {
    if (!window.EventSource || params.has("poll")) {
      startPolling();
      return;
    }
    const source = new EventSource(withToken("api/stream"));
    source.addEventListener("snapshot", (ev) => {
      lastMessage = Date.now();
      stopPolling();
      $("connection").textContent = "live (SSE)";
      render(JSON.parse(ev.data));
    });
    source.onerror = () => {
      // EventSource reconnects by itself; poll meanwhile so the page keeps moving.
      if (Date.now() - lastMessage > 3000) startPolling();
    };
  }

  window.addEventListener("resize", () => { if (latest) drawEquity(); });
  refresh().then(connect);
})();
