// What the page remembers between polls: job details (final jobs are fetched once) and the
// lag samples of mirrors (a small in-page history; nothing is stored on the server).

import { api } from "./api.js";

export const FINAL = new Set(["succeeded", "completed_with_errors", "failed", "cancelled"]);
export const ACTIVE = new Set(["queued", "running", "paused"]);
const MAX_SAMPLES = 720; // an hour at one sample per 5 s, 24 min at 2 s
const details = new Map();
const lag = new Map(); // job id -> [{t: ms, v: behind_seconds}]

export function jobPath(id) {
  return `/jobs/${encodeURIComponent(id)}`;
}

/** The job's detail; a final job seen in the same state before is not fetched again. */
export async function jobDetail(job) {
  const cached = details.get(job.id);
  if (cached && FINAL.has(cached.state) && cached.state === job.state) return cached;
  return remember(await api(jobPath(job.id)));
}

export function remember(detail) {
  details.set(detail.id, detail);
  if (detail.follow && detail.behind_seconds !== null && detail.behind_seconds !== undefined) {
    const samples = lag.get(detail.id) ?? [];
    samples.push({ t: Date.now(), v: detail.behind_seconds });
    if (samples.length > MAX_SAMPLES) samples.splice(0, samples.length - MAX_SAMPLES);
    lag.set(detail.id, samples);
  }
  return detail;
}

export function lagSamples(jobId) {
  return lag.get(jobId) ?? [];
}

/** Files by state summed, and the fraction done (by bytes when sizes are known). */
export function progressOf(d) {
  const f = d.files ?? {};
  const total = Object.values(f).reduce((a, b) => a + b, 0);
  const finished = (f.done ?? 0) + (f.skipped ?? 0) + (f.failed ?? 0);
  let fraction = 0;
  if (d.state === "succeeded") fraction = 1;
  else if (d.bytes_total > 0) fraction = d.bytes_done / d.bytes_total;
  else if (total > 0) fraction = finished / total;
  return { total, done: f.done ?? 0, failed: f.failed ?? 0, fraction };
}

export function describeSpec(spec) {
  if (!spec) return "";
  if (spec.recordset) return spec.recordset;
  const range = spec.end ? `${spec.start} → ${spec.end}` : `${spec.start} → (following)`;
  return `${spec.series} ${range}`;
}
