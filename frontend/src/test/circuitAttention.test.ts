import { describe, expect, it } from "vitest";
import {
  decodeNodeId,
  defaultDraft,
  describeAttention,
  draftFromLink,
  largest,
  signed,
  unlisted,
  validateAttention,
  type AttentionDraft,
} from "../circuits/attention";

const tokens = ["<bos>", "The", " cat", "\n"];
const bounds = { nLayers: 2, nPositions: tokens.length };
const draft = (over: Partial<AttentionDraft> = {}): AttentionDraft => ({
  layer: "1",
  head: "3",
  query_position: "2",
  key_position: "1",
  top_k: "10",
  ...over,
});

describe("draftFromLink", () => {
  it("asks about the target's position attending to the source's, at the target's layer, head 0", () => {
    expect(
      draftFromLink({ position: 1 }, { kind: "feature", layer: 1, position: 3 }, 2),
    ).toEqual({ layer: "1", head: "0", query_position: "3", key_position: "1", top_k: "10" });
    expect(draftFromLink({ position: 0 }, { kind: "error", layer: 0, position: 2 }, 2)?.layer).toBe("0");
  });

  it("takes the last layer for a logit (whose layer is n_layers) and clamps other layers", () => {
    expect(draftFromLink({ position: 0 }, { kind: "logit", layer: 2, position: 3 }, 2)?.layer).toBe("1");
    expect(draftFromLink({ position: 0 }, { kind: "feature", layer: 7, position: 3 }, 2)?.layer).toBe("1");
    expect(draftFromLink({ position: 0 }, { kind: "feature", layer: -1, position: 3 }, 2)?.layer).toBe("0");
  });

  it("has nothing to ask about a link within one position", () => {
    expect(draftFromLink({ position: 2 }, { kind: "feature", layer: 1, position: 2 }, 2)).toBeNull();
  });
});

describe("defaultDraft", () => {
  it("starts at the last layer, the last position attending to the one before", () => {
    expect(defaultDraft(bounds)).toEqual({ layer: "1", head: "0", query_position: "3", key_position: "2", top_k: "10" });
    expect(defaultDraft({ nLayers: 1, nPositions: 1 })).toMatchObject({ layer: "0", query_position: "0", key_position: "0" });
  });
});

describe("validateAttention", () => {
  it("builds the request from valid inputs (whitespace allowed)", () => {
    expect(validateAttention(draft({ head: " 3 " }), bounds)).toEqual({
      request: { layer: 1, head: 3, query_position: 2, key_position: 1, top_k: 10 },
      errors: {},
    });
    // the key may be the query's own position
    expect(validateAttention(draft({ key_position: "2" }), bounds).request?.key_position).toBe(2);
  });

  it("names each field at fault, as the gateway's problems do", () => {
    const { request, errors } = validateAttention(
      { layer: "2", head: "-1", query_position: "4", key_position: "1.5", top_k: "51" },
      bounds,
    );
    expect(request).toBeNull();
    expect(errors).toEqual({
      layer: "one of the layers 0..1",
      head: "0 or more",
      query_position: "one of the positions 0..3",
      key_position: "a whole number",
      top_k: "1..50",
    });
    expect(validateAttention(draft({ top_k: "0" }), bounds).errors).toEqual({ top_k: "1..50" });
    expect(validateAttention(draft({ layer: "" }), bounds).errors).toEqual({ layer: "a whole number" });
    expect(validateAttention(draft({ head: "1e3" }), bounds).errors).toEqual({ head: "a whole number" });
  });

  it("keeps the key at or before the query (causal attention)", () => {
    expect(validateAttention(draft({ query_position: "1", key_position: "2" }), bounds)).toEqual({
      request: null,
      errors: { key_position: "at or before the query position (attention is causal)" },
    });
  });
});

describe("decodeNodeId", () => {
  it("reads feature, error and embedding ids with the graph's tokens", () => {
    expect(decodeNodeId("1_20_2", tokens)).toEqual({
      kind: "feature",
      layer: 1,
      feature: 20,
      position: 2,
      label: "L1 feature 20 at “ cat” (position 2)",
    });
    expect(decodeNodeId("0_-1_3", tokens)).toMatchObject({ kind: "error", layer: 0, position: 3, label: "L0 error at “↵” (position 3)" });
    expect(decodeNodeId("E_464_1", tokens)).toMatchObject({ kind: "token", position: 1, label: "embedding of “The” (position 1)" });
  });

  it("falls back to the position past the tokens, and to the id for what it does not know", () => {
    expect(decodeNodeId("0_5_9", tokens).label).toBe("L0 feature 5 at position 9");
    expect(decodeNodeId("bias", tokens)).toEqual({ kind: "unknown", label: "bias" });
  });
});

describe("formatting", () => {
  it("says what was asked", () => {
    expect(describeAttention({ layer: 1, head: 3, query_position: 2, key_position: 1, top_k: 10 }, tokens)).toBe(
      "Layer 1, head 3: “ cat” (2) attending to “The” (1)",
    );
  });

  it("signs numbers with a real minus", () => {
    expect(signed(0.25)).toBe("+0.25");
    expect(signed(-1.5)).toBe("−1.5");
    expect(signed(0)).toBe("0");
    expect(signed(-0.00001)).toBe("−1.00e-5");
  });

  it("scales bars by the largest magnitude and sums what is not listed", () => {
    const side = [
      { node_id: "a", contribution: 2 },
      { node_id: "b", contribution: -3 },
    ];
    expect(largest(side, [{ contribution: 1 }])).toBe(3);
    expect(largest([], [])).toBe(0);
    expect(unlisted(1.5, 0.5, side)).toBeCloseTo(2);
    // float32 rounding is no contribution
    expect(unlisted(1.309, 0, [{ node_id: "a", contribution: 1.3090004 }])).toBe(0);
    expect(unlisted(1.309, 0, [{ node_id: "a", contribution: 1.3 }])).toBeCloseTo(0.009);
  });
});
