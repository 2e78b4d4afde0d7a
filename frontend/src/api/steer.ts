// POST /api/v1/steer: steered generation, streamed as server-sent events beside the default run.
// The types mirror the gateway's SteerRequest / events (gateway/schemas.py, gateway/routers/steer.py)
// until schema.d.ts is regenerated from its OpenAPI document. Also: the steer page's URL format.
import { ApiError, postEvents, type ServerEvent } from "./client";

export type SteerMode = "add" | "clamp" | "ablate" | "scale";
export type SteerPositions = "both" | "prompt" | "generated";
export const MODES: readonly SteerMode[] = ["add", "clamp", "ablate", "scale"];
export const POSITIONS: readonly SteerPositions[] = ["both", "prompt", "generated"];

/** One feature changed while generating. */
export interface SteerFeature {
  sae_id: string;
  feature: number;
  mode: SteerMode;
  /** add: amount; clamp: value; scale: factor; ablate: must be 0. */
  strength: number;
  /** add and clamp only: strength in units of the feature's max activation. */
  relative: boolean;
  positions: SteerPositions;
  /** First steered position (1: the first prompt token after BOS). */
  from_token: number;
}

export interface SteerRequest {
  prompt: string;
  features: SteerFeature[];
  max_new_tokens?: number;
  temperature?: number;
  top_p?: number;
  seed?: number;
  stop?: string[];
  track?: number[];
  frozen_attention?: boolean;
  compare?: boolean;
}

/** A change as the service resolved it (`value` absolute: relative strengths multiplied out). */
export interface SteerChange {
  sae: string;
  feature: number;
  mode: string;
  value: number;
  positions: string;
  from_token: number;
}

/** The `start` event. */
export interface SteerStart {
  /** The prompt as tokens, BOS first. */
  prompt_tokens: string[];
  changes: SteerChange[];
}

export type SteerRun = "steered" | "default";
export type FinishReason = "length" | "stop" | "eos";

/** One `token` event: a step of one run (steered and default interleave). */
export interface SteerToken {
  run: SteerRun;
  index: number;
  token_id: number;
  token: string;
  /** The text this step releases (may be empty mid-character): append it. */
  text: string;
  probability: number;
  tracked: Record<string, number>;
  finish_reason: FinishReason | null;
}

export interface SteerHandlers {
  onStart?: (start: SteerStart) => void;
  onToken: (token: SteerToken) => void;
  onEnd?: () => void;
  /** An `error` event: the service failed after the stream started. */
  onError?: (error: ApiError) => void;
}

/** Limits of the endpoint (the gateway's defaults: max_text_chars, steer_max_tokens). */
export const LIMITS = { prompt: 4000, features: 16, maxTokens: 128, strength: 1e4, temperature: 10, stop: 8 };

/** Stream a steered generation. Resolves when the stream closes; a problem answered before it
 * starts (401, 403, 404, 422, 429) throws an ApiError, as does a network failure. */
export function steer(body: SteerRequest, handlers: SteerHandlers, signal?: AbortSignal): Promise<void> {
  const onEvent = ({ event, data }: ServerEvent) => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(data);
    } catch {
      parsed = null;
    }
    if (event === "start") handlers.onStart?.(parsed as SteerStart);
    else if (event === "token" && parsed) handlers.onToken(parsed as SteerToken);
    else if (event === "end") handlers.onEnd?.();
    else if (event === "error") {
      const body = (parsed ?? {}) as { status?: number; title?: string; detail?: string };
      handlers.onError?.(
        new ApiError({
          status: typeof body.status === "number" ? body.status : 502,
          title: body.title || "Steering failed",
          detail: body.detail ?? (parsed ? "" : data),
        }),
      );
    }
  };
  return postEvents("/steer", body, { onEvent }, signal);
}

/** A feature as the gateway accepts it: ablate has strength 0, only add and clamp are relative. */
export function normalizeFeature(f: SteerFeature): SteerFeature {
  return {
    ...f,
    strength: f.mode === "ablate" ? 0 : f.strength,
    relative: f.mode === "add" || f.mode === "clamp" ? f.relative : false,
  };
}

// ---- Settings shared by the feature page's panel and the steer page, and their URL form ----

export interface SteerSettings {
  prompt: string;
  features: SteerFeature[];
  max_new_tokens: number;
  temperature: number;
  top_p: number;
  seed: number;
  frozen_attention: boolean;
}

export const DEFAULT_PROMPT = "I think that";
export const DEFAULT_SETTINGS: SteerSettings = {
  prompt: DEFAULT_PROMPT,
  features: [],
  max_new_tokens: 32,
  temperature: 0,
  top_p: 1,
  seed: 0,
  frozen_attention: false,
};

/** The request body for `settings` (both runs: compare). */
export function steerRequest(settings: SteerSettings): SteerRequest {
  return {
    prompt: settings.prompt,
    features: settings.features.map(normalizeFeature),
    max_new_tokens: settings.max_new_tokens,
    temperature: settings.temperature,
    top_p: settings.top_p,
    seed: settings.seed,
    frozen_attention: settings.frozen_attention,
    compare: true,
  };
}

const MAX_FROM_TOKEN = 100_000;
const NUMBER = /^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i;

/** A finite number written plainly ("4", "-2.5", "1e-3"); undefined for "", "abc", "Infinity", "0x10". */
export function parseNumber(text: string | null | undefined): number | undefined {
  if (text == null) return undefined;
  const trimmed = text.trim();
  if (!NUMBER.test(trimmed)) return undefined;
  const value = Number(trimmed);
  return Number.isFinite(value) ? value : undefined;
}

