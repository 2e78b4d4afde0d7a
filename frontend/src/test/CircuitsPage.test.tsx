import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter } from "react-router";
import { afterEach, describe, expect, it, vi } from "vitest";
import { CircuitsPage } from "../pages/CircuitsPage";

const summary = {
  id: "graph-1", model: "smollm2-135m", prompt: "The capital of France is",
  scores: { replacement: 0.221, completeness: 0.689 }, created: "2026-01-01T00:00:00Z", layers: [0, 3, 6],
};

function stub(traceStatus: number, traceBody: unknown) {
  const fetchMock = vi.fn(async (_input: string, init?: RequestInit) => {
    if (init?.method === "POST")
      return new Response(JSON.stringify(traceBody), { status: traceStatus, headers: { "Content-Type": "application/json" } });
    return new Response(JSON.stringify({ items: [summary] }), { status: 200 });
  });
  vi.stubGlobal("fetch", fetchMock);
  return fetchMock;
}

afterEach(() => vi.unstubAllGlobals());

describe("CircuitsPage", () => {
  it("lists graphs with their prompt, model and scores, linked to the graph page", async () => {
    stub(201, {});
    render(<MemoryRouter><CircuitsPage /></MemoryRouter>);
    const link = await screen.findByRole("link", { name: "The capital of France is" });
    expect(link).toHaveAttribute("href", "/circuits/graph-1");
    const row = link.closest("tr")!;
    expect(within(row).getAllByRole("cell").map((c) => c.textContent)).toEqual(
      expect.arrayContaining(["smollm2-135m", "0.221", "0.689", "3"]),
    );
  });

  it("submits a trace and shows a 422 problem next to the field it blames", async () => {
    const fetchMock = stub(422, { title: "Invalid request", status: 422, detail: "node_threshold: Input should be less than or equal to 1", field: "node_threshold" });
    render(<MemoryRouter><CircuitsPage /></MemoryRouter>);
    await userEvent.type(screen.getByLabelText("Prompt"), "Hello");
    await userEvent.type(screen.getByLabelText("Transcoder set"), "runs/tc");
    await userEvent.type(screen.getByLabelText("Node threshold"), "0.5");
    await userEvent.click(screen.getByRole("button", { name: "Trace" }));
    const problem = await screen.findByRole("alert");
    expect(problem).toHaveTextContent("node_threshold: Input should be less than or equal to 1");
    expect(problem.id).toBe("trace-node_threshold-error");
    expect(screen.getByLabelText("Node threshold")).toHaveAttribute("aria-invalid", "true");
    expect(screen.getByLabelText("Node threshold")).toHaveAttribute("aria-describedby", "trace-node_threshold-error");
    expect(screen.getByLabelText("Prompt")).not.toHaveAttribute("aria-invalid");
    const post = fetchMock.mock.calls.find(([, init]) => (init as RequestInit | undefined)?.method === "POST")!;
    expect(post[0]).toBe("/api/v1/circuits");
    expect(JSON.parse((post[1] as RequestInit).body as string)).toEqual({ prompt: "Hello", transcoders: "runs/tc", node_threshold: 0.5 });
  });

  it("links to the graph once the tracing job has succeeded", async () => {
    stub(201, { id: "tracing-1", kind: "tracing", state: "succeeded", progress: 1, result: { graph_id: "graph-9" } });
    render(<MemoryRouter><CircuitsPage /></MemoryRouter>);
    await userEvent.type(screen.getByLabelText("Prompt"), "Hello");
    await userEvent.type(screen.getByLabelText("Transcoder set"), "runs/tc");
    await userEvent.click(screen.getByRole("button", { name: "Trace" }));
    expect(await screen.findByRole("link", { name: "open graph graph-9" })).toHaveAttribute("href", "/circuits/graph-9");
    expect(screen.getByRole("link", { name: "tracing-1" })).toHaveAttribute("href", "/jobs/tracing-1");
  });
});
