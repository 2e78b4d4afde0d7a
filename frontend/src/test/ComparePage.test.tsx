import { cleanup, render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { createMemoryRouter, RouterProvider, useLocation } from "react-router";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ComparePage } from "../pages/ComparePage";
import { headline, pairSummary } from "../evals";

const core = {
  tokens: 1000,
  l0: 20,
  explained_variance: 0.9,
  mse: 0.01,
  dead_fraction: 0.05,
  dense_fraction: 0,
  ce_loss_recovered: 0.95,
  kl_divergence: 0.0123,
};
const universality = {
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
};
// "alpha" ran every suite against "b/2 wide"; "b/2 wide" has its training metrics only; "gamma" nothing
const SAES = [
  {
    id: "alpha",
    model: "tiny",
    architecture: "topk",
    d_sae: 64,
    metrics: { l0: 99, explained_variance: 0.1 },
    evals: {
      core,
      universality,
      compared_id: "b/2 wide",
      absorption: { mean_absorption_rate: 0.125, mean_full_absorption_rate: 0.05 },
      probing: { mean_sparse_accuracy: { "1": 0.71, "2": 0.74, "5": 0.8, "20": 0.9 }, mean_dense_accuracy: 0.93 },
      synthetic: [],
      seconds: {},
    },
  },
  {
    id: "b/2 wide",
    model: "tiny",
    architecture: "relu",
    d_sae: 128,
    metrics: { l0: 45.5, explained_variance: 0.8, ce_loss_recovered: 0.7, dead_fraction: 0.2 },
    evals: null,
  },
  { id: "gamma", model: "other", metrics: {}, evals: null },
];
const partners = {
  sae_id: "alpha",
  partner: "b/2 wide",
  kind: "activation",
  items: [
    {
      index: 3,
      density: 0.02,
      max_activation: 2,
      neighbours: [
        { sae_id: "b/2 wide", index: 17, similarity: 0.91, kind: "activation" },
        { sae_id: "b/2 wide", index: 4, similarity: 0.33, kind: "activation" },
      ],
    },
    { index: 0, density: 0.01, max_activation: 1, neighbours: [] },
  ],
  total: 64,
  offset: 0,
  limit: 25,
  sort: "density",
  order: "desc",
};

