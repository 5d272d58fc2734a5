// The page at /: ask, watch the answer stream in, cancel, reopen recent jobs.

import { api, apiKey, describe, NetworkError, ProblemError } from "./api.js";
import { JobStream } from "./stream.js";

const FINAL = new Set(["succeeded", "failed", "cancelled", "expired"]);
const RECENT_PAGE = 10;
const QUEUE_POLL_MS = 1000;
const FINAL_POLL_MS = 1000;

const $ = (id) => document.getElementById(id);
const ui = {
  form: $("ask-form"), question: $("question"), topK: $("top-k"), ask: $("ask-button"),
  cancel: $("cancel-button"), problem: $("problem"), problemText: $("problem-text"),
  problemFields: $("problem-fields"), problemRetry: $("problem-retry"), job: $("job"),
  jobQuestion: $("job-question"), status: $("job-status"), badge: $("cache-badge"),
  answer: $("answer"), sourcesSection: $("sources-section"), sources: $("sources"),
  recent: $("recent"), recentEmpty: $("recent-empty"), recentMore: $("recent-more"),
  keyButton: $("key-button"), keyDialog: $("key-dialog"), keyForm: $("key-form"),
  keyInput: $("key-input"), keyReason: $("key-reason"),
};

const state = { job: null, stream: null, queuePoll: null, countdown: null, recentJobs: [],
                recentNext: 0, afterKey: null, reconnecting: false };

// ---- problems ---------------------------------------------------------------------------

function showProblem(error, retry) {
  clearProblem();
  ui.problemText.textContent = describe(error);
  for (const field of error.problem?.errors ?? []) {
    const item = document.createElement("li");
    item.textContent = `${field.field === "query" ? "question" : field.field}: ${field.message}`;
    ui.problemFields.append(item);
  }
  ui.problem.hidden = false;
  if (error instanceof ProblemError && error.status === 401) {
    askForKey(error.problem.detail, retry);
  } else if (error instanceof ProblemError && error.retryAfter !== null) {
    countDown(error.retryAfter);
  }
}

function countDown(seconds) {
  let left = Math.ceil(seconds);
  ui.ask.disabled = true;
  ui.problemRetry.hidden = false;
  const tick = () => {
    if (left <= 0) {
      clearInterval(state.countdown);
      state.countdown = null;
      ui.problemRetry.textContent = "You can ask again now.";
      ui.ask.disabled = false;
      return;
    }
    ui.problemRetry.textContent = `You can ask again in ${left} s.`;
    left -= 1;
  };
  tick();
  state.countdown = setInterval(tick, 1000);
}

function clearProblem() {
  clearInterval(state.countdown);
  state.countdown = null;
  ui.problem.hidden = true;
  ui.problemText.textContent = "";
  ui.problemFields.replaceChildren();
  ui.problemRetry.hidden = true;
  ui.ask.disabled = false;
}

// ---- the API key ------------------------------------------------------------------------

function askForKey(reason, then) {
  state.afterKey = then ?? null;
  ui.keyButton.hidden = false;
  if (ui.keyDialog.open) return;  // already asking (several requests got their 401)
  ui.keyReason.textContent = apiKey.get()
    ? `The key in use was refused (${reason || "unknown key"}). Enter another one.`
    : "This service needs an API key.";
  ui.keyInput.value = "";
  ui.keyDialog.showModal();
}

function keySaved() {
  if (ui.keyDialog.returnValue !== "save" || !ui.keyInput.value.trim()) return;
  apiKey.set(ui.keyInput.value.trim());
  clearProblem();
  const then = state.afterKey;
  state.afterKey = null;
  if (then !== loadRecent) loadRecent();
  if (then) then();
}

// ---- the job on show --------------------------------------------------------------------

function openJob(job) {
  state.stream?.stop();
  stopQueuePoll();
  state.job = job;
  history.replaceState(null, "", `#job=${encodeURIComponent(job.id)}`);
  ui.job.hidden = false;
  ui.jobQuestion.textContent = job.query;
  ui.answer.textContent = "";
  ui.answer.classList.remove("partial");
  ui.sources.replaceChildren();
  ui.sourcesSection.hidden = true;
  showBadge(job);
  showStatus(job);
  markRecent(job.id);
  ui.answer.setAttribute("aria-busy", String(!FINAL.has(job.status)));
  ui.job.dataset.streaming = "true";
  state.stream = new JobStream(job.id, {
    event: onEvent,
    ended: (reason) => onEnded(job.id, reason),
    reconnecting: (attempt, delay) => {
      state.reconnecting = true;
      ui.status.textContent = `Connection lost; reconnecting in ${Math.round(delay / 100) / 10}` +
        ` s (attempt ${attempt}). Nothing already shown is lost.`;
    },
    refused: (error) => showProblem(error, () => reopen(job.id)),
  }).start();
}

