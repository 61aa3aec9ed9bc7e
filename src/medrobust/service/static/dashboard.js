// medrobust dashboard: sign in with an API token, upload evaluations, follow them live, open
// their results. Plain ES2020, no dependencies, no build step (see docs/service.md for the API).
//
// Safety: everything that comes from the user or the server (file names, classes, stage
// names, error messages) is inserted with textContent / createElement, never as HTML. The
// report documents themselves go into an <iframe sandbox=""> (no scripts, opaque origin).
// The token lives in sessionStorage and travels only in the Authorization header.
"use strict";

const API = "/api/v1";
const TOKEN_KEY = "medrobust.token";
const POLL_MS = 10000;      // list refresh, a fallback for the event streams
const RECONNECT_MS = 3000;  // wait before reopening a dropped event stream
const ACTIVE = new Set(["queued", "running"]);

const state = {
  token: null,
  jobs: new Map(),      // id -> job JSON
  streams: new Map(),   // id -> AbortController of the job's event stream
  selected: new Set(),  // ids of done jobs ticked for compare
  deleted: new Set(),   // ids deleted here (the server may list them a moment longer)
  seen: new Map(),      // id -> arrival rank: orders jobs created in the same second
  total: 0,
  poll: null,
  xhr: null,            // the upload in flight
  viewerDoc: null,      // {text, type} shown in the viewer, for "open in new tab"
  viewerOpener: null,   // the button that opened the viewer (focus returns there)
  bannerJob: null,      // id of the job the "Job ... queued" message follows (until it finishes)
  guards: new Map(),    // id of a done job -> {definition} | {unavailable: sentence} | {pending: true}
};

const $ = (selector) => document.querySelector(selector);

/** createElement with attributes; "text" sets textContent, "on*" adds listeners. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) if (child !== null && child !== undefined && child !== false) node.append(child);
  return node;
}

class ApiError extends Error {
  constructor(detail) { super(Array.isArray(detail) ? detail.join("; ") : detail); this.detail = detail; }
}
class SignedOut extends Error {}

// ---------------------------------------------------------------- messages and formatting

/** Show an error (or info) in #message: a string, or a list of lines. null hides it. */
function showMessage(content, kind = "error") {
  const box = $("#message");
  state.bannerJob = null;  // any other message replaces a job's banner
  box.replaceChildren();
  box.className = `message ${kind}`;
  box.hidden = !content || (Array.isArray(content) && !content.length);
  if (box.hidden) return;
  if (Array.isArray(content)) box.append(el("ul", {}, ...content.map((line) => el("li", { text: line }))));
  else box.textContent = content;
}

/** The server's `detail`: a sentence, or FastAPI's validation list of {loc, msg}. */
function detailOf(body, fallback) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((item) => {
      if (typeof item !== "object" || item === null) return String(item);
      const where = (item.loc || []).filter((part) => part !== "body").join(" → ");
      const msg = item.msg ?? JSON.stringify(item);
      return where ? `${where}: ${msg}` : String(msg);
    });
  }
  if (detail) return JSON.stringify(detail);
  return fallback;
}

async function errorOf(response) {
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  return detailOf(body, `the service answered ${response.status} ${response.statusText}`.trim());
}

function reportError(error) {
  if (error instanceof SignedOut || error.name === "AbortError") return;
  showMessage(error instanceof ApiError ? error.detail : `request failed: ${error.message}`);
}

function formatEta(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds) || seconds < 0) return null;
  if (seconds < 60) return `about ${Math.max(5, Math.round(seconds / 5) * 5)} s`;
  if (seconds < 90 * 60) return `about ${Math.round(seconds / 60)} min`;
  return `about ${(seconds / 3600).toFixed(1)} h`;
}

