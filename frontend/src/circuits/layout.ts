// Positions of an attribution graph's nodes: one row per layer (token embeddings at the bottom,
// logits at the top), one column per prompt position. Pure, so that it can be tested alone.
import type { GraphNode } from "../api/client";
import { showToken } from "../format";

export type LayoutNode = Pick<GraphNode, "id" | "kind" | "layer" | "position"> &
  Partial<Pick<GraphNode, "influence" | "probability">>;

export interface Point {
  x: number;
  y: number;
}

export interface Column {
  position: number;
  /** Center of the column. */
  x: number;
  width: number;
  label: string;
}

export interface Row {
  layer: number;
  /** Center of the row. */
  y: number;
  height: number;
  label: string;
}

export interface Layout {
  /** Node centers (React Flow with nodeOrigin [0.5, 0.5]). */
  positions: Map<string, Point>;
  columns: Column[];
  rows: Row[];
  width: number;
  height: number;
}

/** Horizontal room each node kind takes in a cell, and the height of a line of them. */
export const SLOT: Record<GraphNode["kind"], number> = { feature: 20, error: 20, logit: 62, token: 104 };
export const LINE: Record<GraphNode["kind"], number> = { feature: 18, error: 18, logit: 26, token: 30 };
export const MIN_COLUMN = 140;
export const MAX_PER_LINE = 8;
const CELL_PAD = 12;
const ROW_PAD = 6;
const MIN_ROW = 20;
/** Room left of the first column for row labels and above the first row for column labels. */
export const MARGIN = { left: 64, top: 36 };

const KIND_ORDER: Record<GraphNode["kind"], number> = { feature: 0, error: 1, token: 2, logit: 3 };

export function rowLabel(layer: number, nLayers: number): string {
  if (layer < 0) return "Emb";
  if (layer >= nLayers) return "Logits";
  return `L${layer}`;
}

/** Order inside a cell: features, then errors; the most influential (or likeliest logit) first. */
function cellOrder(a: LayoutNode, b: LayoutNode): number {
  return (
    KIND_ORDER[a.kind] - KIND_ORDER[b.kind] ||
    (b.probability ?? b.influence ?? 0) - (a.probability ?? a.influence ?? 0) ||
    (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
  );
}

/** Splits a cell's nodes into lines that fit `inner` pixels. */
function lines(nodes: LayoutNode[], inner: number): LayoutNode[][] {
  const out: LayoutNode[][] = [];
  let line: LayoutNode[] = [];
  let used = 0;
  for (const node of nodes) {
    const slot = SLOT[node.kind];
    if (line.length && used + slot > inner) {
      out.push(line);
      line = [];
      used = 0;
    }
    line.push(node);
    used += slot;
  }
  if (line.length) out.push(line);
  return out;
}

/**
 * Lays out every node of the graph (not only the visible ones, so that pruning or pinning never
 * moves a node). `tokens` label the columns; `nLayers` is the logits' layer.
 */
export function layoutGraph(nodes: LayoutNode[], tokens: string[], nLayers: number): Layout {
  const nPositions = Math.max(tokens.length, ...nodes.map((n) => n.position + 1), 1);
  const layers = [...new Set([-1, nLayers, ...nodes.map((n) => n.layer)])].sort((a, b) => b - a); // top first

  const cells = new Map<string, LayoutNode[]>();
  for (const node of nodes) {
    const key = `${node.layer}:${node.position}`;
    const cell = cells.get(key);
    if (cell) cell.push(node);
    else cells.set(key, [node]);
  }
  for (const cell of cells.values()) cell.sort(cellOrder);

  // Column widths: room for up to MAX_PER_LINE features of the column's most crowded cell.
  const widths = new Array<number>(nPositions).fill(MIN_COLUMN);
  for (const [key, cell] of cells) {
    const position = Number(key.split(":")[1]);
    const small = cell.filter((n) => n.kind === "feature" || n.kind === "error").length;
    const want = Math.min(small, MAX_PER_LINE) * SLOT.feature + CELL_PAD;
    widths[position] = Math.max(widths[position], want);
  }
  const columns: Column[] = [];
  let x = MARGIN.left;
  for (let p = 0; p < nPositions; p++) {
    columns.push({ position: p, x: x + widths[p] / 2, width: widths[p], label: showToken(tokens[p] ?? "") });
    x += widths[p];
  }

  // When all logits sit at one position (the usual: the last), they spread over the whole width.
  const logitPositions = new Set(nodes.filter((n) => n.kind === "logit").map((n) => n.position));
  const wideLogits = logitPositions.size === 1;
  const left = MARGIN.left;
  const right = x;

  // Split every cell into lines; a row is as tall as its tallest cell.
  const cellLines = new Map<string, LayoutNode[][]>();
  for (const [key, cell] of cells) {
    const [layer, position] = key.split(":").map(Number);
    const wide = wideLogits && layer === nLayers && cell.every((n) => n.kind === "logit");
    cellLines.set(key, lines(cell, (wide ? right - left : widths[position]) - CELL_PAD));
  }
  const rows: Row[] = [];
  let y = MARGIN.top;
  for (const layer of layers) {
    let height = MIN_ROW;
    for (let p = 0; p < nPositions; p++) {
      const ls = cellLines.get(`${layer}:${p}`);
      if (!ls) continue;
      const h = ls.reduce((sum, line) => sum + Math.max(...line.map((n) => LINE[n.kind])), 0) + ROW_PAD;
      height = Math.max(height, h);
    }
    rows.push({ layer, y: y + height / 2, height, label: rowLabel(layer, nLayers) });
    y += height;
  }

  const positions = new Map<string, Point>();
  const rowOf = new Map(rows.map((r) => [r.layer, r]));
  for (const [key, ls] of cellLines) {
    const [layer, position] = key.split(":").map(Number);
    const row = rowOf.get(layer)!;
    const column = columns[position];
    const heights = ls.map((line) => Math.max(...line.map((n) => LINE[n.kind])));
    let top = row.y - heights.reduce((a, b) => a + b, 0) / 2;
    ls.forEach((line, i) => {
      const span = line.reduce((sum, n) => sum + SLOT[n.kind], 0);
      // centered on the column, but kept inside the graph (wide logit rows)
      let start = Math.max(left, Math.min(column.x - span / 2, right - span));
      if (span > right - left) start = column.x - span / 2;
      for (const node of line) {
        positions.set(node.id, { x: start + SLOT[node.kind] / 2, y: top + heights[i] / 2 });
        start += SLOT[node.kind];
      }
      top += heights[i];
    });
  }
  return { positions, columns, rows, width: x + 16, height: y + 16 };
}
