// The status page: one GET /v1/status, then live updates from /v1/status/events (SSE), and
// each target's trajectory from /v1/trajectories/{target} (province, or the chosen city).
// The stream is read with fetch() rather than EventSource so that, when the operator has
// made the page key-protected (api.status_public = false), the key can travel in the
// Authorization header. The key is asked for once and kept in this tab's sessionStorage; the
// language (English or Chinese) is remembered in localStorage. Charts: the vendored uPlot
// (api/static/vendor/), served by the API itself. Reported figures (targets other bodies
// count) come from GET /v1/reported, at most once a minute (docs/reported.md).
//
// Hooks the browser test reads (tests/integration/test_api_browser.py), besides the data-*
// attributes of the cards, tiles and table: body[data-reported] (how many reported targets
// were loaded), #reported tr[data-reported] with data-kind, data-status, data-fresh and
// data-area, its cells [data-role=value|age|reporter], each card's .kind badge and its
// [data-role=reported] line of reported counterparts, and chooseCity(code). Operator links:
// body[data-operators] (how many operators /v1/status listed), #operators tr[data-operator]
// with data-health, data-token and data-push / data-pull (the API's times), its cells
// [data-role=health|push|pull|failures|token|connectors].
"use strict";

const KEY_ITEM = "qilu.apiKey";
const LANG_ITEM = "qilu.lang";
const PROVINCE = "370000";
const TRAJECTORY_REFRESH_MS = 60000;