function formatBytes(n) {
  const units = ["B", "kB", "MB", "GB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function formatTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

const jobPath = (id, suffix = "") => `/jobs/${encodeURIComponent(id)}${suffix}`;
/** How a job is named on the page: its name, else its model on its images. */
const jobTitle = (job) => job.name || `${job.model_file || "model"} on ${job.images_file || "images"}`;
/** 1 -> "1st", 2 -> "2nd", 11 -> "11th", 23 -> "23rd". */
function ordinal(n) {
  const teen = n % 100 >= 11 && n % 100 <= 13;
  return `${n}${teen ? "th" : { 1: "st", 2: "nd", 3: "rd" }[n % 10] || "th"}`;
}

/** The banner's text for a job it follows; null once the job has finished (the banner goes). */
function bannerText(job) {
  const name = `Job ${job.id} (${jobTitle(job)})`;
  if (job.status === "queued") {
    return job.queue_position ? `${name} queued: ${ordinal(job.queue_position)} in the queue.` : `${name} queued.`;
  }
  if (job.status === "running") return `${name} running${job.stage ? `: ${job.stage}` : ""}.`;
  return null;
}

/** Show the banner of a job just submitted; it follows the job and goes when the job finishes. */
function showBanner(job) {
  showMessage(bannerText(job), "info");
  state.bannerJob = job.id;
}

function updateBanner(job) {
  if (state.bannerJob !== job.id) return;
  const text = bannerText(job);
  if (text === null) { showMessage(null); return; }
  $("#message").textContent = text;
}

// ---------------------------------------------------------------- requests

function authHeaders(extra = {}) {
  return { ...extra, Authorization: `Bearer ${state.token}` };
}

/** fetch() an /api/v1 path with the token; a 401 signs out (the token was revoked). */
async function api(path, options = {}) {
  const response = await fetch(API + path, { cache: "no-store", ...options, headers: authHeaders(options.headers) });
  if (response.status === 401 && state.token) {
    signOut(await errorOf(response));
    throw new SignedOut();
  }
  return response;
}

async function apiOk(path, options) {
  const response = await api(path, options);
  if (!response.ok) throw new ApiError(await errorOf(response));
  return response;
}

/** Run an async button action with the button disabled and errors shown. */
async function busy(button, action) {
  button.disabled = true;
  try { await action(); } catch (error) { reportError(error); } finally { button.disabled = false; }
}

// ---------------------------------------------------------------- sign in / out

async function signIn(token, silent = false) {
  let response;
  try {
    response = await fetch(`${API}/jobs?limit=50`, { cache: "no-store", headers: { Authorization: `Bearer ${token}` } });
  } catch (error) {
    showMessage(`cannot reach the service: ${error.message}`);
    return;
  }
  if (!response.ok) {
    const detail = await errorOf(response);
    sessionStorage.removeItem(TOKEN_KEY);
    showMessage(silent ? "Your session ended: sign in again." : detail, silent ? "info" : "error");
    return;
  }
  const data = await response.json();
  state.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("#token").value = "";
  showMessage(null);
  $("#signin-section").hidden = true;
  $("#app").hidden = false;
  $("#session").hidden = false;
  applyList(data);
  state.poll = setInterval(refresh, POLL_MS);
  showTenant();
}

// "signed in as acme · 1 of 2 jobs running · 0.1 of 50 GiB stored" (GET /api/v1/me)
async function showTenant() {
  try {
    const response = await fetch(`${API}/me`, { cache: "no-store", headers: { Authorization: `Bearer ${state.token}` } });
    if (!response.ok) return;
    const me = await response.json();
    const gib = (n) => (n / 2 ** 30).toFixed(n < 2 ** 30 ? 2 : 1);
    $("#session-label").textContent = `signed in as ${me.tenant} · ${me.active_jobs} of ${me.max_active_jobs} jobs ` +
      `queued or running · ${gib(me.stored_bytes)} of ${gib(me.max_stored_bytes)} GiB stored`;
  } catch (error) {
    // the label is a convenience: the rest of the page works without it
  }
}

function signOut(message = null) {
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  clearInterval(state.poll);
  state.poll = null;
  for (const controller of state.streams.values()) controller.abort();
  if (state.xhr) state.xhr.abort();
  state.streams.clear();
  countStreams();
  state.jobs.clear();
  state.selected.clear();
  state.deleted.clear();
  state.seen.clear();
  state.guards.clear();
  closeViewer();
  $("#jobs").replaceChildren();
  $("#upload-form").reset();
  $("#upload-status").hidden = true;
  $("#app").hidden = true;
  $("#session").hidden = true;
  $("#signin-section").hidden = false;
  showMessage(message, "info");
  $("#token").focus();
}

// ---------------------------------------------------------------- jobs: state and live updates

async function refresh() {
  if (!state.token) return;
  try {
    const response = await apiOk("/jobs?limit=50");
    applyList(await response.json());
    showTenant();
  } catch (error) { reportError(error); }
}

/** Merge the newest page of jobs into the state; jobs no longer listed are dropped. */
function applyList(data) {
  const jobs = (data.jobs || []).filter((job) => !state.deleted.has(job.id));
  state.total = data.total ?? jobs.length;
  const listed = new Set(jobs.map((job) => job.id));
  // The server lists newest first: rank unseen jobs oldest first, so a higher rank is newer.
  for (const job of [...jobs].reverse()) if (!state.seen.has(job.id)) state.seen.set(job.id, state.seen.size);
  for (const id of [...state.jobs.keys()]) if (!listed.has(id)) forget(id);
  for (const job of jobs) upsert(job);
  renderList();
}

function upsert(job) {
  if (!job || !job.id || state.deleted.has(job.id)) return;
  state.jobs.set(job.id, job);
  updateBanner(job);
  if (!state.seen.has(job.id)) state.seen.set(job.id, state.seen.size);
  if (job.status !== "done") state.selected.delete(job.id);
  if (ACTIVE.has(job.status) && !state.streams.has(job.id)) follow(job.id);
}

/** Publish the number of open event streams (#jobs[data-streams], for tests and debugging). */
function countStreams() {
  $("#jobs").dataset.streams = String(state.streams.size);
}

function forget(id) {
  if (state.bannerJob === id) showMessage(null);
  state.jobs.delete(id);
  state.guards.delete(id);
  state.selected.delete(id);
  const controller = state.streams.get(id);
  if (controller) controller.abort();
  state.streams.delete(id);
  countStreams();
}

async function refreshJob(id) {
  try {
    const response = await api(jobPath(id));
    if (response.status === 404) forget(id);
    else if (response.ok) upsert(await response.json());
    renderList();
  } catch (error) { reportError(error); }
}

/** Parse a Server-Sent Events body: frames split on blank lines, `event:`/`data:` fields, `:` comments. */
async function readEvents(body, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    // Normalise CRLF / CR to LF, except a trailing CR whose LF may be in the next chunk.
    const tail = buffer.endsWith("\r") ? "\r" : "";
    buffer = buffer.slice(0, buffer.length - tail.length).replace(/\r\n?/g, "\n") + tail;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of frame.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "event") event = text;
        else if (field === "data") data.push(text);
      }
      if (data.length || event !== "message") onEvent(event, data.join("\n"));
    }
  }
}

