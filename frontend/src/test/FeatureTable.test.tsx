import { render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter } from "react-router";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { FeatureTable } from "../components/FeatureTable";

const TOTAL = 120;
const all = Array.from({ length: TOTAL }, (_, i) => ({
  sae_id: "s1",
  index: i,
  density: ((i * 37) % 101) / 1000,
  max_activation: ((i * 53) % 97) / 10,
  mean_activation: 1,
  score: i % 3 === 0 ? null : ((i * 29) % 89) / 100, // a third unexplained
}));

let fetchMock: ReturnType<typeof vi.fn>;

beforeEach(() => {
  fetchMock = vi.fn(async (input: string) => {
    const url = new URL(input, "http://x");
    const sort = (url.searchParams.get("sort") ?? "index") as "index" | "density" | "max_activation" | "score";
    const order = url.searchParams.get("order") ?? "asc";
    const offset = Number(url.searchParams.get("offset") ?? 0);
    const limit = Number(url.searchParams.get("limit") ?? 50);
    const key = (f: (typeof all)[number]) => f[sort] ?? -1; // unexplained sort lowest, as the store does
    const sorted = [...all].sort((a, b) => (key(a) - key(b)) * (order === "desc" ? -1 : 1) || a.index - b.index);
    const body = { items: sorted.slice(offset, offset + limit), total: TOTAL, offset, limit, sort, order };
    return new Response(JSON.stringify(body), { status: 200, headers: { "Content-Type": "application/json" } });
  });
  vi.stubGlobal("fetch", fetchMock);
});
afterEach(() => vi.unstubAllGlobals());

function lastQuery() {
  const url = new URL(fetchMock.mock.calls.at(-1)![0] as string, "http://x");
  return Object.fromEntries(url.searchParams);
}

function rowIndices() {
  const rows = within(screen.getByRole("table")).getAllByRole("row").slice(1);
  return rows.map((r) => Number(within(r).getByRole("link").textContent!.slice(1)));
}

describe("FeatureTable", () => {
  it("pages with next / previous and shows the range", async () => {
    render(
      <MemoryRouter initialEntries={["/saes/s1?limit=25"]}>
        <FeatureTable saeId="s1" />
      </MemoryRouter>,
    );
    expect(await screen.findByText("1–25 of 120 (page 1 of 5)")).toBeInTheDocument();
    expect(fetchMock.mock.calls[0][0]).toBe("/api/v1/saes/s1/features?sort=index&order=asc&offset=0&limit=25");
    expect(screen.getByRole("button", { name: "‹ Previous" })).toBeDisabled();
    expect(rowIndices()).toEqual(Array.from({ length: 25 }, (_, i) => i));

    await userEvent.click(screen.getByRole("button", { name: "Next ›" }));
    expect(await screen.findByText("26–50 of 120 (page 2 of 5)")).toBeInTheDocument();
    expect(lastQuery()).toMatchObject({ offset: "25", limit: "25" });
    expect(rowIndices()[0]).toBe(25);

    await userEvent.selectOptions(screen.getByLabelText("Page size"), "100");
    expect(await screen.findByText("1–100 of 120 (page 1 of 2)")).toBeInTheDocument();
    await userEvent.click(screen.getByRole("button", { name: "Next ›" }));
    expect(await screen.findByText("101–120 of 120 (page 2 of 2)")).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Next ›" })).toBeDisabled();
    await userEvent.click(screen.getByRole("button", { name: "« First" }));
    expect(await screen.findByText("1–100 of 120 (page 1 of 2)")).toBeInTheDocument();
  });

  it("sorts by a column, toggles the order and resets to the first page", async () => {
    render(
      <MemoryRouter initialEntries={["/saes/s1?offset=50"]}>
        <FeatureTable saeId="s1" />
      </MemoryRouter>,
    );
    expect(await screen.findByText("51–100 of 120 (page 2 of 3)")).toBeInTheDocument();

    await userEvent.click(screen.getByRole("button", { name: /Density/ }));
    await waitFor(() => expect(lastQuery()).toMatchObject({ sort: "density", order: "desc", offset: "0" }));
    await screen.findByText("1–50 of 120 (page 1 of 3)");
    const densityHeader = screen.getByRole("columnheader", { name: /Density/ });
    expect(densityHeader).toHaveAttribute("aria-sort", "descending");
    const desc = rowIndices().map((i) => all[i].density);
    expect(desc).toEqual([...desc].sort((a, b) => b - a));

    await userEvent.click(screen.getByRole("button", { name: /Density/ }));
    await waitFor(() => expect(lastQuery()).toMatchObject({ sort: "density", order: "asc" }));
    await waitFor(() => expect(densityHeader).toHaveAttribute("aria-sort", "ascending"));
    await waitFor(() => {
      const asc = rowIndices().map((i) => all[i].density);
      expect(asc).toEqual([...asc].sort((a, b) => a - b));
    });
    expect(screen.getByRole("columnheader", { name: /Feature/ })).toHaveAttribute("aria-sort", "none");
  });

  it("sorts by explanation score, best first, unexplained last", async () => {
    render(
      <MemoryRouter initialEntries={["/saes/s1?limit=100"]}>
        <FeatureTable saeId="s1" />
      </MemoryRouter>,
    );
    await screen.findByText("1–100 of 120 (page 1 of 2)");
    await userEvent.click(screen.getByRole("button", { name: /Score/ }));
    await waitFor(() => expect(lastQuery()).toMatchObject({ sort: "score", order: "desc", offset: "0" }));
    await waitFor(() => expect(screen.getByRole("columnheader", { name: /Score/ })).toHaveAttribute("aria-sort", "descending"));
    await waitFor(() => {
      const scores = rowIndices().map((i) => all[i].score);
      expect(scores.slice(0, 80).every((s) => typeof s === "number")).toBe(true);
      expect(scores.slice(0, 80)).toEqual([...scores.slice(0, 80)].sort((a, b) => b! - a!));
      expect(scores.slice(80)).toEqual(new Array(20).fill(null));
    });
    const firstRow = within(screen.getByRole("table")).getAllByRole("row")[1];
    expect(within(firstRow).getAllByRole("cell")[3]).toHaveTextContent("0.88");
    const lastRow = within(screen.getByRole("table")).getAllByRole("row").at(-1)!;
    expect(within(lastRow).getAllByRole("cell")[3]).toHaveTextContent("—");
  });

  it("links each row to its feature page", async () => {
    render(
      <MemoryRouter>
        <FeatureTable saeId="my sae" />
      </MemoryRouter>,
    );
    const link = await screen.findByRole("link", { name: "#3" });
    expect(link).toHaveAttribute("href", "/saes/my%20sae/features/3");
  });

  it("shows a problem when the SAE is unknown", async () => {
    fetchMock.mockImplementation(async () =>
      new Response(JSON.stringify({ title: "Not found", status: 404, detail: "no SAE 'nope'" }), { status: 404 }),
    );
    render(
      <MemoryRouter>
        <FeatureTable saeId="nope" />
      </MemoryRouter>,
    );
    expect(await screen.findByRole("alert")).toHaveTextContent("no SAE 'nope'");
  });
});
