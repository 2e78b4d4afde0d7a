// Short human-readable names for graph nodes (labels, aria-labels, lists). Pure.
import type { GraphNode } from "../api/client";
import { pct, showToken } from "../format";

export type DescribedNode = Pick<GraphNode, "kind" | "layer" | "position"> &
  Partial<Pick<GraphNode, "feature" | "token" | "probability">>;

export function quoted(token: string | null | undefined): string {
  return `“${showToken(token ?? "")}”`;
}

export function describeNode(node: DescribedNode, tokens: readonly string[]): string {
  const at = `${quoted(tokens[node.position])} (position ${node.position})`;
  switch (node.kind) {
    case "feature":
      return `Feature ${node.feature ?? "?"} at layer ${node.layer}, ${at}`;
    case "error":
      return `Error node at layer ${node.layer}, ${at}`;
    case "token":
      return `Token ${quoted(node.token ?? tokens[node.position])} (position ${node.position})`;
    case "logit":
      return `Logit ${quoted(node.token)} (${pct(node.probability ?? undefined)})`;
  }
}