/** Follow one job's event stream (fetch, since EventSource cannot send the token). */
async function follow(id) {
  const controller = new AbortController();
  state.streams.set(id, controller);
  countStreams();
  let finished = false;
  try {
    const response = await fetch(API + jobPath(id, "/events"), {
      cache: "no-store", signal: controller.signal, headers: authHeaders({ Accept: "text/event-stream" }),
    });
    if (response.status === 401) { signOut(await errorOf(response)); return; }
    if (response.status === 404) { forget(id); renderList(); return; }
    if (!response.ok || !response.body) throw new Error(`events answered ${response.status}`);
    await readEvents(response.body, (event, data) => {
      if (event === "job") {
        const job = JSON.parse(data);
        upsert(job);
        renderList();
        if (!ACTIVE.has(job.status)) finished = true;
      } else if (event === "end") {
        finished = true;
      }
    });
  } catch (error) {
    if (controller.signal.aborted) return;  // signed out, deleted, or forgotten
    console.warn(`events of job ${id}: ${error.message}`);
  } finally {
    if (state.streams.get(id) === controller) state.streams.delete(id);
    countStreams();
  }
  if (controller.signal.aborted || !state.token || !state.jobs.has(id)) return;
  if (finished) { refreshJob(id); return; }  // the final state, with its headline
  // The stream dropped while the job is still queued or running: reopen it soon.
  setTimeout(() => {
    const job = state.jobs.get(id);
    if (state.token && job && ACTIVE.has(job.status) && !state.streams.has(id)) follow(id);
  }, RECONNECT_MS);
}