// Every string the page itself writes, in both languages (same keys in both).
const I18N = {
  en: {
    "skip": "Skip to the targets",
    "title": "Shandong digital-economy coverage",
    "subtitle": "Connected assets against the province's targets, computed from live telemetry.",
    "live.connecting": "connecting…",
    "live.live": "live",
    "live.reconnecting": "reconnecting…",
    "asof": "data as of",
    "snapshot": "snapshot",
    "lang.switch": "中文",
    "lang.switch_label": "切换到中文",
    "key.ask": "This page needs an API key with the coverage:read scope.",
    "key.show": "Show",
    "pipe.heading": "Pipeline health",
    "pipe.freshness": "freshness",
    "pipe.freshness_hint": "age of the newest reading",
    "pipe.online": "devices online",
    "pipe.of_registered": "of {n} registered",
    "pipe.never_seen": "never seen",
    "pipe.never_seen_hint": "registered, no valid reading yet",
    "pipe.lag": "ingest lag",
    "pipe.lag_hint": "Kafka records not yet stored",
    "pipe.snapshot": "snapshot",
    "pipe.refresh": "recomputed every {s} s in the background",
    "map.heading": "Province view",
    "map.colour_by": "colour by target",
    "map.clear": "Show the whole province",
    "map.help": "Choose a city (click, or Enter / Space on a focused tile) to see its figures and trajectories; choose it again for the whole province.",
    "map.all": "Showing the whole province (16 cities).",
    "map.showing": "Showing {city} only.",
    "map.legend_ratio": "Coloured by each city's status against the threshold.",
    "map.legend_count": "A count target's threshold is province-wide: darker = more assets connected in the city (most: {max}).",
    "map.tile": "{city}: {value}, {status}",
    "targets.heading": "Targets and trajectories",
    "targets.province": "province",
    "targets.city": "{city}",
    "goal": "goal {cmp} {threshold} by {due}",
    "goal_province": "province's goal {cmp} {threshold} by {due}",
    "scaled": "scaled",
    "scaled.title": "scaled from the published {published} (× {scale})",
    "banner": "Simulation: the registry stands for part of Shandong ({parts}). Count thresholds are compared scaled by the same share (marked “scaled”); ratio thresholds apply as written.",
    "banner.share": "{pct} of its {sector}",
    "banner.share_same": "{pct} of it in every sector",
    "sector.charging": "charging piles",
    "sector.substation": "substations",
    "sector.ranch": "ranches",
    "sector.all": "devices overall",
    "days_left": "{n} days left",
    "days_over": "due {n} days ago",
    "of_threshold": "{pct} of the threshold",
    "why.trajectory": "the trajectory from {base} on {day} expects {expected} today",
    "why.shortfall": "shortfall {pct} of the way",
    "why.met": "threshold met",
    "why.past_due": "past the due date without meeting it",
    "why.no_history": "no earlier day recorded: the trajectory starts today",
    "why.no_data": "nothing to measure",
    "why.city_count": "count thresholds are province-wide: this is the city's count",
    "status.met": "met",
    "status.on_track": "on track",
    "status.at_risk": "at risk",
    "status.behind": "behind",
    "status.no_data": "nothing to measure",
    "status.city_count": "city count",
    "chart.value": "value per day",
    "chart.modelled": "modelled history (simulation, not measured)",
    "chart.threshold": "threshold",
    "chart.judgement": "judgement's trajectory",
    "chart.plan": "plan's path",
    "chart.met_on": "met on {day}",
    "chart.behind_since": "behind since {day}",
    "chart.loading": "loading the trajectory…",
    "chart.empty": "No daily values recorded yet.",
    "chart.unavailable": "The trajectory is not available from this API.",
    "chart.failed": "The trajectory could not be loaded ({why}).",
    "chart.label": "{name}: value per day against the threshold {threshold}; latest {value} on {day}.",
    "chart.baseline": "plan baseline {value} on {day} ({source})",
    "grid.heading": "Per city",
    "grid.target": "target",
    "grid.province": "province",
    "grid.area": "area",
    "grid.note": "ratio targets are judged per city; count thresholds are province-wide, so city cells show the count.",
    "grid.cell": "{city}: {num} of {den}",
    "footer.api": "API reference",
    "footer.json": "status JSON",
    "kind.measured": "measured",
    "kind.reported": "reported",
    "kind.simulated": "simulated",
    "kind.stale": "stale",
    "kind.measured_title": "computed from this platform's telemetry; snapshot of {at}",
    "rep.heading": "Reported figures",
    "rep.intro": "Targets counted by other bodies (telecom operators, provincial departments): periodic reported statistics, not telemetry. Each figure says who reported it and for which day; one older than its reporting interval is marked stale.",
    "rep.target": "target",
    "rep.value": "value",
    "rep.goal": "goal",
    "rep.status": "status",
    "rep.as_of": "as of (age)",
    "rep.reporter": "reported by",
    "rep.source": "source",
    "rep.age": "{day} ({n} days)",
    "rep.every": "reported every {n} days",
    "rep.none": "no figure yet",
    "rep.sum": "sum of the cities' figures",
    "rep.city_count": "city's figure (threshold is province-wide)",
    "rep.province_only": "reported for the province only",
    "rep.counterpart": "Province's reported figure ({id}): {value} as of {day}, {status}",
    "rep.failed": "Reported figures could not be loaded ({why}).",
    "op.heading": "Operator links",
    "op.intro": "Charging operators connected over T/CEC 102. An operator's piles count as connected while it pushed or was pulled within twice its pull interval. Ages are counted from the data's time.",
    "op.operator": "operator",
    "op.health": "link",
    "op.push": "last push",
    "op.pull": "last pull",
    "op.failures": "failures",
    "op.token": "token",
    "op.connectors": "connectors",
    "op.healthy": "linked",
    "op.silent": "silent",
    "op.never": "never connected",
    "op.ago": "{age} ago",
    "op.not_yet": "never",
    "op.token_valid": "valid for {age}",
    "op.token_expired": "expired {age} ago",
    "op.token_none": "none issued",
    "op.token_title": "expires {at}",
    "op.last_failure": "last {at}: {reason}",
  },
  zh: {
    "skip": "跳到目标",
    "title": "山东数字经济覆盖目标",
    "subtitle": "根据实时遥测数据，统计已接入的资产并对照全省目标。",
    "live.connecting": "正在连接…",
    "live.live": "实时",
    "live.reconnecting": "正在重新连接…",
    "asof": "数据时间",
    "snapshot": "快照",
    "lang.switch": "English",
    "lang.switch_label": "Switch to English",
    "key.ask": "此页面需要具有 coverage:read 权限的 API 密钥。",
    "key.show": "显示",
    "pipe.heading": "数据管道状态",
    "pipe.freshness": "新鲜度",
    "pipe.freshness_hint": "最新读数的时长",
    "pipe.online": "在线设备",
    "pipe.of_registered": "共登记 {n} 台",
    "pipe.never_seen": "从未上报",
    "pipe.never_seen_hint": "已登记，尚无有效读数",
    "pipe.lag": "写入滞后",
    "pipe.lag_hint": "尚未写入数据库的 Kafka 记录",
    "pipe.snapshot": "快照",
    "pipe.refresh": "后台每 {s} 秒重新计算",
    "map.heading": "全省视图",
    "map.colour_by": "按目标着色",
    "map.clear": "显示全省",
    "map.help": "选择一个城市（点击，或在选中的方块上按 Enter / 空格键）查看该市的数据和轨迹；再次选择则回到全省。",
    "map.all": "显示全省（16 个市）。",
    "map.showing": "仅显示{city}。",
    "map.legend_ratio": "按各市对照目标值的状态着色。",
    "map.legend_count": "数量类目标的目标值针对全省：颜色越深，该市接入的资产越多（最多 {max}）。",
    "map.tile": "{city}：{value}，{status}",
    "targets.heading": "目标与轨迹",
    "targets.province": "全省",
    "targets.city": "{city}",
    "goal": "目标 {cmp} {threshold}，期限 {due}",
    "goal_province": "全省目标 {cmp} {threshold}，期限 {due}",
    "scaled": "已缩放",
    "scaled.title": "由公布的 {published} 缩放（× {scale}）",
    "banner": "模拟数据：登记的资产只代表山东的一部分（{parts}）。数量类目标值按同一比例缩放后比较（标注“已缩放”）；比例类目标值不变。",
    "banner.share": "{sector}的 {pct}",
    "banner.share_same": "各行业均为 {pct}",
    "sector.charging": "充电桩",
    "sector.substation": "变电站",
    "sector.ranch": "牧场",
    "sector.all": "全部设备",
    "days_left": "剩余 {n} 天",
    "days_over": "已超期 {n} 天",
    "of_threshold": "达到目标值的 {pct}",
    "why.trajectory": "按 {day} 的 {base} 起算的轨迹，今天应达到 {expected}",
    "why.shortfall": "落后全程的 {pct}",
    "why.met": "已达到目标值",
    "why.past_due": "已过期限仍未达到",
    "why.no_history": "没有更早的记录：轨迹从今天开始",
    "why.no_data": "无可统计的资产",
    "why.city_count": "数量类目标值针对全省：此处为该市的数量",
    "status.met": "已达标",
    "status.on_track": "按计划推进",
    "status.at_risk": "有风险",
    "status.behind": "落后",
    "status.no_data": "无可统计",
    "status.city_count": "城市数量",
    "chart.value": "每日数值",
    "chart.modelled": "模拟的历史（非实测）",
    "chart.threshold": "目标值",
    "chart.judgement": "研判轨迹",
    "chart.plan": "规划路径",
    "chart.met_on": "{day} 达标",
    "chart.behind_since": "自 {day} 起落后",
    "chart.loading": "正在加载轨迹…",
    "chart.empty": "尚无每日记录。",
    "chart.unavailable": "此 API 不提供轨迹。",
    "chart.failed": "轨迹加载失败（{why}）。",
    "chart.label": "{name}：每日数值对照目标值 {threshold}；最新 {value}（{day}）。",
    "chart.baseline": "规划基数 {value}（{day}，{source}）",
    "grid.heading": "各市",
    "grid.target": "目标",
    "grid.province": "全省",
    "grid.area": "范围",
    "grid.note": "比例类目标按市研判；数量类目标值针对全省，因此各市单元格显示数量。",
    "grid.cell": "{city}：{den} 个中的 {num} 个",
    "footer.api": "API 文档",
    "footer.json": "状态 JSON",
    "kind.measured": "实测",
    "kind.reported": "报告数",
    "kind.simulated": "模拟",
    "kind.stale": "已过期",
    "kind.measured_title": "由本平台遥测数据计算；快照时间 {at}",
    "rep.heading": "报告数据",
    "rep.intro": "由其他单位（电信运营商、省直部门）统计的目标：定期报送的统计数，而非遥测数据。每个数值注明报送单位和统计日期；超过报送周期的数值标注为已过期。",
    "rep.target": "目标",
    "rep.value": "数值",
    "rep.goal": "目标值",
    "rep.status": "状态",
    "rep.as_of": "统计日期（时长）",
    "rep.reporter": "报送单位",
    "rep.source": "依据",
    "rep.age": "{day}（{n} 天）",
    "rep.every": "每 {n} 天报送一次",
    "rep.none": "尚无数据",
    "rep.sum": "各市数值之和",
    "rep.city_count": "该市数值（目标值针对全省）",
    "rep.province_only": "仅报送全省数值",
    "rep.counterpart": "全省报告数（{id}）：{value}，统计日期 {day}，{status}",
    "rep.failed": "报告数据加载失败（{why}）。",
    "op.heading": "运营商连接",
    "op.intro": "通过 T/CEC 102 接入的充电运营商。运营商在两倍拉取周期内推送过或被成功拉取过，其充电桩才计为已接入。时长从数据时间起算。",
    "op.operator": "运营商",
    "op.health": "连接",
    "op.push": "最近推送",
    "op.pull": "最近拉取",
    "op.failures": "失败次数",
    "op.token": "令牌",
    "op.connectors": "充电接口",
    "op.healthy": "正常",
    "op.silent": "中断",
    "op.never": "从未连接",
    "op.ago": "{age}前",
    "op.not_yet": "从未",
    "op.token_valid": "有效，剩余 {age}",
    "op.token_expired": "已过期 {age}",
    "op.token_none": "未签发",
    "op.token_title": "到期时间 {at}",
    "op.last_failure": "最近一次 {at}：{reason}",
  },
};

