// The overview pages: jobs, mirrors, workers, politeness. Each view builds its frame once and
// replaces only its data rows on refresh(), so controls keep their state between polls.

import { api } from "./api.js";
import {
  ago, bytes, duration, emptyRow, h, progressBar, rate, stateBadge, svg, table, utc,
} from "./dom.js";
import { describeSpec, jobDetail, lagSamples, progressOf } from "./store.js";

const JOB_PAGE = 50;
const JOB_STATES = ["", "queued", "running", "paused", "succeeded", "completed_with_errors",
  "failed", "cancelled"];

function jobLink(id) {
  return h("a", { href: `#/jobs/${encodeURIComponent(id)}`, class: "job-link" }, id);
}

function errorsCell(d) {
  const last = d.recent_errors?.[0];
  const failed = d.files?.failed ?? 0;
  if (!last && !failed && !d.error) return h("td", { class: "errors" }, "—");
  const text = d.error ?? last?.message ?? "";
  return h("td", { class: "errors bad", title: text },
    failed ? `${failed} failed file${failed === 1 ? "" : "s"} ` : "",
    h("span", { class: "msg" }, text));
}

function jobRow(d) {
  const p = progressOf(d);
  return h("tr", { class: "job", dataset: { jobId: d.id, state: d.state } },
    h("td", {}, jobLink(d.id), d.follow ? h("span", { class: "tag" }, "mirror") : null),
    h("td", { class: "spec" }, describeSpec(d.spec)),
    h("td", {}, stateBadge(d.state)),
    h("td", { class: "progress-cell" }, progressBar(p.fraction, `job ${d.id} progress`),
      h("div", { class: "sub" },
        `${p.done} / ${p.total} files · ${bytes(d.bytes_done)} / ${bytes(d.bytes_total)}`)),
    h("td", { class: "num" }, rate(d.rate_bytes_per_s)),
    h("td", { class: "num" }, d.follow ? `lag ${duration(d.behind_seconds)}` : duration(d.eta_seconds)),
    errorsCell(d),
    h("td", { title: utc(d.created_at) }, ago(d.created_at)));
}

/** Details of listed jobs; a job deleted meanwhile is left out. */
async function detailsOf(jobs) {
  const rows = await Promise.all(jobs.map((job) => jobDetail(job).catch((err) => {
    if (err.status === 404) return null;
    throw err;
  })));
  return rows.filter(Boolean);
}

export function jobsView(root) {
  const [tableEl, body] = table("jobs", ["Job", "Query", "State", "Progress", "Rate", "ETA",
    "Errors", "Created"]);
  const filter = h("select", { id: "job-state", "aria-label": "job state" },
    JOB_STATES.map((s) => h("option", { value: s }, s ? s.replaceAll("_", " ") : "all states")));
  const more = h("p", { class: "hint" });
  filter.addEventListener("change", () => body.replaceChildren());
  root.append(h("h2", {}, "Jobs ", h("label", {}, "state ", filter)), tableEl, more);
  return {
    async refresh() {
      const state = filter.value ? `&state=${filter.value}` : "";
      const page = await api(`/jobs?limit=${JOB_PAGE}${state}`);
      const rows = await detailsOf(page.items);
      body.replaceChildren(...(rows.length ? rows.map(jobRow)
        : [emptyRow(8, filter.value ? `No ${filter.value.replaceAll("_", " ")} job.`
          : "No jobs yet: submit one with `jsoc-bulk submit` or POST /api/v1/jobs.")]));
      more.textContent = page.next_offset === null ? ""
        : `Only the newest ${JOB_PAGE} are shown: filter by state, or page through GET /api/v1/jobs.`;
    },
  };
}