// ---------------------------------------------------------------- jobs: rendering

function renderList() {
  const list = $("#jobs");
  // Newest first; `created` has whole seconds, so ties go to the later arrival.
  const jobs = [...state.jobs.values()].sort((a, b) =>
    String(b.created || "").localeCompare(String(a.created || "")) || state.seen.get(b.id) - state.seen.get(a.id));
  const rows = new Map([...list.children].map((row) => [row.dataset.jobId, row]));
  for (const [id, row] of rows) if (!state.jobs.has(id)) row.remove();
  jobs.forEach((job, index) => {
    let row = rows.get(job.id);
    const key = JSON.stringify(job);
    if (!row || row.dataset.key !== key) {  // rebuild a row only when its job changed
      const fresh = renderRow(job);
      fresh.dataset.key = key;
      if (row) row.replaceWith(fresh); else list.append(fresh);
      row = fresh;
    }
    if (list.children[index] !== row) list.insertBefore(row, list.children[index]);
  });
  $("#jobs-empty").hidden = jobs.length > 0;
  $("#jobs-count").textContent = state.total > jobs.length ? `(newest ${jobs.length} of ${state.total})` : `(${jobs.length})`;
  updateCompare();
}

function renderRow(job) {
  const row = el("li", { class: `job job-${job.status}`, "data-job-id": job.id, "data-testid": "job" });
  const head = el("div", { class: "job-head" });
  if (job.status === "done") {
    const box = el("input", { type: "checkbox", class: "compare-select", id: `compare-${job.id}` });
    box.checked = state.selected.has(job.id);
    box.addEventListener("change", () => {
      if (box.checked) state.selected.add(job.id); else state.selected.delete(job.id);
      updateCompare();
    });
    head.append(box, el("label", { for: box.id, class: "visually-hidden", text: `select job ${job.id} to compare` }));
  }
  head.append(...[  // append(null) would insert the text "null"
    el("span", { class: `status badge badge-${job.status}`, text: job.status }),
    job.name ? el("strong", { class: "job-name", text: job.name })
      : el("span", { class: "job-files" }, el("strong", { text: job.model_file || "model" }), " on ", el("strong", { text: job.images_file || "images" })),
    job.model_version ? el("span", { class: "job-version", text: `version ${job.model_version}` }) : null,
    el("code", { class: "job-id", title: "the job's id in the API", text: job.id }),
  ].filter(Boolean));
  row.append(head);
  row.append(el("div", { class: "job-meta" },
    job.name ? el("span", { text: `${job.model_file || "model"} on ${job.images_file || "images"}` }) : null,
    el("span", { text: `preset: ${job.preset || "custom configuration"}` }),
    el("span", { text: `created: ${formatTime(job.created)}` }),
    job.finished ? el("span", { text: `finished: ${formatTime(job.finished)}` }) : null,
    typeof job.image_files === "number" ? el("span", { text: `image files: ${job.image_files}` }) : null,
    Array.isArray(job.classes) && job.classes.length ? el("span", { text: `classes: ${job.classes.join(", ")}` }) : null));
  if (ACTIVE.has(job.status)) row.append(progressBlock(job));
  if (ACTIVE.has(job.status) && job.cancel_requested) row.append(el("p", { class: "note", text: "cancel requested: stopping" }));
  if (job.status === "failed" && job.error) {
    row.append(el("p", { class: "job-error", text: job.failed_stage ? `failed in stage ${job.failed_stage}: ${job.error}` : job.error }));
  }
  for (const list of [fileList("skipped", job.skipped, "skipped"), fileList("ignored", job.ignored_files, "ignored")]) {
    if (list) row.append(list);  // append(null) would insert the text "null"
  }
  if (job.status === "done" && job.headline) {
    row.append(headlineBlock(job.headline));
    const notTested = (job.headline.not_tested || []).map((item) => (typeof item === "string" ? item : item.text || ""));
    if (notTested.length) {
      row.append(el("details", { class: "files not-tested" },
        el("summary", { text: `not tested: ${notTested.length} item${notTested.length === 1 ? "" : "s"}` }),
        el("ul", {}, ...notTested.map((text) => el("li", { text })))));
    }
  }
  if (job.status === "done") row.append(guardBlock(job));
  row.append(actionsBlock(job));
  return row;
}

