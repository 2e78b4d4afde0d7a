import { describe, expect, it } from "vitest";
import { compareLogits } from "../circuits/interventions";
import { parsePinned, togglePinned } from "../circuits/pins";
import { defaultPruning, linkStroke, NEGATIVE, pinnedSubgraph, POSITIVE, pruneGraph } from "../circuits/prune";

const nodes = [
  { id: "tok", kind: "token" as const, cumulative: 0.99 },
  { id: "logit", kind: "logit" as const, cumulative: 0.95 },
  { id: "f_low", kind: "feature" as const, cumulative: 0.2 },
  { id: "f_edge", kind: "feature" as const, cumulative: 0.5 },
  { id: "f_high", kind: "feature" as const, cumulative: 0.7 },
  { id: "err_low", kind: "error" as const, cumulative: 0.4 },
  { id: "err_high", kind: "error" as const, cumulative: 0.9 },
];
const links = [
  { source: "tok", target: "f_low", weight: 1 },
  { source: "tok", target: "f_high", weight: 2 },
  { source: "f_low", target: "logit", weight: -1 },
  { source: "f_high", target: "logit", weight: 3 },
  { source: "err_high", target: "f_edge", weight: 0.5 },
  { source: "err_low", target: "logit", weight: 0.1 },
  { source: "tok", target: "logit", weight: 0.2 },
];

describe("pruneGraph", () => {
  it("hides feature and error nodes above the threshold and keeps tokens and logits", () => {
    const { nodes: kept } = pruneGraph(nodes, links, 0.5);
    expect(kept.map((n) => n.id)).toEqual(["tok", "logit", "f_low", "f_edge", "err_low"]);
  });

  it("drops the links that touch a hidden node", () => {
    const { links: kept } = pruneGraph(nodes, links, 0.5);
    expect(kept.map((l) => `${l.source}>${l.target}`)).toEqual(["tok>f_low", "f_low>logit", "err_low>logit", "tok>logit"]);
  });

  it("keeps everything at 1 and only tokens and logits below every node", () => {
    expect(pruneGraph(nodes, links, 1).nodes).toHaveLength(nodes.length);
    expect(pruneGraph(nodes, links, 1).links).toHaveLength(links.length);
    const none = pruneGraph(nodes, links, 0.1);
    expect(none.nodes.map((n) => n.id)).toEqual(["tok", "logit"]);
    expect(none.links.map((l) => `${l.source}>${l.target}`)).toEqual(["tok>logit"]);
  });

  it("keeps the ids it is told to keep (pinned nodes) whatever their cumulative influence", () => {
    const { nodes: kept, links: kl } = pruneGraph(nodes, links, 0.5, new Set(["f_high"]));
    expect(kept.map((n) => n.id)).toContain("f_high");
    expect(kl.map((l) => `${l.source}>${l.target}`)).toContain("f_high>logit");
  });

  it("the slider starts at the graph's node threshold, within 0.1..1", () => {
    expect(defaultPruning({ node: 0.8, edge: 0.98 })).toBe(0.8);
    expect(defaultPruning({ node: 0.02 })).toBe(0.1);
    expect(defaultPruning({})).toBe(0.8);
  });
});

describe("pinnedSubgraph", () => {
  it("is the pinned nodes and the links between them", () => {
    const sub = pinnedSubgraph(nodes, links, new Set(["tok", "f_high", "logit"]));
    expect(sub.nodes.map((n) => n.id)).toEqual(["tok", "logit", "f_high"]);
    expect(sub.links.map((l) => `${l.source}>${l.target}`)).toEqual(["tok>f_high", "f_high>logit", "tok>logit"]);
  });
});

describe("links and pins", () => {
  it("colors links by sign and widens them with |weight|", () => {
    expect(linkStroke(2, 4).stroke).toBe(POSITIVE);
    expect(linkStroke(-2, 4).stroke).toBe(NEGATIVE);
    expect(linkStroke(-2, 4).strokeWidth).toBe(linkStroke(2, 4).strokeWidth);
    expect(linkStroke(4, 4).strokeWidth).toBeGreaterThan(linkStroke(1, 4).strokeWidth);
    expect(linkStroke(0, 0).strokeWidth).toBeGreaterThan(0);
  });

  it("parses and toggles ?pinned= lists", () => {
    expect(parsePinned("a,b,,a, c")).toEqual(["a", "b", "c"]);
    expect(parsePinned(null)).toEqual([]);
    expect(togglePinned(["a", "b"], "a")).toEqual(["b"]);
    expect(togglePinned(["a"], "b")).toEqual(["a", "b"]);
  });

  it("pairs before and after logits by token", () => {
    const t = (token_id: number, token: string, probability: number) => ({ token_id, token, probability, logit: 0 });
    const rows = compareLogits([t(1, " Paris", 0.7), t(2, " Lyon", 0.1)], [t(2, " Lyon", 0.4), t(3, " Rome", 0.2)]);
    expect(rows).toEqual([
      { tokenId: 1, token: " Paris", before: 0.7, after: null, delta: null },
      { tokenId: 2, token: " Lyon", before: 0.1, after: 0.4, delta: expect.closeTo(0.3, 9) },
      { tokenId: 3, token: " Rome", before: null, after: 0.2, delta: null },
    ]);
  });
});