// The province view: the 16 cities as tiles placed roughly where they lie (row, column; north
// at the top). A tile grid, not a map: no boundary data is shipped (docs/api.md, "Status page").
const LAYOUT = {
  "371400": [1, 2], "371600": [1, 3], "370500": [1, 4], "370600": [1, 5], "371000": [1, 6],
  "371500": [2, 1], "370100": [2, 2], "370300": [2, 3], "370700": [2, 4], "370200": [2, 5],
  "370900": [3, 2], "371300": [3, 4], "371100": [3, 5],
  "371700": [4, 1], "370800": [4, 2], "370400": [4, 3],
};

const COLOURS = { value: "#0f2740", threshold: "#cf222e", judgement: "#2f81f7", plan: "#8250df",
  modelled: "#8c959f", met: "#1a7f37", behind: "#cf222e", grid: "#e3e6ea", axis: "#667085" };

function storedLang() {
  try {
    const v = localStorage.getItem(LANG_ITEM);
    if (v === "en" || v === "zh") return v;
  } catch (err) {
    console.warn("localStorage:", err);
  }
  return (navigator.language || "").toLowerCase().startsWith("zh") ? "zh" : "en";
}

const state = {
  version: -1, backoff: 1000, lang: storedLang(), city: null, mapTarget: null, data: null,
  cards: new Map(), trajectories: new Map(), trajArea: undefined, trajAt: 0, trajGen: 0,
  asking: null, reported: null, reportedAt: 0,
};

function t(key, vars) {
  let s = I18N[state.lang][key];
  if (s === undefined) s = I18N.en[key] !== undefined ? I18N.en[key] : key;
  for (const [k, v] of Object.entries(vars || {})) s = s.split(`{${k}}`).join(String(v));
  return s;
}

function locale() {
  return state.lang === "zh" ? "zh-CN" : "en-US";
}

function headers() {
  const key = sessionStorage.getItem(KEY_ITEM);
  return key ? { Authorization: "Bearer " + key } : {};
}

function fmt(v, kind) {
  if (v === null || v === undefined) return "–";
  if (kind === "ratio") return (v * 100).toFixed(1) + "%";
  if (!Number.isInteger(v) && Math.abs(v) < 100) return String(+v.toFixed(2)); // a scaled threshold
  return Math.round(v).toLocaleString("en-US");
}

function pct(x) {
  return (x * 100).toFixed(1) + "%";
}

function duration(s) {
  if (s === null || s === undefined) return "–";
  const [n, unit] = s < 120 ? [s, "s"] : s < 7200 ? [s / 60, "min"] : [s / 3600, "h"];
  return `${n.toFixed(1)} ${state.lang === "zh" ? { s: "秒", min: "分钟", h: "小时" }[unit] : unit}`;
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

// "2026-12-06 14:04:03 UTC+8": the browser's local time, unambiguous in both languages.
function localTime(iso) {
  const d = new Date(iso);
  const two = (n) => String(n).padStart(2, "0");
  const off = -d.getTimezoneOffset();
  const zone = `UTC${off < 0 ? "-" : "+"}${Math.floor(Math.abs(off) / 60)}${off % 60 ? ":" + two(Math.abs(off) % 60) : ""}`;
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ` +
    `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())} ${zone}`;
}

// "2026-12-06 22:04:03 CST": China Standard Time (Asia/Shanghai, UTC+8), the calendar of the
// targets' due dates and of the daily series, whatever zone the browser is in.
const CST_PARTS = new Intl.DateTimeFormat("en-CA", {
  timeZone: "Asia/Shanghai", hourCycle: "h23", year: "numeric", month: "2-digit",
  day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
});
function cstTime(iso) {
  const p = Object.fromEntries(CST_PARTS.formatToParts(new Date(iso)).map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second} CST`;
}

function named(o) {
  return state.lang === "zh" ? o.name_zh : o.name_en;
}

function cityName(code) {
  const city = state.data && state.data.cities.find((c) => c.code === code);
  return city ? named(city) : code;
}

function effective(c) {
  return c.threshold_effective === undefined || c.threshold_effective === null
    ? c.threshold : c.threshold_effective;
}

function scaledMark(c) {
  const mark = el("span", { class: "scaled-mark",
    title: t("scaled.title", { published: fmt(c.threshold, c.kind), scale: c.scale }) }, t("scaled"));
  return mark;
}

function statusWord(status) {
  return t("status." + status);
}

// --- static text and the language switch ----------------------------------------------------

function applyLanguage() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.body.dataset.lang = state.lang;
  for (const e of document.querySelectorAll("[data-i18n]")) e.textContent = t(e.dataset.i18n);
  const button = document.getElementById("lang");
  button.textContent = t("lang.switch");
  button.setAttribute("lang", state.lang === "zh" ? "en" : "zh-CN");
  button.setAttribute("aria-label", t("lang.switch_label"));
  document.title = `Qilu Telemetry — ${t("title")}`;
}

function switchLanguage() {
  state.lang = state.lang === "zh" ? "en" : "zh";
  try {
    localStorage.setItem(LANG_ITEM, state.lang);
  } catch (err) {
    console.warn("localStorage:", err);
  }
  applyLanguage();
  live(document.body.dataset.live || "connecting");
  if (state.data) {
    paint(state.data);
    for (const [id, tr] of state.trajectories) drawChart(id, tr);
  }
}

// --- the parts of the page ------------------------------------------------------------------

function renderPipeline(p, refreshS) {
  setField("freshness", duration(p.freshness_s));
  setField("online", p.online.toLocaleString("en-US"));
  setField("devices", t("pipe.of_registered", { n: p.devices.toLocaleString("en-US") }));
  setField("never_seen", p.never_seen.toLocaleString("en-US"));
  setField("lag", p.lag_records === null ? "–" : p.lag_records.toLocaleString("en-US"));
  setField("lag_note", p.lag_note || t("pipe.lag_hint"));
  setField("computed", `${p.snapshot_computed_in_s.toFixed(2)} ${state.lang === "zh" ? "秒" : "s"}`);
  setField("refresh", t("pipe.refresh", { s: refreshS }));
}

