// One job: its progress, its exports (JSOC request ids and statuses) and its files (filtered
// by state, failed ones with their errors), with the pause/resume/cancel/retry actions.

import { api } from "./api.js";
import {
  ago, bytes, duration, emptyRow, h, progressBar, rate, stateBadge, table, utc,
} from "./dom.js";
import { describeSpec, jobPath, lagSamples, progressOf, remember } from "./store.js";
import { lagChart } from "./views.js";

const PAGE = 100;
const FILE_STATES = ["", "pending", "downloading", "done", "failed", "skipped"];
const ACTIONS = {
  pause: ["queued", "running"],
  resume: ["paused"],
  cancel: ["queued", "running", "paused"],
  retry: ["failed", "completed_with_errors", "running", "paused"],
};

function counts(title, byState) {
  const entries = Object.entries(byState ?? {}).filter(([, n]) => n);
  return h("div", { class: "counts" }, h("strong", {}, `${title}: `),
    entries.length ? entries.map(([s, n]) => h("span", { class: `count state-${s}` }, `${s} ${n}`))
      : "none");
}

function summary(d) {
  const p = progressOf(d);
  const facts = [
    ["Progress", progressBar(p.fraction, "job progress")],
    ["Bytes", `${bytes(d.bytes_done)} of ${bytes(d.bytes_total)}`],
    ["Rate", rate(d.rate_bytes_per_s)],
    ["ETA", duration(d.eta_seconds)],
    ["Created", `${utc(d.created_at)} (${ago(d.created_at)})`],
    ["Finished", d.finished_at ? utc(d.finished_at) : "—"],
  ];
  if (d.follow) {
    facts.push(["Behind JSOC", duration(d.behind_seconds)], ["Lag over time", lagChart(lagSamples(d.id))],
      ["Covered until", d.covered_until ?? "—"], ["JSOC until", d.jsoc_until ?? "—"],
      ["Next check", ago(d.next_check_at)]);
  }
  const errors = d.recent_errors?.length
    ? h("ul", { class: "events" }, d.recent_errors.map((e) =>
      h("li", { class: e.level }, `${utc(e.at)} ${e.kind}: ${e.message}`)))
    : null;
  return [
    h("dl", { class: "facts" }, facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    counts("Files", d.files), counts("Exports", d.exports), counts("Chunks", d.chunks),
    d.error ? h("p", { class: "bad job-error" }, d.error) : null,
    errors ? [h("h3", {}, "Recent errors"), errors] : null,
  ];
}

function exportRow(e) {
  const total = e.files_open + e.files_done + e.files_failed + e.files_skipped;
  return h("tr", { class: "export", dataset: { exportId: e.id, state: e.state } },
    h("td", {}, e.id), h("td", { class: "request-id" }, e.request_id ?? "—"),
    h("td", {}, stateBadge(e.state)), h("td", { class: "num" }, e.jsoc_status ?? "—"),
    h("td", {}, e.method ?? "—"), h("td", {}, `${e.start_time ?? "?"} → ${e.end_time ?? "?"}`),
    h("td", { class: "num" }, `${e.files_done} / ${total}`),
    h("td", { title: utc(e.submitted_at) }, ago(e.submitted_at)),
    h("td", { title: utc(e.expires_at) }, e.expires_at ? ago(e.expires_at) : "—"),
    h("td", { class: "bad" }, e.error ?? ""));
}

function fileRow(f) {
  const size = f.size_expected ?? 0;
  return h("tr", { class: "file", dataset: { fileId: f.id, state: f.state } },
    h("td", {}, f.id), h("td", {}, f.record), h("td", {}, f.segment ?? ""),
    h("td", {}, stateBadge(f.state)),
    h("td", { class: "num" }, size ? `${bytes(f.bytes_done)} / ${bytes(size)}` : bytes(f.bytes_done)),
    h("td", { class: "num" }, f.attempts), h("td", { class: "path" }, f.dest_path),
    h("td", { class: "bad" }, f.error ?? ""));
}

/** Prev/next buttons over an offset-paginated list. */
function pager(onChange) {
  const state = { offset: 0, next: null };
  const prev = h("button", { type: "button", onclick: () => go(Math.max(0, state.offset - PAGE)) }, "◀ Previous");
  const next = h("button", { type: "button", onclick: () => go(state.next) }, "Next ▶");
  const where = h("span", { class: "where" });
  function go(offset) {
    state.offset = offset;
    onChange();
  }
  return {
    el: h("div", { class: "pager" }, prev, where, next),
    get offset() { return state.offset; },
    reset() { state.offset = 0; },
    update(page) {
      state.next = page.next_offset;
      prev.disabled = state.offset === 0;
      next.disabled = page.next_offset === null;
      where.textContent = page.items.length
        ? `${state.offset + 1}–${state.offset + page.items.length}` : "";
    },
  };
}

function actionBar(jobId, onDone) {
  const message = h("span", { class: "action-message", role: "status" });
  const buttons = Object.keys(ACTIONS).map((action) => h("button", {
    type: "button", class: `action action-${action}`, dataset: { action },
    onclick: async (ev) => {
      if (action === "cancel" && !confirm(`Cancel job ${jobId}? Its open work is dropped.`)) return;
      ev.currentTarget.disabled = true;
      try {
        const job = await api(`${jobPath(jobId)}/${action}`, { method: "POST" });
        message.textContent = `${action}: job is now ${job.state}`;
        message.className = "action-message ok";
      } catch (err) {
        message.textContent = `${action} refused: ${err.detail || err.message}`;
        message.className = "action-message bad";
      }
      onDone();
    },
  }, action === "retry" ? "Retry failed" : action[0].toUpperCase() + action.slice(1)));
  return {
    el: h("div", { class: "actions" }, buttons, message),
    update(state) {
      for (const b of buttons) b.disabled = !ACTIONS[b.dataset.action].includes(state);
    },
  };
}

export function jobView(root, jobId, refreshNow) {
  const title = h("h2", {}, "Job ", h("code", {}, jobId), " ");
  const badge = h("span", { class: "badge" });
  const spec = h("p", { class: "spec" });
  const actions = actionBar(jobId, refreshNow);
  const info = h("section", { class: "summary" });
  const [exportsTable, exportBody] = table("exports", ["#", "JSOC request", "State", "Status",
    "Method", "Time range", "Files done", "Submitted", "Expires", "Error"]);
  const [filesTable, fileBody] = table("files", ["#", "Record", "Segment", "State", "Bytes",
    "Attempts", "Path", "Error"]);
  const filter = h("select", { id: "file-state", "aria-label": "file state",
    onchange: () => { files.reset(); refreshNow(); } },
  FILE_STATES.map((s) => h("option", { value: s }, s || "all states")));
  const exportsPager = pager(refreshNow);
  const files = pager(refreshNow);
  title.append(badge);
  root.append(h("p", {}, h("a", { href: "#/" }, "← all jobs")), title, spec, actions.el, info,
    h("h3", {}, "Exports"), exportsTable, exportsPager.el,
    h("h3", {}, "Files ", h("label", {}, "state ", filter)), filesTable, files.el);
  return {
    async refresh() {
      const state = filter.value ? `&state=${filter.value}` : "";
      const [d, ex, fl] = await Promise.all([
        api(jobPath(jobId)).then(remember),
        api(`${jobPath(jobId)}/exports?limit=${PAGE}&offset=${exportsPager.offset}`),
        api(`${jobPath(jobId)}/files?limit=${PAGE}&offset=${files.offset}${state}`),
      ]);
      badge.replaceChildren(stateBadge(d.state));
      spec.textContent = describeSpec(d.spec);
      actions.update(d.state);
      info.replaceChildren(...summary(d).flat().filter(Boolean));
      exportBody.replaceChildren(...(ex.items.length ? ex.items.map(exportRow)
        : [emptyRow(10, "No export yet.")]));
      exportsPager.update(ex);
      fileBody.replaceChildren(...(fl.items.length ? fl.items.map(fileRow)
        : [emptyRow(8, filter.value ? `No ${filter.value} file.` : "No file listed yet.")]));
      files.update(fl);
    },
  };
}