/** An SVG line of lag samples over time (newest on the right). */
export function lagChart(samples, width = 260, height = 48) {
  const chart = svg("svg", { class: "lag-chart", width, height, viewBox: `0 0 ${width} ${height}`,
    role: "img", "aria-label": "lag over time" });
  if (samples.length < 2) {
    chart.append(svg("text", { x: 4, y: height / 2 + 4 }, "collecting samples…"));
    return chart;
  }
  const t0 = samples[0].t;
  const span = Math.max(1, samples.at(-1).t - t0);
  const top = Math.max(1, ...samples.map((s) => s.v));
  const points = samples.map((s) => {
    const x = ((s.t - t0) / span) * (width - 2) + 1;
    const y = height - 2 - (s.v / top) * (height - 14);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  chart.append(svg("polyline", { points: points.join(" ") }),
    svg("text", { x: 4, y: 10 }, `max ${duration(top)} over ${duration(span / 1000)}`));
  return chart;
}

function mirrorRow(d) {
  return h("tr", { class: "mirror", dataset: { jobId: d.id, state: d.state } },
    h("td", {}, jobLink(d.id)), h("td", { class: "spec" }, describeSpec(d.spec)),
    h("td", {}, stateBadge(d.state)),
    h("td", { class: "num behind" }, duration(d.behind_seconds)),
    h("td", {}, lagChart(lagSamples(d.id))),
    h("td", {}, d.covered_until ?? "—"), h("td", {}, d.jsoc_until ?? "—"),
    h("td", { title: utc(d.last_check_at) }, ago(d.last_check_at)),
    h("td", { title: utc(d.next_check_at) }, ago(d.next_check_at)));
}

export function mirrorsView(root) {
  const [tableEl, body] = table("mirrors", ["Job", "Query", "State", "Behind JSOC",
    "Lag over time", "Covered until", "JSOC until", "Last check", "Next check"]);
  root.append(h("h2", {}, "Mirrors"),
    h("p", { class: "hint" }, "Lag is how far the mirror's complete coverage trails JSOC's ",
      "newest record; the chart holds the samples this page has taken since it was opened."),
    tableEl);
  return {
    async refresh() {
      const page = await api("/jobs?limit=500");
      const mirrors = await detailsOf(page.items.filter((j) => j.follow));
      body.replaceChildren(...(mirrors.length ? mirrors.map(mirrorRow)
        : [emptyRow(9, "No mirrors: a job with \"follow\": true keeps following its series.")]));
    },
  };
}

function holdingText(holding) {
  const parts = Object.entries(holding ?? {}).filter(([, ids]) => ids.length)
    .map(([kind, ids]) => `${kind}: ${ids.length} (${ids.slice(0, 5).join(", ")}${ids.length > 5 ? ", …" : ""})`);
  return parts.length ? parts.join("; ") : "idle";
}

function workerRow(w) {
  return h("tr", { class: "worker", dataset: { workerId: w.id, alive: w.alive } },
    h("td", {}, w.id), h("td", {}, `${w.hostname} · pid ${w.pid}`),
    h("td", {}, h("span", { class: `state ${w.alive ? "state-running" : "state-failed"}` },
      w.stopped_at ? "stopped" : w.alive ? "alive" : "silent")),
    h("td", { title: utc(w.heartbeat_at) }, ago(w.heartbeat_at)),
    h("td", { title: utc(w.started_at) }, ago(w.started_at)),
    h("td", { class: "holding" }, holdingText(w.holding)));
}

export function workersView(root) {
  const [tableEl, body] = table("workers", ["Worker", "Where", "Status", "Heartbeat", "Started",
    "Holding"]);
  root.append(h("h2", {}, "Workers"), tableEl);
  return {
    async refresh() {
      const list = await api("/workers");
      body.replaceChildren(...(list.items.length ? list.items.map(workerRow)
        : [emptyRow(6, "No worker has registered yet.")]));
    },
  };
}

function loadRow(name, used, limit, what) {
  return h("tr", { class: used > limit ? "over" : "", dataset: { name } },
    h("td", {}, name),
    h("td", {}, h("meter", { min: 0, max: limit, value: used, "aria-label": what })),
    h("td", { class: "num" }, `${used} / ${limit}`));
}

export function politenessView(root) {
  const [emails, emailBody] = table("emails", ["Notify email", "", "Pending exports / limit"]);
  const [hosts, hostBody] = table("hosts", ["Download host", "", "Connections / limit"]);
  root.append(h("h2", {}, "Politeness"),
    h("p", { class: "hint" }, "JSOC's limits, counted across every worker from the database: ",
      "pending exports per notify email, and download connections held per host."),
    h("h3", {}, "Exports per email"), emails, h("h3", {}, "Connections per host"), hosts);
  return {
    async refresh() {
      const p = await api("/politeness");
      emailBody.replaceChildren(...(p.emails.length
        ? p.emails.map((e) => loadRow(e.email, e.pending_exports, e.limit, "pending exports"))
        : [emptyRow(3, "No export submitted yet.")]));
      hostBody.replaceChildren(...(p.hosts.length
        ? p.hosts.map((x) => loadRow(x.host, x.active_connections, x.limit, "connections"))
        : [emptyRow(3, "No download host known yet.")]));
    },
  };
}
