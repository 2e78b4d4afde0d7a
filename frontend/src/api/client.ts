// A small typed client for the gateway's REST API (types generated from its OpenAPI document).
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];
export type Model = Schemas["Model"];
export type Sae = Schemas["Sae"];
export type SaeDetail = Schemas["SaeDetail"];
export type FeaturePage = Schemas["FeaturePage"];
export type FeatureSummary = Schemas["FeatureSummary"];
export type Feature = Schemas["Feature"];
export type ActivationRequest = Schemas["ActivationRequest"];
export type ActivationResponse = Schemas["ActivationResponse"];
export type TokenMatch = Schemas["TokenMatch"];
export type Job = Schemas["Job"];
export type JobState = Job["state"];
export type TrainingJobRequest = Schemas["TrainingJobRequest"];
export type AnalysisJobRequest = Schemas["AnalysisJobRequest"];
export type Problem = Schemas["Problem"];
export type GraphSummary = Schemas["GraphSummary"];
export type Graph = Schemas["Graph"];
export type GraphNode = Schemas["GraphNode"];
export type GraphLink = Schemas["GraphLink"];
export type GraphLogit = Schemas["GraphLogit"];
export type CircuitList = Schemas["CircuitList"];
export type TraceRequest = Schemas["TraceRequest"];
export type FeatureChange = Schemas["FeatureChange"];
export type InterventionRequest = Schemas["InterventionRequest"];
export type InterventionResult = Schemas["InterventionResult"];
export type TokenLogit = Schemas["TokenLogit"];
export type AttentionRequest = Schemas["AttentionRequest"];
export type AttentionExplanation = Schemas["AttentionExplanation"];
export type NodeContribution = Schemas["NodeContribution"];
export type NodePair = Schemas["NodePair"];
export type Explanation = Schemas["Explanation"];
export type ExplanationScore = Schemas["ExplanationScore"];
export type SearchHit = Schemas["SearchHit"];
export type SearchResults = Schemas["SearchResults"];
export type ScoreDistribution = Schemas["ScoreDistribution"];
export type SaeEvals = Schemas["SaeEvals"];
export type EvalMetrics = Schemas["EvalMetrics"];
export type EvalDensity = Schemas["DensityHistogram"];
export type Universality = Schemas["Universality"];
export type SyntheticResult = Schemas["SyntheticResult"];
export type FeatureNeighbour = Schemas["FeatureNeighbour"];
export type NeighbourKind = FeatureNeighbour["kind"];
export type NeighbourPage = Schemas["NeighbourPage"];
export type FeatureSort = NonNullable<
  NonNullable<paths["/api/v1/saes/{sae_id}/features"]["get"]["parameters"]["query"]>["sort"]
>;
export type SortOrder = "asc" | "desc";

export const API_BASE = "/api/v1";
export const TOKEN_KEY = "lm-saes-token";

export function getToken(): string {
  try {
    return localStorage.getItem(TOKEN_KEY) ?? "";
  } catch {
    return "";
  }
}

export function setToken(token: string): void {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

/** An RFC 7807 problem answered by the gateway (or a network failure, status 0). */
export class ApiError extends Error {
  readonly status: number;
  readonly title: string;
  readonly detail: string;
  readonly field: string | null;

  constructor(problem: { status: number; title: string; detail?: string; field?: string | null }) {
    super(problem.detail || problem.title);
    this.name = "ApiError";
    this.status = problem.status;
    this.title = problem.title;
    this.detail = problem.detail ?? "";
    this.field = problem.field ?? null;
  }
}

type Query = Record<string, string | number | boolean | null | undefined>;

function url(path: string, query?: Query): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
  }
  const qs = params.toString();
  return `${API_BASE}${path}${qs ? `?${qs}` : ""}`;
}

async function problemOf(response: Response): Promise<ApiError> {
  let body: Partial<Problem> | null = null;
  try {
    body = (await response.json()) as Partial<Problem>;
  } catch {
    body = null;
  }
  return new ApiError({
    status: typeof body?.status === "number" ? body.status : response.status,
    title: body?.title || response.statusText || `HTTP ${response.status}`,
    detail: body?.detail ?? "",
    field: body?.field ?? null,
  });
}