// The registry is a simulated share of the province: say so, per sector (the API's
// `simulation`; older answers only mark each target's `scaled`).
function renderBanner(data) {
  const banner = document.getElementById("scaled-banner");
  const sim = data.simulation;
  const scaled = data.coverage.find((c) => c.scaled === true);
  banner.hidden = !sim && !scaled;
  document.body.dataset.scaled = banner.hidden ? "false" : "true";
  if (banner.hidden) return;
  const shares = sim ? Object.entries(sim.shares) : [["all", scaled.scale]];
  shares.sort((a, b) => (a[0] === "all") - (b[0] === "all")); // "devices overall" last
  const pctOf = (share) => `${+(share * 100).toFixed(2)}${state.lang === "zh" ? "" : " "}%`;
  const parts = new Set(shares.map(([, share]) => share)).size === 1
    ? [t("banner.share_same", { pct: pctOf(shares[0][1]) })]
    : shares.map(([sector, share]) => t("banner.share", { pct: pctOf(share), sector: t("sector." + sector) }));
  banner.textContent = t("banner", { parts: parts.join(state.lang === "zh" ? "，" : ", ") });
  if (sim) banner.title = sim.note;
}

// The figures a card shows: the province's, or the chosen city's.
function figures(c) {
  if (!state.city) return { value: c.value, judgement: c.judgement, num: c.numerator, den: c.denominator };
  const x = c.cities.find((y) => y.city_code === state.city);
  if (!x) return { value: null, judgement: null, num: 0, den: 0 };
  return { value: x.value, judgement: x.judgement, num: x.numerator, den: x.denominator };
}

function explain(c, f) {
  const j = f.judgement;
  if (!j) return t("why.city_count");
  const thr = effective(c);
  const share = f.value === null || thr <= 0 ? 0 : Math.min(1, f.value / thr);
  const parts = [t("of_threshold", { pct: pct(share) }),
    j.days_left >= 0 ? t("days_left", { n: j.days_left }) : t("days_over", { n: -j.days_left })];
  if (j.basis === "no_data") parts.push(t("why.no_data"));
  else if (j.basis === "no_history") parts.push(t("why.no_history"));
  else if (j.basis === "threshold") parts.push(j.status === "met" ? t("why.met") : t("why.past_due"));
  else if (j.expected_now !== null) {
    parts.push(t("why.trajectory", { base: fmt(j.baseline_value, c.kind), day: j.baseline_day,
      expected: fmt(j.expected_now, c.kind) }));
    if (j.shortfall !== null && j.shortfall > 0) parts.push(t("why.shortfall", { pct: pct(j.shortfall) }));
  }
  return parts.join(" · ");
}

function makeCard(c) {
  const card = el("article", { class: "target", "data-target": c.target_id });
  const head = el("div", { class: "card-head" });
  const titles = el("div");
  const name = el("h3");
  const other = el("div", { class: "othername" });
  titles.append(name, other);
  const badge = el("span", { class: "badge" });
  head.append(titles, badge);
  const row = el("div", { class: "row" });
  const value = el("span", { class: "value", "data-role": "province-value" });
  const goal = el("span", { class: "goal" });
  row.append(value, goal);
  const bar = el("div", { class: "bar" });
  const fill = el("div", { class: "fill" });
  const expected = el("div", { class: "expected" });
  bar.append(fill, expected);
  const why = el("div", { class: "explain" });
  const kind = el("span", { class: "kind", "data-kind": "measured" });
  const counterpart = el("div", { class: "reported-line", "data-role": "reported" });
  counterpart.hidden = true;
  const chart = el("div", { class: "chart", role: "img", "data-state": "loading" });
  const legend = el("div", { class: "chart-legend" });
  const marks = el("div", { class: "chart-marks" });
  const point = el("div", { class: "chart-readout", "aria-hidden": "true" });
  row.append(kind);
  card.append(head, row, bar, why, counterpart, chart, point, legend, marks);
  const parts = { card, name, other, badge, value, goal, bar, fill, expected, why, kind, counterpart, chart, legend,
    marks, plot: null };
  new ResizeObserver(() => {
    if (parts.plot && chart.clientWidth > 0) parts.plot.setSize({ width: chart.clientWidth, height: chartHeight() });
  }).observe(chart);
  return parts;
}

function renderTargets(data) {
  const names = Object.fromEntries(data.targets.map((x) => [x.id, x]));
  const box = document.getElementById("targets");
  document.getElementById("targets-area").textContent =
    "· " + (state.city ? cityName(state.city) : t("targets.province"));
  for (const c of data.coverage) {
    let p = state.cards.get(c.target_id);
    if (!p) {
      p = makeCard(c);
      state.cards.set(c.target_id, p);
      box.append(p.card);
    }
    const f = figures(c);
    const status = f.judgement ? f.judgement.status : "city_count";
    p.card.dataset.status = status;
    p.card.dataset.area = state.city || PROVINCE;
    p.name.textContent = named(names[c.target_id]);
    p.other.textContent = state.lang === "zh" ? names[c.target_id].name_en : names[c.target_id].name_zh;
    p.other.lang = state.lang === "zh" ? "en" : "zh-CN";
    p.badge.dataset.status = status;
    p.badge.textContent = statusWord(status);
    p.value.dataset.value = f.value === null ? "" : String(f.value);
    p.value.textContent = fmt(f.value, c.kind);
    const thr = effective(c);
    p.goal.replaceChildren(t(f.judgement ? "goal" : "goal_province", { cmp: c.comparator, threshold: fmt(thr, c.kind), due: c.due }));
    p.goal.dataset.threshold = String(thr);
    if (c.scaled === true) p.goal.append(" ", scaledMark(c));
    const share = !f.judgement || f.value === null || thr <= 0 ? 0 : Math.min(1, f.value / thr);
    p.bar.hidden = !f.judgement;
    p.fill.style.width = `${(share * 100).toFixed(2)}%`;
    const j = f.judgement;
    p.expected.hidden = !j || j.expected_now === null || thr <= 0;
    if (!p.expected.hidden) p.expected.style.left = `${(Math.min(1, Math.max(0, j.expected_now / thr)) * 100).toFixed(2)}%`;
    p.why.textContent = explain(c, f);
    p.why.title = j ? j.explanation : "";
    p.kind.textContent = t("kind.measured");
    p.kind.title = t("kind.measured_title", { at: localTime(data.as_of) });
    renderCounterpart(c, p);
  }
}

