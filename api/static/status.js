// The status page: one GET /v1/status, then live updates from /v1/status/events (SSE).
// The stream is read with fetch() rather than EventSource so that, when the operator has
// made the page key-protected (api.status_public = false), the key can travel in the
// Authorization header. The key is asked for once and kept in this tab's sessionStorage.
"use strict";

const KEY_ITEM = "qilu.apiKey";
const state = { version: -1, backoff: 1000 };

function headers() {
  const key = sessionStorage.getItem(KEY_ITEM);
  return key ? { Authorization: "Bearer " + key } : {};
}

function fmt(v, kind) {
  if (v === null || v === undefined) return "–";
  if (kind === "ratio") return (v * 100).toFixed(1) + "%";
  return Math.round(v).toLocaleString("en-US");
}

function duration(s) {
  if (s === null || s === undefined) return "–";
  if (s < 120) return s.toFixed(1) + " s";
  if (s < 7200) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function setField(name, text) {
  for (const e of document.querySelectorAll(`[data-field="${name}"]`)) e.textContent = text;
}

function renderPipeline(p, refreshS) {
  setField("freshness", duration(p.freshness_s));
  setField("online", p.online.toLocaleString("en-US"));
  setField("devices", `of ${p.devices.toLocaleString("en-US")} registered`);
  setField("never_seen", p.never_seen.toLocaleString("en-US"));
  setField("lag", p.lag_records === null ? "–" : p.lag_records.toLocaleString("en-US"));
  setField("lag_note", p.lag_note || "Kafka records not yet stored");
  setField("computed", p.snapshot_computed_in_s.toFixed(2) + " s");
  setField("refresh", `recomputed every ${refreshS} s in the background`);
}

function renderTargets(data) {
  const names = Object.fromEntries(data.targets.map((t) => [t.id, t]));
  const box = document.getElementById("targets");
  box.replaceChildren();
  for (const c of data.coverage) {
    const j = c.judgement;
    const card = el("article", { class: "target", "data-target": c.target_id, "data-status": j.status });
    card.append(el("h3", {}, names[c.target_id].name_en));
    card.append(el("div", { class: "zhname" }, names[c.target_id].name_zh));
    const row = el("div", { class: "row" });
    const value = el("span", { class: "value", "data-role": "province-value",
      "data-value": c.value === null ? "" : String(c.value) }, fmt(c.value, c.kind));
    row.append(value);
    row.append(el("span", { class: "goal" }, `goal ${c.comparator} ${fmt(c.threshold, c.kind)} by ${c.due}`));
    row.append(el("span", { class: "badge", "data-status": j.status }, j.status.replace("_", " ")));
    card.append(row);
    const bar = el("div", { class: "bar", title: "progress towards the threshold" });
    const pct = c.value === null || c.threshold <= 0 ? 0 : Math.min(1, c.value / c.threshold);
    bar.append(el("div", { class: "fill", style: `width:${(pct * 100).toFixed(2)}%` }));
    if (j.expected_now !== null && c.threshold > 0) {
      const at = Math.min(1, Math.max(0, j.expected_now / c.threshold));
      bar.append(el("div", { class: "expected", style: `left:${(at * 100).toFixed(2)}%`,
        title: "where the linear trajectory expects the value today" }));
    }
    card.append(bar);
    const days = j.days_left >= 0 ? `${j.days_left} days left` : `due ${-j.days_left} days ago`;
    card.append(el("div", { class: "explain" }, `${(pct * 100).toFixed(1)}% of the threshold · ${days} · ${j.explanation}`));
    box.append(card);
  }
}

function renderGrid(data) {
  const grid = document.getElementById("grid");
  const head = el("tr");
  head.append(el("th", { class: "tname" }, "target"));
  head.append(el("th", {}, data.coverage.length && data.coverage[0].area.length === 1 && data.coverage[0].area[0] === "370000" ? "province" : "area"));
  for (const city of data.cities) {
    const th = el("th", { title: city.code });
    th.append(el("div", {}, city.name_zh));
    th.append(el("div", { class: "hint" }, city.name_en));
    head.append(th);
  }
  grid.tHead.replaceChildren(head);
  const body = document.createDocumentFragment();
  for (const c of data.coverage) {
    const tr = el("tr", { "data-target": c.target_id });
    tr.append(el("td", { class: "tname", title: c.target_id }, c.target_id));
    tr.append(el("td", { class: `cell s-${c.judgement.status}`, "data-target": c.target_id,
      "data-city": "370000", "data-value": c.value === null ? "" : String(c.value) }, fmt(c.value, c.kind)));
    const byCity = Object.fromEntries(c.cities.map((x) => [x.city_code, x]));
    for (const city of data.cities) {
      const x = byCity[city.code];
      const v = x ? x.value : null;
      const cls = x && x.judgement ? `cell s-${x.judgement.status}` : "cell count";
      const td = el("td", { class: cls, "data-target": c.target_id, "data-city": city.code,
        "data-value": v === null ? "" : String(v),
        title: x ? `${x.name_en}: ${x.numerator} of ${x.denominator}` : "" }, fmt(v, c.kind));
      tr.append(td);
    }
    body.append(tr);
  }
  const old = new Map([...grid.tBodies[0].querySelectorAll("td[data-city]")].map((td) => [td.dataset.target + "/" + td.dataset.city, td.dataset.value]));
  grid.tBodies[0].replaceChildren(body);
  if (old.size) {
    for (const td of grid.tBodies[0].querySelectorAll("td[data-city]")) {
      const before = old.get(td.dataset.target + "/" + td.dataset.city);
      if (before !== undefined && before !== td.dataset.value) td.classList.add("flash");
    }
  }
}

function render(data) {
  if (data.version <= state.version) return;
  state.version = data.version;
  document.getElementById("as-of").textContent = new Date(data.as_of).toLocaleString();
  document.getElementById("as-of").setAttribute("datetime", data.as_of);
  document.getElementById("version").textContent = String(data.version);
  document.body.dataset.version = String(data.version);
  renderPipeline(data.pipeline, data.refresh_s);
  renderTargets(data);
  renderGrid(data);
}

function live(mode) {
  document.getElementById("live-dot").dataset.state = mode;
  document.getElementById("live-text").textContent =
    mode === "live" ? "live" : mode === "reconnecting" ? "reconnecting…" : "connecting…";
  document.body.dataset.live = mode;
}

function askForKey(message) {
  const form = document.getElementById("key-form");
  form.hidden = false;
  document.getElementById("key-error").textContent = message || "";
  return new Promise((resolve) => {
    form.onsubmit = (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(KEY_ITEM, document.getElementById("key-input").value.trim());
      form.hidden = true;
      resolve();
    };
  });
}

async function authorized(url) {
  for (;;) {
    const resp = await fetch(url, { headers: headers(), cache: "no-store" });
    if (resp.status !== 401) return resp;
    sessionStorage.removeItem(KEY_ITEM);
    const body = await resp.json().catch(() => ({}));
    await askForKey(body.detail);
  }
}

async function stream() {
  const resp = await authorized("/v1/status/events");
  if (!resp.ok || !resp.body) throw new Error("stream answered " + resp.status);
  live("live");
  state.backoff = 1000;
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (event === "status" && data.length) render(JSON.parse(data.join("\n")));
    }
  }
}

async function main() {
  const first = await authorized("/v1/status");
  if (first.ok) render(await first.json());
  for (;;) {
    try {
      await stream();
    } catch (err) {
      console.warn("status stream:", err);
    }
    live("reconnecting");
    await new Promise((r) => setTimeout(r, state.backoff));
    state.backoff = Math.min(state.backoff * 2, 30000);
  }
}

main();
