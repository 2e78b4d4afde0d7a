import { render, screen, within } from "@testing-library/react";
import { createMemoryRouter, RouterProvider } from "react-router";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { evalDensityBins } from "../components/DensityHistogram";
import { FeaturePage, neighbourGroups } from "../pages/FeaturePage";
import { SaePage } from "../pages/SaePage";

const feature = {
  sae_id: "alpha",
  index: 3,
  density: 0.01,
  max_activation: 2,
  top_examples: [],
  quantile_samples: [],
  top_tokens: [],
  neighbours: [
    { sae_id: "alpha", index: 9, similarity: 0.61, kind: "decoder" },
    { sae_id: "alpha", index: 1, similarity: 0.4, kind: "decoder" },
    { sae_id: "b/2 wide", index: 17, similarity: 0.912, kind: "activation" },
  ],
};
const evals = {
  core: {
    tokens: 4096,
    l0: 20,
    explained_variance: 0.9,
    mse: 0.01,
    dead_fraction: 0.05,
    dense_fraction: 0,
    ce_loss_recovered: 0.95,
    delta_lm_loss: 0.1,
    kl_divergence: 0.0123,
    density: { log10_edges: [-3, -2, -1, 0], counts: [5, 40, 15], dead: 4 },
  },
  universality: {
    tokens: 5000,
    features_a: 64,
    features_b: 128,
    alive_a: 60,
    alive_b: 100,
    mean_max_correlation: 0.71,
    partner_fraction: 0.55,
    mean_max_correlation_b: 0.42,
    partner_fraction_b: 0.25,
    decoder_mean_max_cosine: 0.61,
    decoder_matched_cosine: 0.52,
  },
  compared_id: "b/2 wide",
  absorption: { mean_absorption_rate: 0.125, mean_full_absorption_rate: 0.05 },
  probing: { mean_sparse_accuracy: { "1": 0.71, "5": 0.8 }, mean_dense_accuracy: 0.93 },
  synthetic: [],
  seconds: { core: 12.34, universality: 3 },
};
let detail: Record<string, unknown>;

const json = (body: unknown, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

beforeEach(() => {
  detail = { id: "alpha", model: "tiny", architecture: "topk", d_sae: 64, metrics: { l0: 20 }, evals, analyses: [] };
  vi.stubGlobal(
    "fetch",
    vi.fn(async (input: string) => {
      const url = new URL(input, "http://x");
      if (url.pathname === "/api/v1/saes/alpha") return json(detail);
      if (url.pathname === "/api/v1/saes/alpha/features/3") return json(feature);
      if (url.pathname === "/api/v1/saes/alpha/features")
        return json({ items: [], total: 0, offset: 0, limit: 50, sort: "index", order: "asc" });
      if (url.pathname === "/api/v1/saes/alpha/scores")
        return json({ total: 0, scored: 0, mean: null, edges: [0, 1], counts: [0] });
      return json({ title: "Not found", status: 404 }, 404);
    }),
  );
});
afterEach(() => vi.unstubAllGlobals());

function renderAt(url: string) {
  const router = createMemoryRouter(
    [
      { path: "/saes/:saeId", element: <SaePage /> },
      { path: "/saes/:saeId/features/:index", element: <FeaturePage /> },
    ],
    { initialEntries: [url] },
  );
  render(<RouterProvider router={router} />);
}

describe("feature page neighbours", () => {
  it("lists decoder neighbours in the SAE and activation partners in another, linked", async () => {
    renderAt("/saes/alpha/features/3");
    const decoder = await screen.findByRole("list", { name: "Similar decoder directions in this SAE" });
    const links = within(decoder).getAllByRole("link");
    expect(links.map((l) => [l.textContent, l.getAttribute("href")])).toEqual([
      ["#9", "/saes/alpha/features/9"],
      ["#1", "/saes/alpha/features/1"],
    ]);
    expect(decoder).toHaveTextContent("cosine 0.61");
    const across = screen.getByRole("list", { name: "Partners in b/2 wide (activation correlation)" });
    expect(within(across).getByRole("link", { name: "b/2 wide #17" })).toHaveAttribute(
      "href",
      "/saes/b%2F2%20wide/features/17",
    );
    expect(across).toHaveTextContent("correlation 0.912");
    expect(screen.getByRole("link", { name: "compare" })).toHaveAttribute("href", "/compare?a=alpha&b=b%2F2%20wide");
  });

  it("groups this SAE's decoder neighbours first, and says when none are stored", () => {
    const groups = neighbourGroups("alpha", [
      { sae_id: "beta", index: 1, similarity: 0.5, kind: "activation" },
      { sae_id: "alpha", index: 2, similarity: 0.5, kind: "decoder" },
      { sae_id: "beta", index: 3, similarity: 0.4, kind: "activation" },
    ]);
    expect(groups.map((g) => [g.kind, g.sae, g.items.map((n) => n.index)])).toEqual([
      ["decoder", "alpha", [2]],
      ["activation", "beta", [1, 3]],
    ]);
  });
});

describe("SAE page evaluation suites", () => {
  it("shows the stored report: core with KL and the held-out density, universality, absorption, probing", async () => {
    renderAt("/saes/alpha");
    const section = await screen.findByRole("region", { name: "Evaluation suites" });
    const core = within(section).getByRole("region", { name: "Core (4,096 held-out tokens)" });
    expect(core).toHaveTextContent("KL divergence0.0123");
    expect(core).toHaveTextContent("CE recovered0.95");
    expect(within(core).getByRole("figure", { name: "Feature density on held-out tokens (log10 bins)" })).toBeVisible();
    expect(core).toHaveTextContent("64 latents, 4 never fired");
    const u = within(section).getByRole("region", { name: "Universality against b/2 wide" });
    expect(u).toHaveTextContent("55.0% of this SAE's 60 live features have a partner");
    expect(within(u).getByRole("link", { name: "Compare their features" })).toHaveAttribute(
      "href",
      "/compare?a=alpha&b=b%2F2%20wide",
    );
    expect(within(section).getByRole("region", { name: "Absorption (first letters)" })).toHaveTextContent("12.5%");
    const probing = within(section).getByRole("region", { name: "Sparse probing" });
    expect(probing).toHaveTextContent("Best 1 features0.71");
    expect(probing).toHaveTextContent("Dense probe0.93");
    expect(probing).not.toHaveTextContent("Best 2 features");
    expect(section).toHaveTextContent("Wall time: core 12.3 s · universality 3 s");
  });

  it("says how to store a report when there is none", async () => {
    detail = { ...detail, evals: null };
    renderAt("/saes/alpha");
    const section = await screen.findByRole("region", { name: "Evaluation suites" });
    expect(section).toHaveTextContent("No evaluation suite report yet");
    expect(section).toHaveTextContent("--sae-id alpha");
  });

  it("bins the evaluation's density histogram with dead latents apart", () => {
    expect(evalDensityBins(evals.core.density)).toEqual([
      { label: "dead", count: 4 },
      { label: "1e-3.0", count: 5 },
      { label: "1e-2.0", count: 40 },
      { label: "1e-1.0", count: 15 },
    ]);
  });
});