// A measured proxy's reported counterpart (the province's own figure), judged separately.
function renderCounterpart(c, p) {
  const reps = state.reported ? state.reported.targets.filter((r) => r.measured === c.target_id) : [];
  p.counterpart.hidden = reps.length === 0;
  p.counterpart.replaceChildren();
  for (const r of reps) {
    const a = areaFigure(r);
    const status = a.judgement ? a.judgement.status : "no_data";
    const line = el("div", { "data-reported": r.id, "data-status": status, "data-fresh": a.freshness });
    line.append(el("span", { class: "kind", "data-kind": "reported" }, t("kind.reported")), " ",
      t("rep.counterpart", { id: r.id, value: fmt(a.value, r.kind), day: a.figure ? a.figure.as_of : "–",
        status: statusWord(status) }));
    if (a.freshness === "stale") line.append(" ", el("span", { class: "kind", "data-kind": "stale" }, t("kind.stale")));
    if (a.figure && a.figure.simulated) line.append(" ", el("span", { class: "kind", "data-kind": "simulated" }, t("kind.simulated")));
    p.counterpart.append(line);
  }
}

// --- reported figures -------------------------------------------------------------------------

// The figure a reported target shows for the chosen area: the city's when reported per city,
// else the province's.
function areaFigure(r) {
  if (state.city && r.per_city) {
    const x = r.cities.find((y) => y.area === state.city);
    if (x) return x;
  }
  return r.province;
}

async function loadReported(force) {
  if (!force && state.reported && Date.now() - state.reportedAt < TRAJECTORY_REFRESH_MS) return;
  state.reportedAt = Date.now();
  try {
    const resp = await authorized("/v1/reported");
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    state.reported = await resp.json();
  } catch (err) {
    console.warn("reported figures:", err);
    const body = document.querySelector("#reported tbody");
    body.replaceChildren(el("tr", {}, ""));
    body.firstChild.append(el("td", { colspan: "7" }, t("rep.failed", { why: String(err) })));
    return;
  }
  renderReported();
  if (state.data) renderTargets(state.data);
  document.body.dataset.reported = String(state.reported.targets.length);
}

function renderReported() {
  const data = state.reported;
  if (!data) return;
  document.getElementById("reported-area").textContent =
    "· " + (state.city ? cityName(state.city) : t("targets.province"));
  const head = document.querySelector("#reported thead");
  const hr = el("tr");
  for (const k of ["target", "value", "goal", "status", "as_of", "reporter", "source"]) {
    hr.append(el("th", { scope: "col" }, t("rep." + k)));
  }
  head.replaceChildren(hr);
  const rows = [];
  for (const r of data.targets) {
    const a = areaFigure(r);
    const cityCount = r.kind === "count" && a.area !== PROVINCE && a.value !== null;
    const status = a.judgement ? a.judgement.status : cityCount ? "city_count" : "no_data";
    const tr = el("tr", { "data-reported": r.id, "data-kind": "reported", "data-status": status,
      "data-fresh": a.freshness, "data-area": a.area });
    const name = el("td", { class: "tname" });
    name.append(el("div", {}, named(r)), el("span", { class: "kind", "data-kind": "reported" }, t("kind.reported")));
    if (a.freshness === "stale") name.append(" ", el("span", { class: "kind", "data-kind": "stale" }, t("kind.stale")));
    if (a.figure && a.figure.simulated) name.append(" ", el("span", { class: "kind", "data-kind": "simulated" }, t("kind.simulated")));
    const value = el("td", { "data-role": "value", "data-value": a.value === null ? "" : String(a.value) }, fmt(a.value, r.kind));
    if (a.basis === "sum_of_cities") value.title = t("rep.sum");
    if (cityCount) value.title = t("rep.city_count");
    if (state.city && !r.per_city) value.title = t("rep.province_only");
    const goal = el("td", {}, t(r.kind === "count" && a.area !== PROVINCE ? "goal_province" : "goal", { cmp: r.comparator, threshold: fmt(r.threshold, r.kind), due: r.due }));
    const badge = el("span", { class: "badge", "data-status": status },
      a.freshness === "no_data" ? t("rep.none") : statusWord(status));
    const st = el("td");
    st.append(badge);
    if (a.judgement) st.title = a.judgement.explanation;
    const age = el("td", { class: "age", "data-role": "age" },
      a.figure ? t("rep.age", { day: a.figure.as_of, n: a.figure.age_days }) : t("rep.none"));
    age.title = t("rep.every", { n: r.interval_days });
    const who = el("td", { "data-role": "reporter" }, a.figure ? a.figure.reporter : r.reporter);
    const src = el("td", { class: "src" }, a.figure ? a.figure.source : "");
    src.title = `${r.source.number} ${r.source.title} ${r.source.article}`.trim();
    tr.append(name, value, goal, st, age, who, src);
    rows.push(tr);
  }
  document.querySelector("#reported tbody").replaceChildren(...rows);
}

// --- the province view ------------------------------------------------------------------------

function buildMap(data) {
  const map = document.getElementById("province-map");
  if (map.childElementCount) return;
  // Tiles in reading order (north to south, west to east): the tab order follows the layout.
  let spare = 5;
  const placed = data.cities.map((city) => [city, LAYOUT[city.code] || [spare++, 1]]);
  placed.sort((a, b) => a[1][0] - b[1][0] || a[1][1] - b[1][1]);
  for (const [city, [row, col]] of placed) {
    const tile = el("button", { type: "button", class: "ctile", "data-city": city.code, "aria-pressed": "false" });
    tile.style.gridRow = String(row);
    tile.style.gridColumn = String(col);
    tile.append(el("span", { class: "cname" }), el("span", { class: "cval" }));
    tile.addEventListener("click", () => chooseCity(city.code));
    map.append(tile);
  }
  const select = document.getElementById("map-target");
  for (const c of data.coverage) select.append(el("option", { value: c.target_id }));
  const ratio = data.coverage.find((c) => c.kind === "ratio");
  state.mapTarget = (ratio || data.coverage[0]).target_id;
  select.value = state.mapTarget;
  select.addEventListener("change", () => {
    state.mapTarget = select.value;
    renderMap(state.data);
  });
}