/** fetch with the stored API token; a problem answer or a network failure becomes an ApiError. */
async function send(
  method: "GET" | "POST",
  path: string,
  accept: string,
  options: { query?: Query; body?: unknown; signal?: AbortSignal } = {},
): Promise<Response> {
  const headers: Record<string, string> = { Accept: `${accept}, application/problem+json` };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  let response: Response;
  try {
    response = await fetch(url(path, options.query), {
      method,
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      signal: options.signal,
    });
  } catch (error) {
    throw networkError(error, "could not reach the gateway");
  }
  if (!response.ok) throw await problemOf(response);
  return response;
}

function networkError(error: unknown, what: string): unknown {
  if ((error as Error).name === "AbortError") return error;
  return new ApiError({ status: 0, title: "Network error", detail: `${what}: ${String(error)}` });
}

export async function request<T>(
  method: "GET" | "POST",
  path: string,
  options: { query?: Query; body?: unknown; signal?: AbortSignal } = {},
): Promise<T> {
  const response = await send(method, path, "application/json", options);
  return (await response.json()) as T;
}

const enc = encodeURIComponent;

export const api = {
  models: (signal?: AbortSignal) => request<Model[]>("GET", "/models", { signal }),
  saes: (model?: string, signal?: AbortSignal) => request<Sae[]>("GET", "/saes", { query: { model }, signal }),
  sae: (saeId: string, signal?: AbortSignal) => request<SaeDetail>("GET", `/saes/${enc(saeId)}`, { signal }),
  features: (
    saeId: string,
    query: { sort?: FeatureSort; order?: SortOrder; offset?: number; limit?: number },
    signal?: AbortSignal,
  ) => request<FeaturePage>("GET", `/saes/${enc(saeId)}/features`, { query, signal }),
  feature: (saeId: string, index: number, signal?: AbortSignal) =>
    request<Feature>("GET", `/saes/${enc(saeId)}/features/${index}`, { signal }),
  /** Feature search by meaning (explanations nearest `q`), across SAEs or within `saeId`. */
  search: (q: string, options: { k?: number; saeId?: string } = {}, signal?: AbortSignal) =>
    request<SearchResults>("GET", "/search", { query: { q, k: options.k, sae_id: options.saeId }, signal }),
  /** A histogram of the SAE's explanation scores. */
  scores: (saeId: string, signal?: AbortSignal) =>
    request<ScoreDistribution>("GET", `/saes/${enc(saeId)}/scores`, { signal }),
  /** A page of the SAE's features with their stored neighbours (in `partner`, of `kind`). */
  neighbours: (
    saeId: string,
    query: {
      partner?: string;
      kind?: NeighbourKind;
      sort?: FeatureSort;
      order?: SortOrder;
      offset?: number;
      limit?: number;
    },
    signal?: AbortSignal,
  ) => request<NeighbourPage>("GET", `/saes/${enc(saeId)}/neighbours`, { query, signal }),
  searchToken: (saeId: string, token: string, limit = 20, signal?: AbortSignal) =>
    request<TokenMatch[]>("GET", `/saes/${enc(saeId)}/search`, { query: { token, limit }, signal }),
  activations: (saeId: string, body: ActivationRequest, signal?: AbortSignal) =>
    request<ActivationResponse>("POST", `/saes/${enc(saeId)}/activations`, { body, signal }),
  jobs: (kind?: string, signal?: AbortSignal) => request<Job[]>("GET", "/jobs", { query: { kind }, signal }),
  job: (jobId: string, signal?: AbortSignal) => request<Job>("GET", `/jobs/${enc(jobId)}`, { signal }),
  submitTraining: (body: TrainingJobRequest) => request<Job>("POST", "/jobs/training", { body }),
  submitAnalysis: (body: AnalysisJobRequest) => request<Job>("POST", "/jobs/analysis", { body }),
  cancelJob: (jobId: string) => request<Job>("POST", `/jobs/${enc(jobId)}/cancel`),
  circuits: (signal?: AbortSignal) => request<CircuitList>("GET", "/circuits", { signal }),
  circuit: (graphId: string, signal?: AbortSignal) => request<Graph>("GET", `/circuits/${enc(graphId)}`, { signal }),
  /** circuit-tracer / Neuronpedia graph JSON: as a link (public reads), or fetched with the token. */
  circuitExportUrl: (graphId: string) => `${API_BASE}/circuits/${enc(graphId)}/export`,
  circuitExport: (graphId: string) => request<unknown>("GET", `/circuits/${enc(graphId)}/export`),
  trace: (body: TraceRequest) => request<Job>("POST", "/circuits", { body }),
  intervene: (graphId: string, body: InterventionRequest, signal?: AbortSignal) =>
    request<InterventionResult>("POST", `/circuits/${enc(graphId)}/interventions`, { body, signal }),
  /** Why a head attended from one position to another: its score split into graph nodes (compute scope). */
  explainAttention: (graphId: string, body: AttentionRequest, signal?: AbortSignal) =>
    request<AttentionExplanation>("POST", `/circuits/${enc(graphId)}/attention`, { body, signal }),
  /** Follow a job's server-sent events (see `followEvents`). */
  jobEvents: (jobId: string, handlers: StreamHandlers, signal?: AbortSignal) =>
    followEvents(`/jobs/${enc(jobId)}/events`, handlers, signal),
};

