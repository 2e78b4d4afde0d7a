// The attention (QK) explanation of a graph's head score: the form's prefill from a clicked link,
// its client-side checks, node ids decoded for display. Pure.
import type { AttentionRequest, GraphNode, NodeContribution } from "../api/client";
import { fmt } from "../format";
import { quoted } from "./describe";

export type AttentionField = keyof AttentionRequest;
/** The form's inputs as typed (strings), keyed by the request fields they fill. */
export type AttentionDraft = Record<AttentionField, string>;
export type AttentionErrors = Partial<Record<AttentionField, string>>;

export const ATTENTION_FIELDS: readonly AttentionField[] = ["layer", "head", "query_position", "key_position", "top_k"];
export const ATTENTION_TOP_K = 10;
export const ATTENTION_TOP_K_MAX = 50;

export interface AttentionBounds {
  /** The model's layers: valid layers are 0..nLayers-1. */
  nLayers: number;
  /** The prompt's tokens: valid positions are 0..nPositions-1. */
  nPositions: number;
}

const clamp = (value: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, value));

/**
 * The form's prefill for a link whose ends sit at different positions (a link that attention
 * carries): the query at the target's position, the key at the source's, the target's layer
 * (n_layers - 1 for a logit), head 0. Null for a link within one position.
 */
export function draftFromLink(
  source: Pick<GraphNode, "position">,
  target: Pick<GraphNode, "kind" | "layer" | "position">,
  nLayers: number,
): AttentionDraft | null {
  if (source.position === target.position) return null;
  const layer = target.kind === "logit" ? nLayers - 1 : target.layer;
  return {
    layer: String(clamp(layer, 0, Math.max(0, nLayers - 1))),
    head: "0",
    query_position: String(target.position),
    key_position: String(source.position),
    top_k: String(ATTENTION_TOP_K),
  };
}

/** The form opened without a link: the last layer, head 0, the last position and the one before it. */
export function defaultDraft({ nLayers, nPositions }: AttentionBounds): AttentionDraft {
  const query = Math.max(0, nPositions - 1);
  return {
    layer: String(Math.max(0, nLayers - 1)),
    head: "0",
    query_position: String(query),
    key_position: String(Math.max(0, query - 1)),
    top_k: String(ATTENTION_TOP_K),
  };
}

function integer(text: string): number | null {
  const trimmed = text.trim();
  return /^-?\d+$/.test(trimmed) ? Number(trimmed) : null;
}

/**
 * The request the form describes, or what is wrong with each field (as the gateway would say it,
 * minus what only it knows: the model's number of heads).
 */
export function validateAttention(
  draft: AttentionDraft,
  { nLayers, nPositions }: AttentionBounds,
): { request: AttentionRequest | null; errors: AttentionErrors } {
  const errors: AttentionErrors = {};
  const values: Partial<AttentionRequest> = {};
  const range = (field: AttentionField, lo: number, hi: number, what: string) => {
    const value = integer(draft[field]);
    if (value === null) errors[field] = "a whole number";
    else if (value < lo || value > hi) errors[field] = what;
    else values[field] = value;
  };
  range("layer", 0, nLayers - 1, nLayers > 0 ? `one of the layers 0..${nLayers - 1}` : "the graph has no layers");
  range("head", 0, 10_000, "0 or more");
  const positions = nPositions > 0 ? `one of the positions 0..${nPositions - 1}` : "the prompt has no tokens";
  range("query_position", 0, nPositions - 1, positions);
  range("key_position", 0, nPositions - 1, positions);
  range("top_k", 1, ATTENTION_TOP_K_MAX, `1..${ATTENTION_TOP_K_MAX}`);
  if (values.key_position !== undefined && values.query_position !== undefined && values.key_position > values.query_position) {
    errors.key_position = "at or before the query position (attention is causal)";
    delete values.key_position;
  }
  if (Object.keys(errors).length) return { request: null, errors };
  return { request: values as AttentionRequest, errors };
}

export interface DecodedNode {
  kind: "feature" | "error" | "token" | "unknown";
  layer?: number;
  feature?: number;
  position?: number;
  label: string;
}

/**
 * A node id of the attention explanation ("L_F_P" features, "L_-1_P" errors, "E_T_P" embeddings,
 * as the graph's ids) as text, whether or not the node made it into the pruned graph.
 */
export function decodeNodeId(id: string, tokens: readonly string[]): DecodedNode {
  const at = (position: number) =>
    position < tokens.length ? `${quoted(tokens[position])} (position ${position})` : `position ${position}`;
  let m = /^E_(-?\d+)_(\d+)$/.exec(id);
  if (m) {
    const position = Number(m[2]);
    return { kind: "token", position, label: `embedding of ${at(position)}` };
  }
  m = /^(\d+)_-1_(\d+)$/.exec(id);
  if (m) {
    const [layer, position] = [Number(m[1]), Number(m[2])];
    return { kind: "error", layer, position, label: `L${layer} error at ${at(position)}` };
  }
  m = /^(\d+)_(\d+)_(\d+)$/.exec(id);
  if (m) {
    const [layer, feature, position] = [Number(m[1]), Number(m[2]), Number(m[3])];
    return { kind: "feature", layer, feature, position, label: `L${layer} feature ${feature} at ${at(position)}` };
  }
  return { kind: "unknown", label: id };
}

/** The question a request asks, in words. */
export function describeAttention(request: AttentionRequest, tokens: readonly string[]): string {
  const at = (p: number) => `${quoted(tokens[p])} (${p})`;
  return `Layer ${request.layer}, head ${request.head}: ${at(request.query_position)} attending to ${at(request.key_position)}`;
}

/** A signed number: "+0.25", "−1.5" (a real minus sign), "0". */
export function signed(value: number, digits = 3): string {
  const text = fmt(Math.abs(value), digits);
  if (text === "0" || text === "—") return text;
  return `${value >= 0 ? "+" : "−"}${text}`;
}

/** The largest |contribution| among lists, for bars on one scale (0 when all are empty or zero). */
export function largest(...lists: readonly (readonly { contribution: number }[])[]): number {
  return Math.max(0, ...lists.flat().map((c) => Math.abs(c.contribution)));
}

/** What the nodes that are not listed add up to: the score less the side's bias and listed nodes
 * (0 within float32 rounding of the score). */
export function unlisted(score: number, bias: number, listed: readonly NodeContribution[]): number {
  const rest = score - bias - listed.reduce((sum, c) => sum + c.contribution, 0);
  return Math.abs(rest) <= 1e-5 * Math.max(1, Math.abs(score)) ? 0 : rest;
}
