import { act, fireEvent, render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { createMemoryRouter, RouterProvider, useLocation } from "react-router";
import { afterEach, beforeEach, describe, expect, it, onTestFinished, vi } from "vitest";
import type { Graph } from "../api/client";
import type { GraphViewProps } from "../circuits/GraphView";
import { CircuitPage } from "../pages/CircuitPage";

// React Flow needs layout APIs jsdom lacks; the page's logic is tested against a stand-in that
// draws each node as a button (click = what a click on a React Flow node does: pin it), and each
// link as a button (click = a click on a React Flow link).
vi.mock("../circuits/GraphView", () => ({
  default: (props: GraphViewProps) => (
    <>
      <div data-testid="graph-view" data-links={props.links.length}>
        {props.nodes.map((n) => (
          <button
            key={n.id}
            type="button"
            data-pinned={props.pinned.has(n.id)}
            data-inspected={props.inspected === n.id}
            onClick={() => props.onTogglePin(n.id)}
            onMouseEnter={() => props.onHover(n.id)}
          >
            node {n.id}
          </button>
        ))}
      </div>
      <div data-testid="graph-links">
        {props.links.map((l) => (
          <button key={`${l.source}->${l.target}`} type="button" onClick={() => props.onLinkClick?.(l.source, l.target)}>
            link {l.source}-&gt;{l.target}
          </button>
        ))}
      </div>
    </>
  ),
}));

const graph: Graph = {
  id: "g1",
  model: "tiny",
  prompt: "The cat",
  transcoders: "runs/tc",
  n_layers: 2,
  layers: [0, 1],
  tokens: ["<bos>", "The", " cat"],
  logits: [
    { token: " sat", token_id: 5, probability: 0.6 },
    { token: " ran", token_id: 6, probability: 0.2 },
  ],
  saes: { "0": "sae-l0" },
  thresholds: { node: 0.8, edge: 0.98 },
  scores: { replacement: 0.75, completeness: 0.9 },
  counts: { nodes: 7 },
  created: null,
  nodes: [
    { id: "E_0_0", kind: "token", layer: -1, position: 0, token: "<bos>", influence: 0.1, cumulative: 0 },
    { id: "E_1_1", kind: "token", layer: -1, position: 1, token: "The", influence: 0.1, cumulative: 0 },
    { id: "E_2_2", kind: "token", layer: -1, position: 2, token: " cat", influence: 0.1, cumulative: 0 },
    { id: "0_10_1", kind: "feature", layer: 0, position: 1, feature: 10, activation: 3.5, influence: 0.4, cumulative: 0.3 },
    { id: "1_20_2", kind: "feature", layer: 1, position: 2, feature: 20, activation: 1.25, influence: 0.2, cumulative: 0.6 },
    { id: "1_-1_2", kind: "error", layer: 1, position: 2, influence: 0.05, cumulative: 0.9 },
    { id: "3_5_2", kind: "logit", layer: 2, position: 2, token: " sat", probability: 0.6, influence: 0, cumulative: 0 },
  ],
  links: [
    { source: "E_1_1", target: "0_10_1", weight: 2 },
    { source: "0_10_1", target: "1_20_2", weight: 1 },
    { source: "1_20_2", target: "3_5_2", weight: -0.5 },
    { source: "1_-1_2", target: "3_5_2", weight: 0.3 },
  ],
};

const feature10 = {
  sae_id: "sae-l0", index: 10, density: 0.01, max_activation: 4, mean_activation: 1,
  top_examples: [{ max_activation: 4, tokens: ["a", " big", " cat"], activations: [0, 4, 1] }],
};

const attention = {
  score: 1.5,
  query_side: [
    { node_id: "1_-1_2", contribution: 1 }, // in the graph, hidden at the default pruning
    { node_id: "0_99_2", contribution: 0.25 }, // not in the graph
  ],
  key_side: [{ node_id: "0_10_1", contribution: 1.25 }],
  query_bias: 0.25,
  key_bias: 0.25,
  pairs: [{ query_node_id: "1_-1_2", key_node_id: "0_10_1", contribution: 0.75 }],
};

let fetchMock: ReturnType<typeof vi.fn>;
beforeEach(() => {
  fetchMock = vi.fn(async (input: string) => {
    const json = (body: unknown, status = 200) =>
      new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
    if (input === "/api/v1/circuits/g1") return json(graph);
    if (input === "/api/v1/saes/sae-l0/features/10") return json(feature10);
    if (input === "/api/v1/circuits/g1/export") return json({ metadata: { slug: "g1" }, nodes: [], links: [] });
    if (input === "/api/v1/circuits/g1/attention") return json(attention);
    return json({ title: "Not found", status: 404, detail: `no ${input}` }, 404);
  });
  vi.stubGlobal("fetch", fetchMock);
});
afterEach(() => {
  vi.unstubAllGlobals();
  vi.restoreAllMocks();
  localStorage.clear();
});

function Probe() {
  const location = useLocation();
  return <output data-testid="location">{location.pathname + location.search}</output>;
}

function renderAt(url: string) {
  const router = createMemoryRouter(
    [{ path: "/circuits/:graphId", element: <><CircuitPage /><Probe /></> }],
    { initialEntries: [url] },
  );
  render(<RouterProvider router={router} />);
  return router;
}

const pinnedParam = () => new URLSearchParams(screen.getByTestId("location").textContent!.split("?")[1] ?? "").get("pinned");
const shownNodes = () => within(screen.getByTestId("graph-view")).getAllByRole("button").map((b) => b.textContent!.slice(5));

describe("CircuitPage", () => {
  it("shows the scores, top logits and the export link", async () => {
    renderAt("/circuits/g1");
    expect(await screen.findByRole("heading", { name: /The cat/ })).toBeInTheDocument();
    expect(screen.getByText("Replacement score").nextSibling).toHaveTextContent("0.75");
    expect(screen.getByText("Completeness score").nextSibling).toHaveTextContent("0.9");
    expect(screen.getByLabelText("Top output logits")).toHaveTextContent("sat 60.0%");
    expect(screen.getByRole("link", { name: "Open in Neuronpedia / circuit-tracer (JSON)" })).toHaveAttribute(
      "href",
      "/api/v1/circuits/g1/export",
    );
  });

  it("downloads the export with the API token when one is stored (a link cannot send it)", async () => {
    localStorage.setItem("lm-saes-token", "tok");
    const blobs: Blob[] = [];
    const { createObjectURL, revokeObjectURL } = URL; // jsdom has neither
    URL.createObjectURL = (blob: Blob) => (blobs.push(blob), "blob:g1");
    URL.revokeObjectURL = () => {};
    onTestFinished(() => void Object.assign(URL, { createObjectURL, revokeObjectURL }));
    const saved: string[] = [];
    vi.spyOn(HTMLAnchorElement.prototype, "click").mockImplementation(function (this: HTMLAnchorElement) {
      saved.push(`${this.download} ${this.href}`);
    });
    renderAt("/circuits/g1");
    await userEvent.click(await screen.findByRole("link", { name: "Open in Neuronpedia / circuit-tracer (JSON)" }));
    await waitFor(() => expect(saved).toEqual(["g1.json blob:g1"]));
    const [url, init] = fetchMock.mock.calls.find(([u]) => u === "/api/v1/circuits/g1/export") as [string, RequestInit];
    expect(url).toBe("/api/v1/circuits/g1/export");
    expect((init.headers as Record<string, string>).Authorization).toBe("Bearer tok");
    expect(JSON.parse(await blobs[0].text())).toEqual({ metadata: { slug: "g1" }, nodes: [], links: [] });
  });

  it("reads pinned nodes from the URL and writes pins back to it", async () => {
    renderAt("/circuits/g1?pinned=0_10_1,nope");
    await screen.findByTestId("graph-view");
    // the unknown id is ignored; the pinned feature is listed for interventions
    expect(screen.getByRole("button", { name: "Clear pins (1)" })).toBeEnabled();
    expect(screen.getByRole("spinbutton", { name: /Value for Feature 10 at layer 0/ })).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "node 0_10_1" })).toHaveAttribute("data-pinned", "true");

    // a click on a graph node pins it
    await userEvent.click(screen.getByRole("button", { name: "node 1_20_2" }));
    await waitFor(() => expect(pinnedParam()).toBe("0_10_1,1_20_2"));
    expect(screen.getByRole("spinbutton", { name: /Value for Feature 20 at layer 1/ })).toBeInTheDocument();

    // the node list (keyboard alternative) unpins
    await userEvent.click(screen.getByRole("button", { name: /^Pin Feature 10 at layer 0/ }));
    await waitFor(() => expect(pinnedParam()).toBe("1_20_2"));

    // pinned only: the subgraph of the pinned nodes
    await userEvent.click(screen.getByRole("checkbox", { name: /Show pinned only/ }));
    expect(shownNodes()).toEqual(["1_20_2"]);
    await userEvent.click(screen.getByRole("checkbox", { name: /Show pinned only/ }));

    await userEvent.click(screen.getByRole("button", { name: "Clear pins (1)" }));
    await waitFor(() => expect(pinnedParam()).toBeNull());
  });

  it("prunes by cumulative influence with the slider, keeping tokens and logits", async () => {
    renderAt("/circuits/g1");
    await screen.findByTestId("graph-view");
    const slider = screen.getByRole("slider", { name: /Pruning/ });
    expect(slider).toHaveValue("0.8"); // the graph's node threshold
    expect(shownNodes()).not.toContain("1_-1_2");
    expect(shownNodes()).toHaveLength(6);
    act(() => void fireEvent.change(slider, { target: { value: "0.4" } }));
    expect(shownNodes()).toEqual(["E_0_0", "E_1_1", "E_2_2", "0_10_1", "3_5_2"]);
    expect(screen.getByTestId("graph-view")).toHaveAttribute("data-links", "1");
    act(() => void fireEvent.change(slider, { target: { value: "1" } }));
    expect(shownNodes()).toHaveLength(7);
  });

  it("shows a hovered feature's top activations, or that its layer was not analyzed", async () => {
    renderAt("/circuits/g1");
    await screen.findByTestId("graph-view");
    await userEvent.hover(screen.getByRole("button", { name: "node 0_10_1" }));
    expect(await screen.findByRole("heading", { name: /Top activations/ })).toBeInTheDocument();
    const details = screen.getByRole("heading", { name: /Feature 10 at layer 0/ }).closest("section")!;
    expect(details).toHaveTextContent("Activation3.5");
    expect(details).toHaveTextContent("Influence0.4");
    expect(within(details).getAllByTestId("token").map((t) => t.textContent)).toEqual(["a", " big", " cat"]);
    expect(fetchMock).toHaveBeenCalledWith("/api/v1/saes/sae-l0/features/10", expect.anything());

    await userEvent.hover(screen.getByRole("button", { name: "node 1_20_2" }));
    expect(await screen.findByText(/Not analyzed/)).toBeInTheDocument();
  });

  it("explains a link between two positions by the attention that carries it", async () => {
    renderAt("/circuits/g1");
    await screen.findByTestId("graph-view");
    // a link within one position opens nothing
    await userEvent.click(screen.getByRole("button", { name: "link 1_20_2->3_5_2" }));
    expect(screen.queryByRole("region", { name: "Explain attention" })).not.toBeInTheDocument();

    await userEvent.click(screen.getByRole("button", { name: "link 0_10_1->1_20_2" }));
    const panel = screen.getByRole("region", { name: "Explain attention" });
    const value = (label: RegExp | string) => (within(panel).getByLabelText(label) as HTMLInputElement).value;
    expect([value("Layer"), value("Head"), value(/Query position/), value(/Key position/)]).toEqual(["1", "0", "2", "1"]);
    await userEvent.click(within(panel).getByRole("button", { name: "Explain attention" }));
    const query = await within(panel).findByRole("table", { name: "Query-side nodes" });
    const [, init] = fetchMock.mock.calls.find(([u]) => u === "/api/v1/circuits/g1/attention") as [string, RequestInit];
    expect(JSON.parse(init.body as string)).toEqual({ layer: 1, head: 0, query_position: 2, key_position: 1, top_k: 10 });
    expect(within(panel).getByTestId("attention-score")).toHaveTextContent("1.5");
    expect(within(query).getByText(/L0 feature 99/)).toHaveTextContent("(not in graph)");

    // a node of the results is selected in the graph, drawn even where pruning hides it
    expect(shownNodes()).not.toContain("1_-1_2");
    await userEvent.click(within(query).getByRole("button", { name: /L1 error at “ cat”/ }));
    expect(shownNodes()).toContain("1_-1_2");
    expect(screen.getByRole("button", { name: "node 1_-1_2" })).toHaveAttribute("data-inspected", "true");
    expect(screen.getByRole("heading", { name: /Error node at layer 1/ })).toBeInTheDocument();

    // another link asks again from its own positions
    await userEvent.click(screen.getByRole("button", { name: "link 0_10_1->1_20_2" }));
    expect(within(screen.getByRole("region", { name: "Explain attention" })).queryByRole("table")).not.toBeInTheDocument();

    await userEvent.click(screen.getByRole("button", { name: "Close the attention panel" }));
    expect(screen.queryByRole("region", { name: "Explain attention" })).not.toBeInTheDocument();
  });

  it("opens the attention panel without a link, at the last position", async () => {
    renderAt("/circuits/g1");
    await screen.findByTestId("graph-view");
    await userEvent.click(screen.getByRole("button", { name: "Explain attention…" }));
    const panel = screen.getByRole("region", { name: "Explain attention" });
    expect(within(panel).getByLabelText(/Query position/)).toHaveValue(2);
    expect(within(panel).getByLabelText(/Key position/)).toHaveValue(1);
    expect(within(panel).getByLabelText("Layer")).toHaveValue(1);
  });

  it("shows the gateway's problem when the graph does not exist", async () => {
    renderAt("/circuits/nope");
    expect(await screen.findByRole("alert")).toHaveTextContent("Not found (404)");
  });
});
