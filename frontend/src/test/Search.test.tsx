import { render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { createMemoryRouter, RouterProvider, useLocation } from "react-router";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Layout } from "../components/Layout";
import { SearchPage } from "../pages/SearchPage";

const saes = [
  { id: "sae-a", model: "tiny" },
  { id: "sae b", model: "tiny" },
];
const hits = [
  { sae_id: "sae-a", index: 3, similarity: 0.8123, explanation: "Mentions of cats and kittens", score: 0.85 },
  { sae_id: "sae b", index: 12, similarity: 0.61, explanation: "Feline animals", score: null },
];

let fetchMock: ReturnType<typeof vi.fn>;
let searchAnswer: () => Response;

const json = (body: unknown, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

beforeEach(() => {
  searchAnswer = () => json({ query: "cats", k: 20, sae_id: null, hits });
  fetchMock = vi.fn(async (input: string) => {
    const url = new URL(input, "http://x");
    if (url.pathname === "/api/v1/saes") return json(saes);
    if (url.pathname === "/api/v1/search") return searchAnswer();
    return json({ title: "Not found", status: 404 }, 404);
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
        path: "/",
        element: (
          <>
            <Layout />
            <Probe />
          </>
        ),
        children: [
          { index: true, element: <p>home</p> },
          { path: "search", element: <SearchPage /> },
          { path: "*", element: <p>elsewhere</p> },
        ],
      },
    ],
    { initialEntries: [url] },
  );
  render(<RouterProvider router={router} />);
  return router;
}

const searchCalls = () =>
  fetchMock.mock.calls
    .map((c) => new URL(c[0] as string, "http://x"))
    .filter((u) => u.pathname === "/api/v1/search")
    .map((u) => Object.fromEntries(u.searchParams));

describe("feature search", () => {
  it("the header's search box opens the search page with the query", async () => {
    renderAt("/");
    const box = screen.getByRole("searchbox", { name: "Search features" });
    expect(screen.getByRole("button", { name: "Search" })).toBeDisabled(); // nothing typed yet
    await userEvent.type(box, "  cats and kittens {enter}");
    await waitFor(() => expect(screen.getByTestId("location")).toHaveTextContent("/search?q=cats+and+kittens"));
    expect(await screen.findByRole("link", { name: "#3" })).toBeInTheDocument();
    expect(searchCalls()).toEqual([{ q: "cats and kittens", k: "20" }]);
    expect(screen.getByRole("searchbox", { name: "Search features" })).toHaveValue("cats and kittens");
  });

  it("lists hits with links to the feature and SAE, the explanation, similarity and score", async () => {
    renderAt("/search?q=cats");
    const table = await screen.findByRole("table", { name: "Features matching “cats”" });
    const rows = within(table).getAllByRole("row").slice(1);
    expect(rows).toHaveLength(2);
    const first = within(rows[0]);
    expect(first.getByRole("link", { name: "#3" })).toHaveAttribute("href", "/saes/sae-a/features/3");
    expect(first.getByRole("link", { name: "sae-a" })).toHaveAttribute("href", "/saes/sae-a");
    expect(rows[0]).toHaveTextContent("Mentions of cats and kittens");
    expect(rows[0]).toHaveTextContent("0.812");
    expect(rows[0]).toHaveTextContent("0.85");
    const second = within(rows[1]);
    expect(second.getByRole("link", { name: "#12" })).toHaveAttribute("href", "/saes/sae%20b/features/12");
    expect(rows[1]).toHaveTextContent("—"); // no score
  });

  it("filters by SAE and result count through the URL", async () => {
    renderAt("/search?q=cats");
    await screen.findByRole("table");
    await waitFor(() => expect(screen.getAllByRole("option", { name: "sae b" }).length).toBe(1));
    await userEvent.selectOptions(screen.getByLabelText("SAE"), "sae b");
    await waitFor(() => expect(searchCalls().at(-1)).toEqual({ q: "cats", k: "20", sae_id: "sae b" }));
    await userEvent.selectOptions(screen.getByLabelText("Results"), "50");
    await waitFor(() => expect(searchCalls().at(-1)).toEqual({ q: "cats", k: "50", sae_id: "sae b" }));
    expect(screen.getByTestId("location")).toHaveTextContent("/search?q=cats&sae=sae+b&k=50");
    // a new query from the page's own form keeps the filters
    const query = screen.getByLabelText("Query");
    await userEvent.clear(query);
    await userEvent.type(query, "dogs{enter}");
    await waitFor(() => expect(searchCalls().at(-1)).toEqual({ q: "dogs", k: "50", sae_id: "sae b" }));
  });

  it("asks for a query, says when nothing is explained, and shows problems", async () => {
    renderAt("/search");
    expect(await screen.findByText(/Type what a feature should mean/)).toBeInTheDocument();
    expect(searchCalls()).toEqual([]);

    searchAnswer = () => json({ query: "cats", k: 20, sae_id: null, hits: [] });
    renderAt("/search?q=cats");
    expect(await screen.findByText(/No explained features yet/)).toBeInTheDocument();

    searchAnswer = () =>
      json({ type: "about:blank", title: "Service unavailable", status: 503, detail: "analysis service: down" }, 503);
    renderAt("/search?q=birds");
    expect(await screen.findByRole("alert")).toHaveTextContent("analysis service: down");
  });
});
