// ragq's job API over fetch: the caller's key from sessionStorage, refusals as ProblemError.

const KEY_STORAGE = "ragq.apiKey";

export class ProblemError extends Error {
  // A refusal with its RFC 9457 problem (type, title, detail, request_id, errors) and
  // Retry-After in seconds (null when the service sent none).
  constructor(status, problem, retryAfter) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.retryAfter = retryAfter;
  }
}

export class NetworkError extends Error {}

export const apiKey = {
  get: () => sessionStorage.getItem(KEY_STORAGE),
  set: (key) => sessionStorage.setItem(KEY_STORAGE, key),
  clear: () => sessionStorage.removeItem(KEY_STORAGE),
};

async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  const key = apiKey.get();
  if (key) headers["X-API-Key"] = key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new NetworkError("The service cannot be reached: check the connection and retry.");
  }
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;  // a proxy's HTML error page, say: described below from the status
  }
  if (response.ok) return parsed;
  const problem = parsed && typeof parsed === "object"
    ? parsed : { title: response.statusText, detail: text.slice(0, 200) };
  throw new ProblemError(response.status, problem,
                         retryAfterSeconds(response.headers.get("Retry-After")));
}

function retryAfterSeconds(value) {
  const seconds = Number(value);
  return value && Number.isFinite(seconds) ? Math.max(0, seconds) : null;
}

const job = (id) => `/v1/jobs/${encodeURIComponent(id)}`;

export const api = {
  submit: (query, topK) => call("POST", "/v1/jobs", { query, top_k: topK }),
  get: (id) => call("GET", job(id)),
  list: (offset, limit) => call("GET", `/v1/jobs?offset=${offset}&limit=${limit}`),
  cancel: (id) => call("POST", `${job(id)}/cancel`),
  ticket: () => call("POST", "/v1/ws-tickets"),
};

// One readable sentence (or two) for a refusal, for people rather than programs.
export function describe(error) {
  if (!(error instanceof ProblemError)) return error.message;
  const { status, problem } = error;
  const detail = problem.detail ? `: ${problem.detail}` : "";
  const reference = problem.request_id ? ` (request ${problem.request_id})` : "";
  const kind = (problem.type || "").replace("/problems/", "");
  if (status === 401) return `The service did not accept the API key${detail}.`;
  if (status === 404) return "That job does not exist, or belongs to another API key.";
  if (status === 422) return "The question was not accepted:";
  if (kind === "queue-full") return `The service is busy${detail}.`;
  if (kind === "budget-exceeded") return `The spending limit is reached${detail}.`;
  if (status === 503) return `The service is unavailable for a moment${detail}.`;
  if (status >= 500) return `Something went wrong on the server${reference}.`;
  return `${problem.title || "Refused"}${detail}${reference}.`;
}
