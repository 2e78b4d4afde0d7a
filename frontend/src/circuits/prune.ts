// Which nodes and links of an attribution graph are shown: the pruning slider, pinned subgraphs,
// and how a link is drawn. Pure functions.
import type { GraphLink, GraphNode } from "../api/client";

export type PruneNode = Pick<GraphNode, "id" | "kind"> & { cumulative?: number };
export type PruneLink = Pick<GraphLink, "source" | "target">;

export const PRUNE_MIN = 0.1;
export const PRUNE_MAX = 1;

/** The slider's starting value: the graph's node threshold, clamped to the slider's range. */
export function defaultPruning(thresholds: Record<string, number> | undefined): number {
  const node = thresholds?.node;
  if (typeof node !== "number" || !Number.isFinite(node)) return 0.8;
  return Math.min(PRUNE_MAX, Math.max(PRUNE_MIN, node));
}

/** Links whose two ends are both in `kept`. */
export function linksWithin<L extends PruneLink>(links: readonly L[], kept: ReadonlySet<string>): L[] {
  return links.filter((l) => kept.has(l.source) && kept.has(l.target));
}

/**
 * Hides feature and error nodes whose `cumulative` influence exceeds `threshold` (token and logit
 * nodes always stay, and so do the ids in `keep`, e.g. pinned nodes), and the links touching them.
 */
export function pruneGraph<N extends PruneNode, L extends PruneLink>(
  nodes: readonly N[],
  links: readonly L[],
  threshold: number,
  keep: ReadonlySet<string> = new Set(),
): { nodes: N[]; links: L[] } {
  const shown = nodes.filter(
    (n) => n.kind === "token" || n.kind === "logit" || keep.has(n.id) || (n.cumulative ?? 0) <= threshold + 1e-9,
  );
  return { nodes: shown, links: linksWithin(links, new Set(shown.map((n) => n.id))) };
}

/** The subgraph of the pinned nodes: those nodes and the links between them. */
export function pinnedSubgraph<N extends PruneNode, L extends PruneLink>(
  nodes: readonly N[],
  links: readonly L[],
  pinned: ReadonlySet<string>,
): { nodes: N[]; links: L[] } {
  return { nodes: nodes.filter((n) => pinned.has(n.id)), links: linksWithin(links, pinned) };
}

export const POSITIVE = "#2563eb";
export const NEGATIVE = "#dc2626";

/** A link's stroke: width grows with sqrt(|weight| / largest |weight|); blue excites, red inhibits. */
export function linkStroke(weight: number, maxAbs: number): { stroke: string; strokeWidth: number } {
  const share = maxAbs > 0 ? Math.min(1, Math.abs(weight) / maxAbs) : 0;
  return { stroke: weight >= 0 ? POSITIVE : NEGATIVE, strokeWidth: Number((0.5 + 5.5 * Math.sqrt(share)).toFixed(2)) };
}
