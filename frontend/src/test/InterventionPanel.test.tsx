import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { GraphNode } from "../api/client";
import { InterventionPanel } from "../circuits/InterventionPanel";

const tokens = ["<bos>", "The", " capital"];
const features: GraphNode[] = [
  { id: "0_10_1", kind: "feature", layer: 0, position: 1, feature: 10, activation: 3, influence: 0.4, cumulative: 0.3 },
  { id: "4_77_2", kind: "feature", layer: 4, position: 2, feature: 77, activation: 1, influence: 0.2, cumulative: 0.5 },
];
const logit = (token_id: number, token: string, probability: number) => ({ token_id, token, probability, logit: 1 });

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

afterEach(() => vi.unstubAllGlobals());

describe("InterventionPanel", () => {
  it("asks to pin features when none are pinned", () => {
    render(<InterventionPanel graphId="g1" features={[]} tokens={tokens} />);
    expect(screen.getByText(/Pin feature nodes/)).toBeInTheDocument();
    expect(screen.queryByRole("button", { name: "Run" })).not.toBeInTheDocument();
  });

  it("posts the pinned features' changes and shows a before/after table of top logits", async () => {
    const fetchMock = respond(200, {
      before: [logit(1, " Paris", 0.75), logit(2, " Lyon", 0.05), logit(3, " the", 0.02)],
      after: [logit(2, " Lyon", 0.3), logit(1, " Paris", 0.25), logit(4, "\n", 0.1)],
    });
    localStorage.setItem("lm-saes-token", "tok");
    render(<InterventionPanel graphId="g 1" features={features} tokens={tokens} />);

    const first = screen.getByRole("spinbutton", { name: /Value for Feature 10 at layer 0/ });
    await userEvent.clear(first);
    await userEvent.type(first, "-2");
    await userEvent.selectOptions(screen.getByRole("combobox", { name: /Mode for Feature 77 at layer 4/ }), "clamp");
    const second = screen.getByRole("spinbutton", { name: /Value for Feature 77 at layer 4/ });
    await userEvent.clear(second);
    await userEvent.type(second, "5.5");
    await userEvent.click(screen.getByRole("checkbox", { name: /Keep each transcoder's active features/ }));
    await userEvent.click(screen.getByRole("button", { name: "Run" }));

    const table = await screen.findByRole("table", { name: "Top logits before and after" });
    const [url, init] = fetchMock.mock.calls[0] as unknown as [string, RequestInit];
    expect(url).toBe("/api/v1/circuits/g%201/interventions");
    expect(init.method).toBe("POST");
    expect((init.headers as Record<string, string>).Authorization).toBe("Bearer tok");
    expect(JSON.parse(init.body as string)).toEqual({
      changes: [
        { layer: 0, position: 1, feature: 10, value: -2, mode: "scale" },
        { layer: 4, position: 2, feature: 77, value: 5.5, mode: "clamp" },
      ],
      top_k: 10,
      freeze_active_set: true,
    });

    const rows = within(table)
      .getAllByRole("row")
      .map((r) => within(r).getAllByRole(r.querySelector("th") ? "columnheader" : "cell").map((c) => c.textContent));
    expect(rows).toEqual([
      ["Token", "Before", "After", "Δ"],
      [" Paris", "75.0%", "25.0%", "−50.00 pp"],
      [" Lyon", "5.0%", "30.0%", "+25.00 pp"],
      [" the", "2.0%", "—", "—"],
      ["↵", "—", "10.0%", "—"],
    ]);
  });

  it("shows the gateway's problems inline", async () => {
    respond(422, { title: "Invalid request", status: 422, detail: "changes: feature 77 is not active at position 2", field: "changes" });
    render(<InterventionPanel graphId="g1" features={features} tokens={tokens} />);
    await userEvent.click(screen.getByRole("button", { name: "Run" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("changes: feature 77 is not active at position 2");
    expect(screen.queryByRole("table", { name: "Top logits before and after" })).not.toBeInTheDocument();

    respond(401, { title: "Unauthorized", status: 401, detail: "a bearer token is required" });
    await userEvent.click(screen.getByRole("button", { name: "Run" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("Unauthorized (401)a bearer token is required");
  });

  it("does not run with an empty value", async () => {
    const fetchMock = respond(200, { before: [], after: [] });
    render(<InterventionPanel graphId="g1" features={features.slice(0, 1)} tokens={tokens} />);
    await userEvent.clear(screen.getByRole("spinbutton"));
    expect(screen.getByRole("button", { name: "Run" })).toBeDisabled();
    expect(fetchMock).not.toHaveBeenCalled();
  });
});