function renderMap(data) {
  buildMap(data);
  const names = Object.fromEntries(data.targets.map((x) => [x.id, x]));
  for (const option of document.querySelectorAll("#map-target option")) option.textContent = named(names[option.value]);
  const c = data.coverage.find((x) => x.target_id === state.mapTarget) || data.coverage[0];
  const byCity = Object.fromEntries(c.cities.map((x) => [x.city_code, x]));
  const counts = c.cities.map((x) => x.value || 0);
  const max = Math.max(1, ...counts);
  for (const tile of document.querySelectorAll("#province-map .ctile")) {
    const x = byCity[tile.dataset.city];
    const v = x ? x.value : null;
    const status = x && x.judgement ? x.judgement.status : "city_count";
    tile.dataset.target = c.target_id;
    tile.dataset.status = status;
    tile.dataset.value = v === null ? "" : String(v);
    tile.querySelector(".cname").textContent = cityName(tile.dataset.city);
    tile.querySelector(".cval").textContent = fmt(v, c.kind);
    const share = status === "city_count" && v !== null ? v / max : null;
    tile.style.setProperty("--share", share === null ? "" : share.toFixed(3));
    tile.classList.toggle("dark", share !== null && share > 0.55);
    tile.setAttribute("aria-pressed", String(tile.dataset.city === state.city));
    tile.setAttribute("aria-label", t("map.tile", { city: cityName(tile.dataset.city), value: fmt(v, c.kind),
      status: statusWord(status) }));
  }
  const legend = document.getElementById("map-legend");
  legend.replaceChildren(c.kind === "ratio" ? t("map.legend_ratio") : t("map.legend_count", { max: fmt(max, c.kind) }));
  if (c.kind === "ratio") {
    const keys = el("span", { class: "keys" });
    for (const status of ["met", "on_track", "at_risk", "behind", "no_data"]) {
      keys.append(el("span", { class: `sw s-${status}` }), statusWord(status), " ");
    }
    legend.append(keys);
  }
  document.getElementById("filter-text").textContent =
    state.city ? t("map.showing", { city: cityName(state.city) }) : t("map.all");
  document.getElementById("clear-city").hidden = !state.city || !wholeProvince(data);
}

function chooseCity(code) {
  if (state.data && !wholeProvince(state.data)) {
    if (state.city === code) return; // a city-limited key has no province to go back to
    state.city = code;
  } else state.city = state.city === code ? null : code;
  document.body.dataset.city = state.city || PROVINCE;
  if (state.data) paint(state.data);
  loadTrajectories(true);
}

// --- the per-city table -----------------------------------------------------------------------