function parseInteger(text: string | null | undefined, min: number, max: number): number | undefined {
  const value = parseNumber(text);
  return value !== undefined && Number.isInteger(value) && value >= min && value <= max ? value : undefined;
}

/** Whether the gateway would accept `f` (after normalizeFeature). */
export function validFeature(f: SteerFeature): boolean {
  return (
    f.sae_id.length > 0 &&
    Number.isSafeInteger(f.feature) &&
    f.feature >= 0 &&
    MODES.includes(f.mode) &&
    Number.isFinite(f.strength) &&
    Math.abs(f.strength) <= LIMITS.strength &&
    POSITIONS.includes(f.positions) &&
    Number.isInteger(f.from_token) &&
    f.from_token >= 1 &&
    f.from_token <= MAX_FROM_TOKEN
  );
}

/** `SAE:FEATURE:MODE:STRENGTH:r|a:POSITIONS[:FROM]`; FROM only when it is not 1. */
export function formatFeature(feature: SteerFeature): string {
  const f = normalizeFeature(feature);
  const parts = [f.sae_id, String(f.feature), f.mode, String(f.strength), f.relative ? "r" : "a", f.positions];
  if (f.from_token !== 1) parts.push(String(f.from_token));
  return parts.join(":");
}

/** The inverse of formatFeature; undefined for anything malformed. Read from the right, so an SAE id
 * may itself contain ":". */
export function parseFeature(text: string): SteerFeature | undefined {
  const parts = text.split(":");
  let from = 1;
  if (parts.length >= 7 && /^\d+$/.test(parts[parts.length - 1])) {
    const value = parseInteger(parts.pop(), 1, MAX_FROM_TOKEN);
    if (value === undefined) return undefined;
    from = value;
  }
  if (parts.length < 6) return undefined;
  const [feature, mode, strength, relative, positions] = parts.splice(-5);
  const saeId = parts.join(":");
  const index = parseInteger(feature, 0, Number.MAX_SAFE_INTEGER);
  const value = parseNumber(strength);
  if (!saeId || index === undefined || value === undefined) return undefined;
  if (!MODES.includes(mode as SteerMode) || !POSITIONS.includes(positions as SteerPositions)) return undefined;
  if (relative !== "r" && relative !== "a") return undefined;
  const f: SteerFeature = normalizeFeature({
    sae_id: saeId,
    feature: index,
    mode: mode as SteerMode,
    strength: value,
    relative: relative === "r",
    positions: positions as SteerPositions,
    from_token: from,
  });
  return validFeature(f) ? f : undefined;
}

/** Query values as written into URLs: percent-encoded, but ":" kept and spaces as "+", to stay readable. */
function encodeValue(value: string): string {
  return encodeURIComponent(value).replace(/%3A/gi, ":").replace(/%20/g, "+").replace(/'/g, "%27");
}

/** `prompt=…&f=…&f=…&max=32&t=0` (then `p`, `seed`, `frozen=1` when not their defaults). */
export function steerQuery(settings: SteerSettings): string {
  const pairs: [string, string][] = [["prompt", settings.prompt]];
  for (const f of settings.features) if (validFeature(f)) pairs.push(["f", formatFeature(f)]);
  pairs.push(["max", String(settings.max_new_tokens)], ["t", String(settings.temperature)]);
  if (settings.top_p !== DEFAULT_SETTINGS.top_p) pairs.push(["p", String(settings.top_p)]);
  if (settings.seed !== DEFAULT_SETTINGS.seed) pairs.push(["seed", String(settings.seed)]);
  if (settings.frozen_attention) pairs.push(["frozen", "1"]);
  return pairs.map(([k, v]) => `${k}=${encodeValue(v)}`).join("&");
}

/** The settings a steer URL holds; what is missing or malformed takes its default (a bad `f` is
 * dropped, past 16 features are ignored; an empty `prompt=` stays empty, as the page was left).
 * parseSteerQuery(steerQuery(s)) gives s back for any s whose values are in range. */
export function parseSteerQuery(search: string | URLSearchParams): SteerSettings {
  const params = typeof search === "string" ? new URLSearchParams(search.replace(/^\?/, "")) : search;
  const features: SteerFeature[] = [];
  for (const text of params.getAll("f")) {
    const f = parseFeature(text);
    if (f && features.length < LIMITS.features) features.push(f);
  }
  const prompt = params.get("prompt");
  const temperature = parseNumber(params.get("t"));
  const topP = parseNumber(params.get("p"));
  return {
    prompt: prompt === null ? DEFAULT_SETTINGS.prompt : prompt.slice(0, LIMITS.prompt),
    features,
    max_new_tokens: parseInteger(params.get("max"), 1, LIMITS.maxTokens) ?? DEFAULT_SETTINGS.max_new_tokens,
    temperature:
      temperature !== undefined && temperature >= 0 && temperature <= LIMITS.temperature
        ? temperature
        : DEFAULT_SETTINGS.temperature,
    top_p: topP !== undefined && topP > 0 && topP <= 1 ? topP : DEFAULT_SETTINGS.top_p,
    seed: parseInteger(params.get("seed"), 0, 2 ** 31 - 1) ?? DEFAULT_SETTINGS.seed,
    frozen_attention: params.get("frozen") === "1",
  };
}
