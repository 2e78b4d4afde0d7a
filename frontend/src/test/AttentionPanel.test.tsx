import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import { AttentionPanel } from "../circuits/AttentionPanel";
import type { AttentionDraft } from "../circuits/attention";

const tokens = ["<bos>", "The", " cat"];
const initial: AttentionDraft = { layer: "1", head: "0", query_position: "2", key_position: "1", top_k: "10" };
const inGraph = (id: string) => ["0_10_1", "1_20_2", "E_464_1"].includes(id);

const explanation = {
  score: 2.5,
  query_side: [
    { node_id: "1_20_2", contribution: 1.5 },
    { node_id: "0_7_2", contribution: -0.25 },
  ],
  key_side: [
    { node_id: "0_10_1", contribution: 2 },
    { node_id: "1_3_1", contribution: 0 }, // cannot reach the head: not listed
    { node_id: "E_464_1", contribution: 0.75 },
    { node_id: "0_-1_1", contribution: -0.5 },
  ],
  query_bias: 0.5,
  key_bias: 0.125,
  pairs: [
    { query_node_id: "1_20_2", key_node_id: "0_10_1", contribution: 1.25 },
    { query_node_id: "1_20_2", key_node_id: "1_3_1", contribution: 0 },
  ],
};

function respond(status: number, body: unknown) {
  const fetchMock = vi.fn(async () =>
    new Response(JSON.stringify(body), {
      status,
      headers: { "Content-Type": status < 400 ? "application/json" : "application/problem+json" },
    }),
  );
  vi.stubGlobal("fetch", fetchMock);
  return fetchMock;
}

function renderPanel(props: Partial<Parameters<typeof AttentionPanel>[0]> = {}) {
  const onSelectNode = vi.fn();
  const onClose = vi.fn();
  render(
    <AttentionPanel
      graphId="g 1"
      tokens={tokens}
      nLayers={2}
      initial={initial}
      inGraph={inGraph}
      onSelectNode={onSelectNode}
      onClose={onClose}
      {...props}
    />,
  );
  return { onSelectNode, onClose };
}

const cells = (table: HTMLElement) =>
  within(table)
    .getAllByRole("row")
    .map((r) => within(r).getAllByRole(r.querySelector("th") ? "columnheader" : "cell").map((c) => c.textContent));

afterEach(() => vi.unstubAllGlobals());

describe("AttentionPanel", () => {
  it("posts the prefilled question and shows the score, each side's nodes and the top pairs", async () => {
    const fetchMock = respond(200, explanation);
    localStorage.setItem("lm-saes-token", "tok");
    const { onSelectNode } = renderPanel();
    expect(screen.getByRole("region", { name: "Explain attention" })).toBeInTheDocument();
    expect(screen.getByLabelText(/Query position/)).toHaveValue(2);
    expect(screen.getByLabelText(/Key position/)).toHaveValue(1);
    expect(screen.getByText("“ cat”")).toBeInTheDocument(); // the query's token, next to its input

    await userEvent.clear(screen.getByLabelText("Head"));
    await userEvent.type(screen.getByLabelText("Head"), "3");
    await userEvent.click(screen.getByRole("button", { name: "Explain attention" }));

    const query = await screen.findByRole("table", { name: "Query-side nodes" });
    const [url, init] = fetchMock.mock.calls[0] as unknown as [string, RequestInit];
    expect(url).toBe("/api/v1/circuits/g%201/attention");
    expect(init.method).toBe("POST");
    expect((init.headers as Record<string, string>).Authorization).toBe("Bearer tok");
    expect(JSON.parse(init.body as string)).toEqual({ layer: 1, head: 3, query_position: 2, key_position: 1, top_k: 10 });

    expect(screen.getByRole("heading", { name: "Layer 1, head 3: “ cat” (2) attending to “The” (1)" })).toBeInTheDocument();
    expect(screen.getByTestId("attention-score")).toHaveTextContent("2.5");
    expect(cells(query)).toEqual([
      ["Node", "Contribution"],
      ["L1 feature 20 at “ cat” (position 2)", "+1.5"],
      ["L0 feature 7 at “ cat” (position 2) (not in graph)", "−0.25"],
      ["Other nodes", "+0.75"], // 2.5 - 0.5 - (1.5 - 0.25)
      ["Bias (no node)", "+0.5"],
    ]);
    expect(cells(screen.getByRole("table", { name: "Key-side nodes" }))).toEqual([
      ["Node", "Contribution"],
      ["L0 feature 10 at “The” (position 1)", "+2"],
      ["embedding of “The” (position 1)", "+0.75"],
      ["L0 error at “The” (position 1) (not in graph)", "−0.5"],
      ["Other nodes", "+0.125"],
      ["Bias (no node)", "+0.125"],
    ]);
    expect(cells(screen.getByRole("table", { name: "Top node pairs" }))).toEqual([
      ["Query node", "Key node", "Contribution"],
      ["L1 feature 20 at “ cat” (position 2)", "L0 feature 10 at “The” (position 1)", "+1.25"],
    ]);

    // nodes of the graph select it there; others are text
    await userEvent.click(within(query).getByRole("button", { name: /L1 feature 20/ }));
    expect(onSelectNode).toHaveBeenCalledWith("1_20_2");
    expect(within(query).queryByRole("button", { name: /L0 feature 7/ })).not.toBeInTheDocument();
  });

  it("checks the inputs before asking: the key at or before the query, the layer in range", async () => {
    const fetchMock = respond(200, explanation);
    renderPanel();
    const key = screen.getByLabelText(/Key position/);
    await userEvent.clear(key);
    await userEvent.type(key, "2");
    expect(screen.getByRole("button", { name: "Explain attention" })).toBeEnabled(); // a token may attend to itself
    await userEvent.clear(screen.getByLabelText(/Query position/));
    await userEvent.type(screen.getByLabelText(/Query position/), "1");
    expect(key).toHaveAttribute("aria-invalid", "true");
    expect(key).toHaveAccessibleDescription("at or before the query position (attention is causal)");
    await userEvent.clear(screen.getByLabelText("Layer"));
    await userEvent.type(screen.getByLabelText("Layer"), "2");
    expect(screen.getByLabelText("Layer")).toHaveAccessibleDescription("one of the layers 0..1");
    expect(screen.getByRole("button", { name: "Explain attention" })).toBeDisabled();
    expect(fetchMock).not.toHaveBeenCalled();
  });

  it("shows the gateway's problem next to the field it blames, and others as an alert", async () => {
    respond(422, { title: "Invalid request", status: 422, detail: "head: 3 is outside 0..1", field: "head" });
    renderPanel({ initial: { ...initial, head: "3" } });
    await userEvent.click(screen.getByRole("button", { name: "Explain attention" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("head: 3 is outside 0..1");
    expect(screen.getByLabelText("Head")).toHaveAttribute("aria-invalid", "true");
    expect(screen.getByLabelText("Head")).toHaveAccessibleDescription("head: 3 is outside 0..1");
    expect(screen.queryByRole("table")).not.toBeInTheDocument();

    respond(403, { title: "Forbidden", status: 403, detail: "the token lacks the compute scope" });
    await userEvent.click(screen.getByRole("button", { name: "Explain attention" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("Forbidden (403)the token lacks the compute scope");
    expect(screen.getByLabelText("Head")).not.toHaveAttribute("aria-invalid");
  });

  it("closes", async () => {
    const { onClose } = renderPanel();
    await userEvent.click(screen.getByRole("button", { name: "Close the attention panel" }));
    expect(onClose).toHaveBeenCalled();
  });
});