function progressBlock(job) {
  const box = el("div", { class: "progress" });
  if (job.status === "queued" && !job.stage) {
    const place = job.queue_position ? `: ${ordinal(job.queue_position)} in the queue` : "";
    box.append(el("span", { class: "stage queue-position", text: `waiting for a worker${place}` }));
    return box;
  }
  const done = job.stage_done ?? 0;
  const total = job.stage_total;
  const fraction = typeof job.fraction === "number" ? job.fraction : total ? done / total : null;
  box.append(el("div", { class: "stage" },
    el("span", { class: "stage-name", text: job.stage || "starting" }),
    total ? el("span", { class: "stage-count", text: ` ${done}/${total}` }) : null));
  const bar = el("progress", { max: "1", "aria-label": `progress of the current stage` });
  if (fraction !== null) bar.value = Math.min(1, Math.max(0, fraction));  // no value: indeterminate
  box.append(bar);
  const parts = [];
  if (fraction !== null) parts.push(`${Math.round(fraction * 100)}%`);
  const eta = formatEta(job.eta_seconds);
  if (eta) parts.push(`${eta} left in this stage`);
  const stages = job.stages_finished ?? 0;
  parts.push(`${stages} stage${stages === 1 ? "" : "s"} finished`);
  box.append(el("div", { class: "progress-text", text: parts.join(" · ") }));
  return box;
}

/** A collapsible count of files (skipped images, ignored archive members); null when none. */
function fileList(kind, files, verb) {
  if (!Array.isArray(files) || !files.length) return null;
  const describe = (f) => (typeof f === "string" ? f
    : [f.path || f.file || f.name || JSON.stringify(f), f.reason].filter(Boolean).join(": "));
  return el("details", { class: `files files-${kind}` },
    el("summary", { text: `${files.length} file${files.length === 1 ? "" : "s"} ${verb}` }),
    el("ul", {}, ...files.slice(0, 200).map((f) => el("li", { text: describe(f) }))));
}

/** "50.0 / 100": the score big, its scale " / 100" smaller. */
function overallScore(text) {
  const match = /^(.*?)(\s*\/\s*\d+)$/.exec(text);
  if (!match) return el("span", { class: "overall-score", text });
  return el("span", { class: "overall-score" }, match[1], el("span", { class: "scale", text: match[2] }));
}

function headlineBlock(headline) {
  return el("div", { class: "headline" },
    el("div", { class: "overall" },
      overallScore(String(headline.overall ?? "—")),
      el("span", { class: "overall-label", text: "overall robustness score" })),
    el("ul", { class: "rows" }, ...(headline.rows || []).map((row) =>
      el("li", {}, el("span", { class: "label", text: `${row.label}: ` }), el("strong", { text: row.score ?? "—" })))));
}

// ---------------------------------------------------------------- serve this guard

