import { describe, expect, it } from "vitest";
import { layoutGraph, MIN_COLUMN, type LayoutNode } from "../circuits/layout";

const N_LAYERS = 6;
const tokens = ["<bos>", " cat", "\n"];
const nodes: LayoutNode[] = [
  ...tokens.map((_, p) => ({ id: `E_${p}`, kind: "token" as const, layer: -1, position: p })),
  { id: "0_1_0", kind: "feature", layer: 0, position: 0, influence: 0.1 },
  { id: "0_2_0", kind: "feature", layer: 0, position: 0, influence: 0.3 },
  { id: "0_3_0", kind: "feature", layer: 0, position: 0, influence: 0.2 },
  { id: "2_-1_1", kind: "error", layer: 2, position: 1, influence: 0.05 },
  { id: "5_7_2", kind: "feature", layer: 5, position: 2, influence: 0.4 },
  { id: "L_a", kind: "logit", layer: N_LAYERS, position: 2, probability: 0.6 },
  { id: "L_b", kind: "logit", layer: N_LAYERS, position: 2, probability: 0.3 },
  { id: "L_c", kind: "logit", layer: N_LAYERS, position: 2, probability: 0.1 },
];

describe("layoutGraph", () => {
  const layout = layoutGraph(nodes, tokens, N_LAYERS);
  const at = (id: string) => layout.positions.get(id)!;

  it("places every node", () => {
    expect(layout.positions.size).toBe(nodes.length);
  });

  it("stacks rows by layer: logits at the top, then layers downwards, token embeddings at the bottom", () => {
    expect(layout.rows.map((r) => r.label)).toEqual(["Logits", "L5", "L2", "L0", "Emb"]); // only layers with nodes
    expect(at("L_a").y).toBeLessThan(at("5_7_2").y);
    expect(at("5_7_2").y).toBeLessThan(at("2_-1_1").y);
    expect(at("2_-1_1").y).toBeLessThan(at("0_1_0").y);
    expect(at("0_1_0").y).toBeLessThan(at("E_0").y);
    // one row per layer: nodes of a layer share its y (a single line here)
    expect(new Set(["E_0", "E_1", "E_2"].map((id) => at(id).y)).size).toBe(1);
    expect(new Set(["L_a", "L_b", "L_c"].map((id) => at(id).y)).size).toBe(1);
    expect(new Set(["0_1_0", "0_2_0", "0_3_0"].map((id) => at(id).y)).size).toBe(1);
  });

  it("puts one column per prompt position, labeled with its token", () => {
    expect(layout.columns.map((c) => c.label)).toEqual(["<bos>", " cat", "↵"]);
    expect(layout.columns.every((c) => c.width >= MIN_COLUMN)).toBe(true);
    expect(at("E_0").x).toBeLessThan(at("E_1").x);
    expect(at("E_1").x).toBeLessThan(at("E_2").x);
    for (const node of nodes.filter((n) => n.kind !== "logit")) {
      const column = layout.columns[node.position];
      expect(Math.abs(at(node.id).x - column.x)).toBeLessThanOrEqual(column.width / 2);
    }
    expect(at("E_1").x).toBe(layout.columns[1].x);
    expect(at("2_-1_1").x).toBe(layout.columns[1].x);
  });

  it("spreads the nodes of a cell side by side, most influential first, without overlaps", () => {
    const xs = ["0_2_0", "0_3_0", "0_1_0"].map((id) => at(id).x);
    expect(xs).toEqual([...xs].sort((a, b) => a - b));
    const points = [...layout.positions.values()];
    for (let i = 0; i < points.length; i++)
      for (let j = i + 1; j < points.length; j++)
        expect(Math.hypot(points[i].x - points[j].x, points[i].y - points[j].y)).toBeGreaterThanOrEqual(18);
    // likeliest logit first; all logits inside the graph
    expect(at("L_a").x).toBeLessThan(at("L_b").x);
    for (const id of ["L_a", "L_b", "L_c"]) expect(at(id).x).toBeLessThanOrEqual(layout.width);
  });

  it("wraps a crowded cell into several lines within its column", () => {
    const crowded: LayoutNode[] = Array.from({ length: 20 }, (_, i) => ({
      id: `3_${i}_0`, kind: "feature" as const, layer: 3, position: 0, influence: i,
    }));
    const l = layoutGraph(crowded, ["a"], 4);
    const ys = new Set(crowded.map((n) => l.positions.get(n.id)!.y));
    expect(ys.size).toBeGreaterThan(1);
    const column = l.columns[0];
    for (const n of crowded) expect(Math.abs(l.positions.get(n.id)!.x - column.x)).toBeLessThan(column.width / 2);
  });

  it("is stable: hiding nodes does not move the others (the layout is of the whole graph)", () => {
    const again = layoutGraph([...nodes].reverse(), tokens, N_LAYERS);
    for (const [id, p] of layout.positions) expect(again.positions.get(id)).toEqual(p);
  });
});