async function reopen(jobId) {
  try {
    openJob(await api.get(jobId));
  } catch (error) {
    showProblem(error, () => reopen(jobId));
  }
}

function onEvent(event) {
  const job = state.job;
  if (!job || event.job_id !== job.id) return;
  if (state.reconnecting) {
    state.reconnecting = false;
    showStatus(job);
  }
  if (event.type === "token") {
    appendToken(event);
  } else if (event.type === "sources") {
    showSources(event.sources, false);
  } else if (event.type === "status") {
    job.status = event.status;
    job.attempt = event.attempt;
    showStatus(job, event);
  } else if (event.type === "done" || event.type === "error") {
    finish(event.job);
  }
}

function appendToken(event) {
  ui.answer.append(event.text);
  const trace = window.ragqTrace;
  if (Array.isArray(trace)) {  // bench/page_latency.py: event emitted -> text in the page
    const shown = { seq: event.seq, emitted: event.ts * 1000,
                    inserted: performance.timeOrigin + performance.now(), painted: null };
    trace.push(shown);
    requestAnimationFrame(() => { shown.painted = performance.timeOrigin + performance.now(); });
  }
  if (state.job.status === "queued") {
    state.job.status = "running";
    showStatus(state.job);
  }
}

async function onEnded(jobId, reason) {
  if (reason === "done") return;
  if (reason === "gone") {
    showProblem(new Error("This job is no longer kept by the service."));
    return;
  }
  // "closed": nothing was left to replay; "trimmed": the events cannot be replayed in order,
  // so the record tells the outcome, once the job has one.
  try {
    let job = await api.get(jobId);
    while (!FINAL.has(job.status) && state.job?.id === jobId) {
      ui.status.textContent = "Answering… (its live events are no longer kept: the answer " +
        "appears when it is done)";
      await new Promise((resolve) => setTimeout(resolve, FINAL_POLL_MS));
      job = await api.get(jobId);
    }
    if (state.job?.id === jobId) finish(job);
  } catch (error) {
    showProblem(error, () => reopen(jobId));
  }
}

function finish(job) {
  stopQueuePoll();
  state.job = job;
  const answer = job.result?.answer ?? "";
  if (ui.answer.textContent.trim() !== answer.trim()) ui.answer.textContent = answer;
  ui.answer.setAttribute("aria-busy", "false");
  ui.job.dataset.streaming = "false";
  ui.answer.classList.toggle("partial", job.status === "cancelled");
  if (job.result?.sources) showSources(job.result.sources, true);
  showBadge(job);
  showStatus(job);
  if (job.status === "failed") {
    showProblem(new Error(`The job failed: ${job.error?.message ?? "no reason given"}.`));
  }
  loadRecent();
}

function showStatus(job, event = null) {
  const running = !FINAL.has(job.status);
  ui.cancel.hidden = !running;
  ui.cancel.disabled = false;
  const metrics = job.metrics ?? {};
  const text = {
    queued: () => queuedText(job),
    running: () => (event?.redelivered
      ? `Running again (attempt ${job.attempt}): the worker that had it was lost.`
      : "Answering…"),
    succeeded: () => (job.cached ? "Answered from the cache."
      : `Answered in ${seconds(job.finished_at - job.created_at)}` +
        (metrics.generated_tokens ? `, ${metrics.generated_tokens} tokens.` : ".")),
    cancelled: () => "Cancelled: the partial answer is kept.",
    failed: () => "Failed.",
    expired: () => "Expired: it waited in the queue too long and never ran.",
  }[job.status];
  ui.status.textContent = text ? text() : job.status;
  if (job.status === "queued") startQueuePoll(job.id);
}

function queuedText(job) {
  if (!job.queue_position) return "Queued.";
  const perJob = typicalRunSeconds();
  const wait = perJob ? `; estimated wait about ${seconds(job.queue_position * perJob)}` : "";
  return `Queued: position ${job.queue_position}${wait}.`;
}

function typicalRunSeconds() {
  // the median run time of the caller's recent jobs that ran (the service gives no estimate)
  const runs = state.recentJobs
    .filter((job) => job.status === "succeeded" && !job.cached && job.started_at)
    .map((job) => job.finished_at - job.started_at)
    .sort((a, b) => a - b);
  return runs.length ? runs[Math.floor(runs.length / 2)] : null;
}

function seconds(value) {
  return value < 10 ? `${value.toFixed(1)} s` : `${Math.round(value)} s`;
}