/** "Serve this guard": the run's guard (GET /jobs/ID/guard, read once per job): its figures in
 * one line, the exact `medrobust guard serve` command and guard.yaml; or why there is none. */
function guardBlock(job) {
  const box = el("section", { class: "guard", "aria-label": `serve the guard of job ${job.id}` },
    el("h3", { text: "Serve this guard" }));
  const known = state.guards.get(job.id);
  if (!known || known.pending) {
    box.append(el("p", { class: "note guard-loading", text: "reading the run's guard…" }));
    if (!known) loadGuard(job.id);
    return box;
  }
  if (known.unavailable) {
    box.classList.add("guard-none");
    box.append(el("p", { class: "guard-unavailable", text: known.unavailable }));
    return box;
  }
  const guard = known.definition;
  const others = (guard.defense.evaluated || []).filter((spec) => spec !== guard.defense.chosen);
  box.append(
    el("p", { class: "guard-figures", text: `Evaluated: ${guard.summary}` }),
    el("p", { class: "note", text: "On the service's host, where the run folder is (the guard reads the model there):" }),
    el("pre", { class: "guard-command", title: "click to select the whole command" }, el("code", { text: guard.command })));
  if ((guard.detectors || []).some((d) => d.calibration_required)) {
    box.append(el("p", { class: "note guard-calibration", text: "DIR: a folder of clean images like those the guard " +
      "will see. The run cross-fitted its squeeze threshold (one per fold), so there is none to serve without them." }));
  }
  if (others.length) {
    box.append(el("p", { class: "note", text: `The run also evaluated ${others.join(", ")}: serve one with --defense SPEC.` }));
  }
  const download = el("button", { type: "button", class: "download-guard", text: "guard.yaml" });
  download.addEventListener("click", () => busy(download, () => downloadGuard(job)));
  box.append(el("div", { class: "job-actions" }, download));
  return box;
}

async function loadGuard(id) {
  state.guards.set(id, { pending: true });
  let known = null;
  try {
    const response = await api(jobPath(id, "/guard"));
    if (response.ok) known = { definition: await response.json() };
    else if (response.status === 409) known = { unavailable: `Nothing to serve: ${await errorOf(response)}` };
    else if (response.status !== 404) known = { unavailable: await errorOf(response) };
  } catch (error) {
    if (error instanceof SignedOut) return;
    known = { unavailable: `The run's guard could not be read: ${error.message}` };
  }
  if (!known) { state.guards.delete(id); return; }  // the job is gone: its row goes with the next refresh
  state.guards.set(id, known);
  const job = state.jobs.get(id);
  const old = document.querySelector(`#jobs [data-job-id="${CSS.escape(id)}"] .guard`);
  if (job && old) old.replaceWith(guardBlock(job));
}