let saes: typeof SAES;
let fetchMock: ReturnType<typeof vi.fn>;
let neighboursAnswer: () => Response;
const json = (body: unknown, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

beforeEach(() => {
  saes = structuredClone(SAES);
  neighboursAnswer = () => json(partners);
  fetchMock = vi.fn(async (input: string) => {
    const url = new URL(input, "http://x");
    if (url.pathname === "/api/v1/saes") return json(saes);
    if (url.pathname.endsWith("/neighbours")) return neighboursAnswer();
    return json({ title: "Not found", status: 404, detail: "nothing here" }, 404);
  });
  vi.stubGlobal("fetch", fetchMock);
});
afterEach(() => vi.unstubAllGlobals());

function Probe() {
  const location = useLocation();
  return <output data-testid="location">{location.pathname + location.search}</output>;
}

function renderAt(url: string) {
  const router = createMemoryRouter(
    [
      {
        path: "/compare",
        element: (
          <>
            <ComparePage />
            <Probe />
          </>
        ),
      },
      { path: "*", element: <p>elsewhere</p> },
    ],
    { initialEntries: [url] },
  );
  render(<RouterProvider router={router} />);
}

const neighbourCalls = () =>
  fetchMock.mock.calls
    .map((c) => new URL(c[0] as string, "http://x"))
    .filter((u) => u.pathname.endsWith("/neighbours"))
    .map((u): Record<string, string> => ({ path: u.pathname, ...Object.fromEntries(u.searchParams) }));

function cells(table: HTMLElement, rowName: string) {
  const row = within(table).getByRole("rowheader", { name: rowName }).closest("tr")!;
  return within(row)
    .getAllByRole("cell")
    .map((c) => c.textContent);
}

describe("comparison page", () => {
  it("tabulates every SAE: the suite's core figures over the record's, suite columns when any SAE has them", async () => {
    renderAt("/compare");
    const table = await screen.findByRole("table", { name: "Metrics" });
    const headers = within(table)
      .getAllByRole("columnheader")
      .map((h) => h.textContent);
    expect(headers).toEqual([
      "SAE",
      "Model",
      "Architecture",
      "d_sae",
      "L0",
      "Explained variance",
      "CE recovered",
      "KL divergence",
      "Dead fraction",
      "Absorption",
      "Full absorption",
      "Sparse probe k=1",
      "Sparse probe k=2",
      "Sparse probe k=5",
      "Sparse probe k=20",
      "Dense probe",
      "Partners",
    ]);
    // alpha: the report's core (L0 20, not the record's 99), KL, absorption, probing, universality
    expect(cells(table, "alpha")).toEqual([
      "tiny",
      "topk",
      "64",
      "20",
      "0.9",
      "0.95",
      "0.0123",
      "5.0%",
      "12.5%",
      "5.0%",
      "0.71",
      "0.74",
      "0.8",
      "0.9",
      "0.93",
      "55.0% vs b/2 wide",
    ]);
    expect(cells(table, "b/2 wide").slice(3, 9)).toEqual(["45.5", "0.8", "0.7", "—", "20.0%", "—"]);
    expect(cells(table, "gamma").slice(2)).toEqual(Array(14).fill("—"));
    const header = (name: string) => within(within(table).getByRole("rowheader", { name }));
    expect(header("b/2 wide").getByRole("link")).toHaveAttribute("href", "/saes/b%2F2%20wide");
    expect(header("alpha").getByRole("link")).toHaveAttribute("href", "/saes/alpha");
    // the partner figure links to the pair's comparison
    const vs = within(table)
      .getAllByRole("link", { name: "b/2 wide" })
      .find((l) => l.closest("td"));
    expect(vs).toHaveAttribute("href", "/compare?a=alpha&b=b%2F2%20wide");
  });

  it("leaves out the suite columns no SAE has", async () => {
    saes[0].evals = { ...saes[0].evals!, absorption: null, probing: null, universality: null } as never;
    renderAt("/compare");
    const table = await screen.findByRole("table", { name: "Metrics" });
    const headers = within(table).getAllByRole("columnheader");
    expect(headers.map((h) => h.textContent).at(-1)).toBe("Dead fraction");
  });

  it("plots explained variance or CE loss recovered against L0 for the SAEs that have both", async () => {
    renderAt("/compare");
    const plot = await screen.findByRole("figure", { name: "Explained variance against L0" });
    expect(plot).toHaveAttribute("data-points", "2"); // gamma has no L0
    expect(screen.getByText(/1 SAE without L0 and explained variance not plotted/)).toBeInTheDocument();
    await userEvent.click(screen.getByRole("radio", { name: "CE loss recovered" }));
    const ce = await screen.findByRole("figure", { name: "CE loss recovered against L0" });
    expect(ce).toHaveAttribute("data-y", "CE loss recovered");
    expect(screen.getByTestId("location")).toHaveTextContent("/compare?y=ce");
    expect(screen.getByRole("radio", { name: "CE loss recovered" })).toBeChecked();
  });

  it("compares two SAEs: the stored universality summary and each feature's partners, linked", async () => {
    renderAt("/compare");
    await screen.findByRole("table", { name: "Metrics" });
    expect(screen.getByText("Pick two SAEs to compare their features.")).toBeInTheDocument();
    await userEvent.selectOptions(screen.getByLabelText("SAE A"), "alpha");
    await userEvent.selectOptions(screen.getByLabelText("SAE B"), "b/2 wide");
    expect(screen.getByTestId("location")).toHaveTextContent("a=alpha&b=b%2F2+wide");
    const summary = await screen.findByRole("table", { name: "Universality of alpha and b/2 wide" });
    expect(cells(summary, "alpha in b/2 wide")).toEqual(["60 of 64", "55.0%", "0.71"]);
    expect(cells(summary, "b/2 wide in alpha")).toEqual(["100 of 128", "25.0%", "0.42"]);
    const table = await screen.findByRole("table", { name: "Partners in b/2 wide" });
    const rows = within(table).getAllByRole("row").slice(1);
    expect(within(rows[0]).getByRole("link", { name: "#3" })).toHaveAttribute("href", "/saes/alpha/features/3");
    expect(within(rows[0]).getByRole("link", { name: "#17" })).toHaveAttribute(
      "href",
      "/saes/b%2F2%20wide/features/17",
    );
    expect(rows[0]).toHaveTextContent("0.91");
    expect(rows[1]).toHaveTextContent("—");
    expect(screen.getByText("1–2 of 64 features, densest first")).toBeInTheDocument();
    expect(neighbourCalls().at(-1)).toEqual({
      path: "/api/v1/saes/alpha/neighbours",
      partner: "b/2 wide",
      kind: "activation",
      sort: "density",
      order: "desc",
      offset: "0",
      limit: "25",
    });
    await userEvent.click(screen.getByRole("button", { name: "Next ›" }));
    await waitFor(() => expect(neighbourCalls().at(-1)?.offset).toBe("25"));
  });

  it("shows the comparison from either side, and says when none is stored", async () => {
    renderAt("/compare?a=b%2F2+wide&b=alpha");
    const summary = await screen.findByRole("table", { name: "Universality of b/2 wide and alpha" });
    // alpha's report holds it: seen from b/2 wide, its sides swap
    expect(within(summary).getAllByRole("rowheader").map((r) => r.textContent)).toEqual([
      "b/2 wide in alpha",
      "alpha in b/2 wide",
    ]);
    expect(cells(summary, "b/2 wide in alpha")).toEqual(["100 of 128", "25.0%", "0.42"]);
    expect(neighbourCalls().at(-1)).toMatchObject({ path: "/api/v1/saes/b%2F2%20wide/neighbours", partner: "alpha" });

    cleanup();
    renderAt("/compare?a=gamma&b=alpha");
    expect(await screen.findByText(/No stored universality comparison of gamma and alpha/)).toBeInTheDocument();
    expect(screen.getByText(/gamma is an SAE of other, alpha of tiny/)).toBeInTheDocument();
  });

  it("refuses a pair that is not two known SAEs and shows the gateway's problems", async () => {
    renderAt("/compare?a=alpha&b=alpha");
    expect(await screen.findByText("Pick two different SAEs.")).toBeInTheDocument();
    cleanup();
    renderAt("/compare?a=alpha&b=%3Cscript%3E");
    expect(await screen.findByRole("alert")).toHaveTextContent("No SAE “<script>”.");
    expect(neighbourCalls()).toEqual([]);

    neighboursAnswer = () => json({ type: "about:blank", title: "Not found", status: 404, detail: "no SAE 'alpha'" }, 404);
    cleanup();
    renderAt("/compare?a=alpha&b=gamma");
    expect(await screen.findByRole("alert")).toHaveTextContent("no SAE 'alpha'");
  });

  it("says when there is nothing to compare", async () => {
    fetchMock.mockImplementation(async () => json([]));
    renderAt("/compare");
    expect(await screen.findByText(/No SAEs yet/)).toBeInTheDocument();
  });
});

describe("headline figures", () => {
  it("read the suites' optional objects defensively", () => {
    const h = headline({
      metrics: { l0: "12", kl_divergence: "NaN" },
      evals: { absorption: { mean_absorption_rate: "x" }, probing: { mean_sparse_accuracy: null }, synthetic: [] },
    });
    expect(h.l0).toBe(12);
    expect(h.kl_divergence).toBeUndefined();
    expect(h.absorption).toBeUndefined();
    expect(h.sparse_probe).toEqual({ "1": undefined, "2": undefined, "5": undefined, "20": undefined });
    expect(headline({ metrics: {}, evals: null }).partner_fraction).toBeUndefined();
    // a report compared with a third SAE says nothing about this pair
    expect(pairSummary({ id: "alpha", evals: saes[0].evals }, { id: "gamma", evals: null })).toBeNull();
  });
});
