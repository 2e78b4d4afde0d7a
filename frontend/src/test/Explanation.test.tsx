import { render, screen, within } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { ExplanationPanel } from "../components/ExplanationPanel";
import { ScoreHistogram, scoreBins } from "../components/ScoreHistogram";

const explanation = {
  text: "Mentions of cats and kittens",
  model: "qwen2.5-7b",
  prompt_version: "v3",
  created: "2026-03-04T05:06:07+00:00",
  prompt_tokens: 100,
  completion_tokens: 10,
  scores: {
    detection: { value: 0.9, examples: 40, positives: 20, model: "qwen2.5-7b", prompt_version: "v3", failed: 1 },
    embedding: { value: 0.71, examples: 40, positives: 20, model: "", prompt_version: "v3", failed: 0 },
  },
};

afterEach(() => vi.unstubAllGlobals());

describe("ExplanationPanel", () => {
  it("shows the text, the explainer and each score with its example counts", () => {
    render(<ExplanationPanel explanation={explanation} score={0.9} />);
    expect(screen.getByText("Mentions of cats and kittens")).toBeInTheDocument();
    expect(screen.getByText(/Explained by/)).toHaveTextContent("qwen2.5-7b · prompt v3 · 2026-03-04 05:06");
    expect(screen.getByLabelText("Summary score")).toHaveTextContent("score 0.9");
    const rows = within(screen.getByRole("table", { name: "Explanation scores" })).getAllByRole("row").slice(1);
    expect(rows.map((r) => within(r).getByRole("rowheader").textContent)).toEqual(["Detection", "Fuzzing", "Embedding"]);
    expect(rows[0]).toHaveTextContent("0.9" + "40" + "20" + "1" + "qwen2.5-7b");
    expect(rows[1]).toHaveTextContent("not scored");
    expect(rows[2]).toHaveTextContent("0.71" + "40" + "20" + "0" + "all-MiniLM-L6-v2");
  });

  it("says when the feature is not explained", () => {
    render(<ExplanationPanel explanation={null} />);
    expect(screen.getByText(/Not explained yet/)).toBeInTheDocument();
    expect(screen.queryByRole("table")).not.toBeInTheDocument();
  });
});

describe("ScoreHistogram", () => {
  it("bins label their score range", () => {
    expect(scoreBins({ edges: [0, 0.5, 1], counts: [3, 4] })).toEqual([
      { label: "0–0.5", count: 3 },
      { label: "0.5–1", count: 4 },
    ]);
  });

  it("draws the SAE's distribution, or says nothing is scored", async () => {
    const edges = Array.from({ length: 21 }, (_, i) => i / 20);
    const counts = Array.from({ length: 20 }, (_, i) => (i >= 10 ? i - 9 : 0));
    let body: unknown = { total: 256, scored: 55, mean: 0.78, edges, counts };
    const fetchMock = vi.fn(async (_input: string) => new Response(JSON.stringify(body), { status: 200 }));
    vi.stubGlobal("fetch", fetchMock);
    const { unmount } = render(<ScoreHistogram saeId="sae a" />);
    expect(await screen.findByRole("figure", { name: "Explanation scores (features per bin)" })).toBeInTheDocument();
    expect(screen.getByText(/55 of 256 features explained and scored · mean 0.78/)).toBeInTheDocument();
    expect(fetchMock.mock.calls[0][0]).toBe("/api/v1/saes/sae%20a/scores");
    unmount();
    body = { total: 256, scored: 0, mean: null, edges, counts: new Array(20).fill(0) };
    render(<ScoreHistogram saeId="sae a" />);
    expect(await screen.findByText(/No explained features yet/)).toBeInTheDocument();
  });
});
