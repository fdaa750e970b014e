// DOM building (text is always set as text, never parsed as HTML) and number formatting.

const SVG_NS = "http://www.w3.org/2000/svg";

/** h("td", {class: "x", dataset: {id: 1}}, "text", child) → element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  return fill(el, attrs, children);
}

export function svg(tag, attrs = {}, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

function fill(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

export function bytes(n) {
  if (n === null || n === undefined) return "—";
  let value = Number(n);
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(value < 10 ? 2 : 1)} ${UNITS[unit]}`;
}

export function rate(bytesPerSecond) {
  return bytesPerSecond === null || bytesPerSecond === undefined ? "—" : `${bytes(bytesPerSecond)}/s`;
}

/** 75 → "1 min 15 s"; 5400 → "1 h 30 min"; null → "—". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** An ISO time as "YYYY-MM-DD HH:MM:SSZ" (UTC), or "—". */
export function utc(iso) {
  if (!iso) return "—";
  return new Date(iso).toISOString().replace("T", " ").slice(0, 19) + "Z";
}

/** "12 s ago" / "in 3 s" relative to now. */
export function ago(iso) {
  if (!iso) return "—";
  const delta = (Date.now() - new Date(iso).getTime()) / 1000;
  return delta >= 0 ? `${duration(delta)} ago` : `in ${duration(-delta)}`;
}

export function stateBadge(state) {
  return h("span", { class: `state state-${state}`, dataset: { state } }, state.replaceAll("_", " "));
}

/** A <progress> bar with its percentage as text beside it. */
export function progressBar(fraction, label) {
  const pct = Math.max(0, Math.min(1, fraction || 0)) * 100;
  return h("span", { class: "progress" },
    h("progress", { max: 100, value: pct.toFixed(1), "aria-label": label }),
    h("span", { class: "pct" }, `${Math.floor(pct)}%`));
}

/** A table with a header row; returns [table, tbody]. */
export function table(className, headings) {
  const tbody = h("tbody");
  const el = h("table", { class: className },
    h("thead", {}, h("tr", {}, headings.map((t) => h("th", { scope: "col" }, t)))), tbody);
  return [el, tbody];
}

export function emptyRow(columns, text) {
  return h("tr", { class: "empty" }, h("td", { colspan: columns }, text));
}