/** One server-sent event: its type (`event:` field, default "message") and its data. */
export interface ServerEvent {
  event: string;
  data: string;
}

export interface StreamHandlers {
  /** The gateway accepted the stream. */
  onOpen?: () => void;
  onEvent: (event: ServerEvent) => void;
}

/** Read a `text/event-stream` with fetch rather than EventSource, which cannot send the API token
 * (so streams also work when reads are protected). Resolves when the server closes the stream;
 * throws an ApiError for a problem answer or a network failure (status 0). */
export async function followEvents(path: string, handlers: StreamHandlers, signal?: AbortSignal): Promise<void> {
  const response = await send("GET", path, "text/event-stream", { signal });
  return readEvents(response, handlers);
}

/** POST `body` (JSON, with the API token) and read the `text/event-stream` it answers, like
 * `followEvents`: a problem answer before the stream starts (401, 422, 429, ...) throws an ApiError. */
export async function postEvents(path: string, body: unknown, handlers: StreamHandlers, signal?: AbortSignal): Promise<void> {
  const response = await send("POST", path, "text/event-stream", { body, signal });
  return readEvents(response, handlers);
}

/** Parse a server-sent event stream off `response`'s body; resolves when the server closes it. */
async function readEvents(response: Response, { onOpen, onEvent }: StreamHandlers): Promise<void> {
  if (!response.body) throw new ApiError({ status: 0, title: "Stream unreadable", detail: "the response has no body" });
  onOpen?.();
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let event = "message";
  let data: string[] = [];
  const line = (text: string) => {
    if (text === "") {
      if (data.length) onEvent({ event, data: data.join("\n") });
      event = "message";
      data = [];
      return;
    }
    if (text.startsWith(":")) return; // a comment (keep-alive)
    const colon = text.indexOf(":");
    const field = colon < 0 ? text : text.slice(0, colon);
    const value = colon < 0 ? "" : text.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  };
  for (;;) {
    let chunk: ReadableStreamReadResult<Uint8Array>;
    try {
      chunk = await reader.read();
    } catch (error) {
      throw networkError(error, "the event stream broke");
    }
    if (chunk.done) return;
    buffer += decoder.decode(chunk.value, { stream: true });
    const lines = buffer.split("\n");
    buffer = lines.pop() ?? "";
    for (const text of lines) line(text.replace(/\r$/, ""));
  }
}

/** One `progress` event of /jobs/{id}/events (lm_saes.rpc.client._event). */
export interface ProgressEvent {
  job_id: string;
  state: JobState;
  step: number;
  total_steps: number;
  tokens: number;
  loss: number;
  l0: number;
  explained_variance: number;
  message: string;
  progress: number;
  metrics: Record<string, number>;
  time: string | null;
}

export const FINISHED: ReadonlySet<string> = new Set(["succeeded", "failed", "cancelled"]);