async function downloadGuard(job) {
  const response = await apiOk(jobPath(job.id, "/guard.yaml"));
  const url = URL.createObjectURL(await response.blob());
  const link = el("a", { href: url, download: "guard.yaml", hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

function actionsBlock(job) {
  const box = el("div", { class: "job-actions" });
  const button = (cls, text, handler) => {
    const b = el("button", { type: "button", class: cls, text });
    b.addEventListener("click", () => busy(b, () => handler(b)));
    box.append(b);
  };
  if (job.status === "done") {
    button("open-report", "report", (b) => showDocument(job, "report", "Report", b));
    button("open-statement", "statement", (b) => showDocument(job, "statement", "Statement", b));
    button("open-scorecard", "scorecard JSON", (b) => showScorecard(job, b));
    button("download-artifacts", "artifacts.zip", () => downloadArtifacts(job));
  }
  if (ACTIVE.has(job.status)) {
    button("cancel", "cancel", () => cancelJob(job));
    if (job.cancel_requested) box.lastChild.disabled = true;
  }
  else button("delete danger", "delete", () => deleteJob(job));
  return box;
}

// ---------------------------------------------------------------- job actions

async function showDocument(job, kind, label, opener) {
  const response = await apiOk(jobPath(job.id, `/${kind}`));
  openViewer(`${label}: job ${job.id} (${jobTitle(job)})`, await response.text(), "text/html", opener);
}

async function showScorecard(job, opener) {
  const response = await apiOk(jobPath(job.id, "/scorecard"));
  const text = JSON.stringify(await response.json(), null, 2);
  // Build the viewer's page with the DOM, so the JSON is escaped by the serializer.
  const doc = document.implementation.createHTMLDocument("scorecard.json");
  doc.body.append(el("pre", { style: "white-space: pre-wrap; font: 13px/1.4 monospace", text }));
  openViewer(`Scorecard JSON: job ${job.id}`, "<!DOCTYPE html>" + doc.documentElement.outerHTML, "text/html", opener,
    { text, type: "application/json" });
}

async function downloadArtifacts(job) {
  const response = await apiOk(jobPath(job.id, "/artifacts.zip"));
  const url = URL.createObjectURL(await response.blob());
  const link = el("a", { href: url, download: `medrobust-${job.id}.zip`, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

async function cancelJob(job) {
  const response = await api(jobPath(job.id, "/cancel"), { method: "POST" });
  if (response.status === 409) {  // it finished meanwhile: show its final state
    showMessage(await errorOf(response), "info");
    await refreshJob(job.id);
    return;
  }
  if (!response.ok) throw new ApiError(await errorOf(response));
  upsert(await response.json());
  renderList();
}

async function deleteJob(job) {
  if (!window.confirm(`Delete job ${job.id} (${jobTitle(job)}) and all its files?`)) return;
  const response = await api(jobPath(job.id), { method: "DELETE" });
  if (!response.ok && response.status !== 404) throw new ApiError(await errorOf(response));
  state.deleted.add(job.id);
  forget(job.id);
  state.total = Math.max(0, state.total - 1);
  renderList();
}

function updateCompare() {
  const button = $("#compare");
  const count = state.selected.size;
  button.disabled = count !== 2;
  button.textContent = count ? `compare (${count} selected)` : "compare";
}

async function compareSelected() {
  const [a, b] = [...state.selected];
  const response = await apiOk(`${jobPath(a)}/compare/${encodeURIComponent(b)}`);
  openViewer(`Comparison: job ${a} and job ${b}`, await response.text(), "text/html", $("#compare"));
}

// ---------------------------------------------------------------- viewer

function openViewer(title, html, type, opener = null, download = null) {
  $("#viewer-title").textContent = title;
  const frame = $("#viewer-frame");
  frame.title = title;
  frame.srcdoc = html;  // sandbox="": no scripts, opaque origin
  state.viewerDoc = download || { text: html, type };
  state.viewerOpener = opener;
  $("#viewer").hidden = false;
  document.body.classList.add("viewing");
  $("#viewer-close").focus();
}

function closeViewer() {
  if ($("#viewer").hidden) return;
  $("#viewer").hidden = true;
  $("#viewer-frame").srcdoc = "";
  document.body.classList.remove("viewing");
  state.viewerDoc = null;
  if (state.viewerOpener && state.viewerOpener.isConnected) state.viewerOpener.focus();
  state.viewerOpener = null;
}

/** Add a Content-Security-Policy that forbids scripts: a Blob URL page has our origin. */
function withoutScripts(html) {
  const meta = `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data: blob:; style-src 'unsafe-inline'; font-src data:">`;
  const head = /<head[^>]*>/i.exec(html);
  if (!head) return meta + html;
  const at = head.index + head[0].length;
  return html.slice(0, at) + meta + html.slice(at);
}

function openInNewTab() {
  const doc = state.viewerDoc;
  if (!doc) return;
  const text = doc.type === "text/html" ? withoutScripts(doc.text) : doc.text;
  const url = URL.createObjectURL(new Blob([text], { type: `${doc.type};charset=utf-8` }));
  // noopener: the new tab gets neither a handle on this page nor a copy of its sessionStorage.
  const link = el("a", { href: url, target: "_blank", rel: "noopener noreferrer", hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

// ---------------------------------------------------------------- upload

function showUploadProgress(loaded, total) {
  $("#upload-status").hidden = false;
  const bar = $("#upload-progress");
  if (total) {
    bar.value = loaded / total;
    $("#upload-text").textContent = `${formatBytes(loaded)} of ${formatBytes(total)} (${Math.round((100 * loaded) / total)}%)`;
  } else {
    bar.removeAttribute("value");
    $("#upload-text").textContent = `${formatBytes(loaded)} sent`;
  }
}

function submitUpload(event) {
  event.preventDefault();
  const form = event.target;
  const model = $("#model").files[0];
  const images = $("#images").files[0];
  if (!model || !images) { showMessage("Choose a model file and an images archive."); return; }
  const data = new FormData();
  data.append("model", model);
  data.append("images", images);
  const classes = $("#classes").value.split(",").map((c) => c.trim()).filter(Boolean).join(",");
  if (classes) data.append("classes", classes);
  const pairs = $("#class_map").value.split(",").map((p) => p.trim()).filter(Boolean).join(",");
  if (pairs) data.append("class_map", pairs);
  for (const name of ["name", "model_version", "input_size", "window", "intensity", "output_kind", "normal_class"]) {
    const value = form.elements[name].value.trim();
    if (value) data.append(name, value);  // empty optional fields are not sent
  }
  const config = $("#config").value;
  if (config.trim()) data.append("config", config); else data.append("preset", $("#preset").value || "quick");

  const xhr = new XMLHttpRequest();  // XHR rather than fetch: it reports upload progress
  state.xhr = xhr;
  const submit = $("#submit");
  submit.disabled = true;
  showMessage(null);
  showUploadProgress(0, model.size + images.size);
  const done = () => { submit.disabled = false; if (state.xhr === xhr) state.xhr = null; };
  xhr.open("POST", `${API}/jobs`);
  xhr.setRequestHeader("Authorization", `Bearer ${state.token}`);
  xhr.upload.onprogress = (e) => showUploadProgress(e.loaded, e.lengthComputable ? e.total : null);
  xhr.onload = () => {
    done();
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
    if (xhr.status === 401) { signOut(detailOf(body, "The token was refused: sign in again.")); return; }
    if (xhr.status < 200 || xhr.status >= 300) {
      $("#upload-status").hidden = true;
      showMessage(detailOf(body, `upload refused: ${xhr.status} ${xhr.statusText}`));
      return;
    }
    $("#upload-text").textContent = "uploaded";
    setTimeout(() => { if (!state.xhr) $("#upload-status").hidden = true; }, 4000);
    if (body && body.id) {
      showBanner(body);
      upsert(body);
      state.total += 1;
      renderList();
    } else refresh();
  };
  xhr.onerror = () => { done(); $("#upload-status").hidden = true; showMessage("The upload failed: the connection to the service broke."); };
  xhr.onabort = () => { done(); $("#upload-status").hidden = true; };
  xhr.send(data);
}

// ---------------------------------------------------------------- wiring

document.addEventListener("DOMContentLoaded", () => {
  $("#signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("#token").value.trim();
    if (!token) { showMessage("Enter your API token."); return; }
    busy($("#signin"), () => signIn(token));
  });
  $("#signout").addEventListener("click", () => signOut("Signed out."));
  $("#upload-form").addEventListener("submit", submitUpload);
  $("#refresh").addEventListener("click", (e) => busy(e.currentTarget, refresh));
  $("#compare").addEventListener("click", (e) => busy(e.currentTarget, compareSelected));
  $("#viewer-close").addEventListener("click", closeViewer);
  $("#viewer-open").addEventListener("click", openInNewTab);
  $("#viewer").addEventListener("click", (e) => { if (e.target === e.currentTarget) closeViewer(); });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeViewer(); });
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved, true);
  else $("#token").focus();
});