function renderGrid(data) {
  const grid = document.getElementById("grid");
  const head = el("tr");
  head.append(el("th", { class: "tname", scope: "col" }, t("grid.target")));
  head.append(el("th", { scope: "col" }, wholeProvince(data) ? t("grid.province") : t("grid.area")));
  for (const city of data.cities) {
    const th = el("th", { title: city.code, scope: "col", "data-col": city.code });
    th.append(el("div", {}, named(city)));
    th.append(el("div", { class: "hint" }, state.lang === "zh" ? city.name_en : city.name_zh));
    if (city.code === state.city) th.classList.add("sel");
    head.append(th);
  }
  grid.tHead.replaceChildren(head);
  const names = Object.fromEntries(data.targets.map((x) => [x.id, x]));
  const body = document.createDocumentFragment();
  for (const c of data.coverage) {
    const tr = el("tr", { "data-target": c.target_id });
    tr.append(el("th", { class: "tname", scope: "row", title: named(names[c.target_id]) }, c.target_id));
    tr.append(el("td", { class: `cell s-${c.judgement.status}`, "data-target": c.target_id,
      "data-city": PROVINCE, "data-value": c.value === null ? "" : String(c.value) }, fmt(c.value, c.kind)));
    const byCity = Object.fromEntries(c.cities.map((x) => [x.city_code, x]));
    for (const city of data.cities) {
      const x = byCity[city.code];
      const v = x ? x.value : null;
      const cls = x && x.judgement ? `cell s-${x.judgement.status}` : "cell count";
      const td = el("td", { class: cls + (city.code === state.city ? " sel" : ""), "data-target": c.target_id,
        "data-city": city.code, "data-value": v === null ? "" : String(v),
        title: x ? t("grid.cell", { city: named(x), num: x.numerator, den: x.denominator }) : "" }, fmt(v, c.kind));
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

// --- trajectories -----------------------------------------------------------------------------

function chartHeight() {
  return window.innerWidth < 600 ? 150 : 180;
}

function dayToTs(day) {
  return Date.parse(day + "T00:00:00Z") / 1000;
}

function tsToDay(ts) {
  return new Date(ts * 1000).toISOString().slice(0, 10);
}

// uPlot's columns: x (UTC midnights, seconds), measured value, modelled value (days the
// simulation backfilled, marked synthetic), threshold, judgement path, plan path.
function chartData(tr) {
  const series = tr.series || [];
  const lines = [series.filter((p) => !p.synthetic), series.filter((p) => p.synthetic),
    tr.judgement_path || [], tr.plan_path || []];
  const days = [...new Set(lines.flat().map((p) => p.day))].sort();
  const column = (points) => {
    const m = new Map(points.map((p) => [p.day, p.value]));
    return days.map((d) => (m.has(d) ? m.get(d) : null));
  };
  const threshold = provinceWideOnly(tr) ? null : tr.threshold_effective;
  return [days.map(dayToTs), column(lines[0]), column(lines[1]), days.map(() => threshold),
    column(lines[2]), column(lines[3])];
}

// A city's chart of a count target: the threshold is the province's, not the city's to meet.
function provinceWideOnly(tr) {
  return tr.city !== null && tr.city !== undefined && tr.kind !== "ratio";
}

function markDays(tr) {
  const out = [];
  if (tr.met_on) out.push({ kind: "met_on", day: tr.met_on, colour: COLOURS.met, text: t("chart.met_on", { day: tr.met_on }) });
  if (tr.behind_since) out.push({ kind: "behind_since", day: tr.behind_since, colour: COLOURS.behind,
    text: t("chart.behind_since", { day: tr.behind_since }) });
  return out;
}

function drawMarks(u, tr) {
  const ctx = u.ctx;
  const dpr = window.devicePixelRatio || 1;
  ctx.save();
  ctx.font = `${11 * dpr}px system-ui, sans-serif`;
  for (const m of markDays(tr)) {
    const x = Math.round(u.valToPos(dayToTs(m.day), "x", true));
    if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
    ctx.strokeStyle = m.colour;
    ctx.fillStyle = m.colour;
    ctx.lineWidth = 2 * dpr;
    ctx.setLineDash([]);
    ctx.beginPath();
    ctx.moveTo(x, u.bbox.top);
    ctx.lineTo(x, u.bbox.top + u.bbox.height);
    ctx.stroke();
    ctx.beginPath();
    ctx.arc(x, u.bbox.top + 4 * dpr, 4 * dpr, 0, 2 * Math.PI);
    ctx.fill();
  }
  ctx.restore();
}

function axisDays(u, splits) {
  const span = splits.length > 1 ? splits[splits.length - 1] - splits[0] : 0;
  return splits.map((ts) => (span > 150 * 86400 ? tsToDay(ts).slice(0, 7) : tsToDay(ts).slice(5)));
}

function chartOptions(tr, width) {
  const ratio = tr.kind === "ratio";
  const thr = provinceWideOnly(tr) ? 0 : tr.threshold_effective;
  return {
    width, height: chartHeight(), legend: { show: false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, y: { range: (u, lo, hi) => {
      const top = Math.max(hi === null ? 0 : hi, thr || 0);
      return [Math.min(0, lo === null ? 0 : lo), top > 0 ? top * 1.08 : 1];
    } } },
    axes: [
      { stroke: COLOURS.axis, grid: { stroke: COLOURS.grid }, ticks: { stroke: COLOURS.grid }, values: axisDays },
      { stroke: COLOURS.axis, grid: { stroke: COLOURS.grid }, ticks: { stroke: COLOURS.grid }, size: 56,
        values: (u, splits) => splits.map((v) => (ratio ? `${Math.round(v * 100)}%` : compact(v))) },
    ],
    series: [
      {},
      { label: t("chart.value"), stroke: COLOURS.value, width: 2, points: { size: 5, fill: COLOURS.value } },
      { label: t("chart.modelled"), stroke: COLOURS.modelled, width: 2, dash: [4, 3], points: { size: 4, fill: "#fff" } },
      { label: t("chart.threshold"), stroke: COLOURS.threshold, width: 1.5, dash: [6, 4], points: { show: false } },
      { label: t("chart.judgement"), stroke: COLOURS.judgement, width: 1.5, dash: [2, 3], spanGaps: true, points: { show: false } },
      { label: t("chart.plan"), stroke: COLOURS.plan, width: 1.5, dash: [9, 4], spanGaps: true, points: { show: false } },
    ],
    hooks: { draw: [(u) => drawMarks(u, tr)], setCursor: [(u) => readout(u, tr)] },
  };
}

// Pointing at a chart: the day's figures under it (uPlot's own legend is off).
function readout(u, tr) {
  const box = u.root.closest(".target").querySelector(".chart-readout");
  const i = u.cursor.idx;
  if (i === null || i === undefined) {
    box.textContent = "";
    return;
  }
  const parts = [tsToDay(u.data[0][i])];
  const names = ["chart.value", "chart.modelled", "chart.threshold", "chart.judgement", "chart.plan"];
  names.forEach((key, k) => {
    const v = u.data[k + 1][i];
    if (v !== null && v !== undefined) parts.push(`${t(key)} ${fmt(v, tr.kind)}`);
  });
  box.textContent = parts.join(" · ");
}

function compact(v) {
  const a = Math.abs(v);
  if (a >= 1e8 && state.lang === "zh") return `${+(v / 1e8).toFixed(1)}亿`;
  if (a >= 1e4 && state.lang === "zh") return `${+(v / 1e4).toFixed(1)}万`;
  if (a >= 1e9) return `${+(v / 1e9).toFixed(1)}G`;
  if (a >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (a >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
  return `${+v.toFixed(2)}`;
}

function swatch(colour, dash, text) {
  const item = el("span", { class: "key" });
  item.append(el("span", { class: `line ${dash}`, style: `border-top-color:${colour}` }), text);
  return item;
}

function drawChart(id, tr, error) {
  const p = state.cards.get(id);
  if (!p) return;
  const c = state.data.coverage.find((x) => x.target_id === id);
  const name = state.data.targets.find((x) => x.id === id);
  if (p.plot) {
    p.plot.destroy();
    p.plot = null;
  }
  p.chart.replaceChildren();
  p.legend.replaceChildren();
  p.marks.replaceChildren();
  p.chart.dataset.area = tr ? tr.city || PROVINCE : state.city || PROVINCE;
  if (!tr) {
    p.chart.dataset.state = "error";
    p.chart.append(el("p", { class: "chart-note" }, error || t("chart.loading")));
    p.chart.setAttribute("aria-label", error || t("chart.loading"));
    return;
  }
  const data = chartData(tr);
  p.chart.dataset.metOn = tr.met_on || "";
  p.chart.dataset.behindSince = tr.behind_since || "";
  if (!(tr.series || []).length) {
    p.chart.dataset.state = "empty";
    p.chart.append(el("p", { class: "chart-note" }, t("chart.empty")));
    p.chart.setAttribute("aria-label", t("chart.empty"));
    return;
  }
  p.chart.dataset.state = "drawn";
  p.plot = new uPlot(chartOptions(tr, p.chart.clientWidth || 400), data, p.chart);
  window.qiluCharts[id] = p.plot;
  const last = tr.series[tr.series.length - 1];
  p.chart.setAttribute("aria-label", t("chart.label", { name: named(name), threshold: fmt(tr.threshold_effective, tr.kind),
    value: fmt(last.value, tr.kind), day: last.day }));
  p.legend.append(swatch(COLOURS.value, "solid", t("chart.value")));
  if (tr.series.some((x) => x.synthetic)) p.legend.append(swatch(COLOURS.modelled, "dashed", t("chart.modelled")));
  if (!provinceWideOnly(tr)) p.legend.append(swatch(COLOURS.threshold, "dashed", t("chart.threshold")));
  if ((tr.judgement_path || []).length) p.legend.append(swatch(COLOURS.judgement, "dotted", t("chart.judgement")));
  if (tr.plan_path) p.legend.append(swatch(COLOURS.plan, "dashed", t("chart.plan")));
  if (tr.scaled === true && !provinceWideOnly(tr)) p.legend.append(scaledMark(c || tr));
  for (const m of markDays(tr)) {
    p.marks.append(el("span", { class: "mark", style: `color:${m.colour}`, "data-mark": m.kind }, "● " + m.text));
  }
  if (tr.baseline && !provinceWideOnly(tr)) {
    p.marks.append(el("span", { class: "baseline" }, t("chart.baseline", { value: fmt(tr.baseline.value, tr.kind),
      day: tr.baseline.day, source: tr.baseline.source })));
  }
}

async function loadTrajectories(force) {
  const data = state.data;
  if (!data) return;
  const area = state.city || PROVINCE;
  if (!force && state.trajArea === area && Date.now() - state.trajAt < TRAJECTORY_REFRESH_MS) return;
  state.trajArea = area;
  state.trajAt = Date.now();
  const gen = ++state.trajGen;
  const query = state.city ? `?city=${encodeURIComponent(state.city)}` : "";
  await Promise.all(data.coverage.map(async (c) => {
    let tr = null;
    let error = null;
    try {
      const resp = await authorized(
        `/v1/trajectories/${encodeURIComponent(c.target_id)}${query}`, "no-cache");
      if (resp.ok) tr = await resp.json();
      else error = resp.status === 404 && !query ? t("chart.unavailable") : t("chart.failed", { why: `HTTP ${resp.status}` });
    } catch (err) {
      error = t("chart.failed", { why: String(err) });
    }
    if (gen !== state.trajGen) return; // a newer choice of area is loading
    if (tr) state.trajectories.set(c.target_id, tr);
    else state.trajectories.delete(c.target_id);
    drawChart(c.target_id, tr, error);
  }));
  if (gen === state.trajGen) document.body.dataset.trajectories = area;
}

// --- operator links (T/CEC 102) -------------------------------------------------------------

// Seconds from `iso` to the data's time (positive: before it).
function secondsBefore(iso, asOf) {
  return (Date.parse(asOf) - Date.parse(iso)) / 1000;
}

// A link's state as the page names it: linked (the API's `healthy`), silent (heard from once,
// not within twice its pull interval) or never connected.
function linkHealth(o) {
  if (o.healthy) return "healthy";
  return o.last_push || o.last_pull ? "silent" : "never";
}

function tokenState(o, asOf) {
  if (!o.token_expires_at) return "none";
  return secondsBefore(o.token_expires_at, asOf) < 0 ? "valid" : "expired";
}

function ageCell(role, label, iso, asOf) {
  const td = el("td", { "data-role": role, "data-label": label });
  if (!iso) {
    td.textContent = t("op.not_yet");
    return td;
  }
  td.textContent = t("op.ago", { age: duration(secondsBefore(iso, asOf)) });
  td.append(el("span", { class: "at" }, cstTime(iso)));
  return td;
}

function operatorRow(o, asOf) {
  const health = linkHealth(o);
  const token = tokenState(o, asOf);
  const tr = el("tr", { "data-operator": o.operator_id, "data-health": health, "data-token": token,
    "data-push": o.last_push || "", "data-pull": o.last_pull || "" });
  const name = el("th", { scope: "row", class: "tname" }, o.name);
  name.append(el("span", { class: "opid" }, o.operator_id));
  const state = el("td", { "data-role": "health", "data-label": t("op.health") });
  state.append(el("span", { class: `sw h-${health}`, "aria-hidden": "true" }), t("op." + health));
  const failures = el("td", { "data-role": "failures", "data-label": t("op.failures"),
    "data-failures": String(o.failures) }, o.failures.toLocaleString("en-US"));
  if (o.last_failure) {
    failures.append(el("span", { class: "why" }, t("op.last_failure", { at: cstTime(o.last_failure),
      reason: o.last_failure_reason || "–" })));
  }
  const left = o.token_expires_at ? Math.abs(secondsBefore(o.token_expires_at, asOf)) : 0;
  const tok = el("td", { "data-role": "token", "data-label": t("op.token") },
    t("op.token_" + token, { age: duration(left) }));
  if (o.token_expires_at) tok.append(el("span", { class: "at" }, t("op.token_title", { at: cstTime(o.token_expires_at) })));
  tr.append(name, state, ageCell("push", t("op.push"), o.last_push, asOf),
    ageCell("pull", t("op.pull"), o.last_pull, asOf), failures, tok,
    el("td", { "data-role": "connectors", "data-label": t("op.connectors") }, o.connectors.toLocaleString("en-US")));
  return tr;
}

// One row per operator the API lists (none: the section stays hidden). Operators carry no city
// in /v1/status, so the list is the same whichever city is chosen.
function renderOperators(data) {
  const ops = data.operators || [];
  const section = document.getElementById("operators-section");
  section.hidden = ops.length === 0;
  document.body.dataset.operators = String(ops.length);
  const table = document.getElementById("operators");
  const head = el("tr");
  for (const key of ["op.operator", "op.health", "op.push", "op.pull", "op.failures", "op.token", "op.connectors"]) {
    head.append(el("th", { scope: "col" }, t(key)));
  }
  table.tHead.replaceChildren(head);
  table.tBodies[0].replaceChildren(...ops.map((o) => operatorRow(o, data.as_of)));
}

// --- the whole page ---------------------------------------------------------------------------

function paint(data) {
  const asOf = document.getElementById("as-of");
  asOf.textContent = cstTime(data.as_of);
  asOf.setAttribute("datetime", data.as_of);
  document.getElementById("version").textContent = String(data.version);
  renderPipeline(data.pipeline, data.refresh_s);
  renderBanner(data);
  renderMap(data);
  renderTargets(data);
  renderReported();
  renderGrid(data);
  renderOperators(data);
}

// A key limited to some cities sees no province-wide figures: the page opens on its first city.
function wholeProvince(data) {
  return data.coverage.length === 0 || (data.coverage[0].area.length === 1 && data.coverage[0].area[0] === PROVINCE);
}

function render(data) {
  if (data.version <= state.version) return;
  state.version = data.version;
  state.data = data;
  if (!wholeProvince(data) && !data.coverage[0].area.includes(state.city)) {
    state.city = data.coverage[0].area[0];
    document.body.dataset.city = state.city;
  }
  document.body.dataset.version = String(data.version);
  paint(data);
  loadTrajectories(false);
  loadReported(false);
}

function live(mode) {
  document.getElementById("live-dot").dataset.state = mode;
  const text = document.getElementById("live-text");
  text.dataset.i18n = "live." + mode;
  text.textContent = t("live." + mode);
  document.body.dataset.live = mode;
}

// One question at a time: requests refused together (the charts load in parallel) all wait
// for the same answer.
function askForKey(message) {
  const form = document.getElementById("key-form");
  document.getElementById("key-error").textContent = message || "";
  if (state.asking) return state.asking;
  form.hidden = false;
  document.getElementById("key-input").focus();
  state.asking = new Promise((resolve) => {
    form.onsubmit = (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(KEY_ITEM, document.getElementById("key-input").value.trim());
      form.hidden = true;
      state.asking = null;
      resolve();
    };
  });
  return state.asking;
}

// cache: "no-store" for the status and its event stream; "no-cache" where the answer has an
// ETag (/v1/trajectories): the browser revalidates with If-None-Match and reuses its copy on 304.
async function authorized(url, cache = "no-store") {
  for (;;) {
    const resp = await fetch(url, { headers: headers(), cache });
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
  window.qiluCharts = {};
  window.qiluI18n = I18N;
  applyLanguage();
  document.body.dataset.city = PROVINCE;
  document.getElementById("lang").addEventListener("click", switchLanguage);
  document.getElementById("clear-city").addEventListener("click", () => {
    const code = state.city;
    if (!code) return;
    chooseCity(code);
    document.querySelector(`#province-map .ctile[data-city="${code}"]`).focus();
  });
  loadReported(true); // not waiting for the first snapshot: the figures are the database's
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