function startQueuePoll(jobId) {
  if (state.queuePoll) return;
  state.queuePoll = setInterval(async () => {
    try {
      const job = await api.get(jobId);
      if (state.job?.id !== jobId || state.job.status !== "queued") return stopQueuePoll();
      state.job.queue_position = job.queue_position;
      if (job.status === "queued") ui.status.textContent = queuedText(job);
    } catch (error) {
      if (!(error instanceof NetworkError)) stopQueuePoll();
    }
  }, QUEUE_POLL_MS);
}

function stopQueuePoll() {
  clearInterval(state.queuePoll);
  state.queuePoll = null;
}

function showBadge(job) {
  ui.badge.hidden = !job.cached;
  if (!job.cached) return;
  const how = job.cache_path === "semantic" ? "a similar question" : "the same question";
  ui.badge.textContent = `From the cache: ${how} (similarity ${job.similarity.toFixed(2)})` +
    `, “${job.cached_question}”`;
}

function showSources(sources, final) {
  ui.sources.replaceChildren(...sources.map((source) => sourceItem(source, final)));
  ui.sourcesSection.hidden = sources.length === 0;
}

function sourceItem(source, final) {
  const item = document.createElement("li");
  const title = document.createElement("strong");
  title.textContent = source.title;
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = ` ${source.chunk_id} · score ${source.score.toFixed(3)}`;
  item.append(title, meta);
  if (final && source.cited) {
    const cited = document.createElement("span");
    cited.className = "cited";
    cited.textContent = " · cited";
    item.append(cited);
  }
  const details = document.createElement("details");
  const summary = document.createElement("summary");
  summary.textContent = "Show the passage";
  const passage = document.createElement("blockquote");
  passage.textContent = source.text ?? "";
  details.append(summary, passage);
  item.append(details);
  return item;
}

// ---- asking and cancelling --------------------------------------------------------------

async function ask() {
  const query = ui.question.value.trim();
  const topK = Number(ui.topK.value) || undefined;
  clearProblem();
  ui.ask.disabled = true;
  try {
    openJob(await api.submit(query, topK));
  } catch (error) {
    showProblem(error, ask);
    return;
  } finally {
    if (!state.countdown) ui.ask.disabled = false;
  }
  loadRecent();
}

async function cancel() {
  const job = state.job;
  if (!job) return;
  ui.cancel.disabled = true;
  ui.status.textContent = "Cancelling…";
  try {
    await api.cancel(job.id);  // the stream's done event brings the final record
  } catch (error) {
    ui.cancel.disabled = false;
    showProblem(error, cancel);
  }
}

// ---- recent jobs ------------------------------------------------------------------------

async function loadRecent(more = false) {
  const offset = more ? state.recentNext : 0;
  let page;
  try {
    page = await api.list(offset, RECENT_PAGE);
  } catch (error) {
    if (error instanceof ProblemError && error.status === 401) showProblem(error, loadRecent);
    return;
  }
  state.recentJobs = more ? state.recentJobs.concat(page.jobs) : page.jobs;
  state.recentNext = page.offset + page.jobs.length;
  ui.recent.replaceChildren(...state.recentJobs.map(recentItem));
  ui.recentEmpty.hidden = state.recentJobs.length > 0;
  ui.recentMore.hidden = !page.next;
  if (state.job) markRecent(state.job.id);
}

function recentItem(job) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.jobId = job.id;
  const query = document.createElement("span");
  query.className = "q";
  query.textContent = job.query;
  const status = document.createElement("span");
  status.className = "s";
  const when = new Date(job.created_at * 1000).toLocaleTimeString();
  status.textContent = `${job.cached ? "cached" : job.status} · ${when}`;
  button.append(query, status);
  button.addEventListener("click", () => { clearProblem(); reopen(job.id); });
  item.append(button);
  return item;
}

function markRecent(jobId) {
  for (const button of ui.recent.querySelectorAll("button")) {
    button.setAttribute("aria-current", String(button.dataset.jobId === jobId));
  }
}

// ---- wiring -----------------------------------------------------------------------------

ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!ui.ask.disabled) ask();
});
ui.question.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.form.requestSubmit();
  }
});
ui.cancel.addEventListener("click", cancel);
ui.recentMore.addEventListener("click", () => loadRecent(true));
ui.keyButton.addEventListener("click", () => askForKey(null, null));
ui.keyDialog.addEventListener("close", keySaved);
window.addEventListener("online", () => state.stream?.reconnectNow());

ui.keyButton.hidden = !apiKey.get();
const opened = new URLSearchParams(location.hash.slice(1)).get("job");
loadRecent();
if (opened) reopen(opened);
