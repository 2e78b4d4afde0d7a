import { act, render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { createMemoryRouter, RouterProvider, useLocation } from "react-router";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { parseSteerQuery } from "../api/steer";
import { routes as appRoutes } from "../App";
import { SteerPage } from "../pages/SteerPage";
import { FakeStream, stubSteerFetch, token } from "./fakeStream";

const saes = [
  { id: "tiny-l1", model: "tiny", d_sae: 64 },
  { id: "tiny-l2", model: "tiny", d_sae: 64 },
  { id: "other-l0", model: "other", d_sae: 32 },
];
const routes = { "/api/v1/saes": saes };

function Probe() {
  const location = useLocation();
  return <output data-testid="location">{location.pathname + location.search}</output>;
}

function renderAt(url: string) {
  const router = createMemoryRouter(
    [
      { path: "/steer", element: <><SteerPage /><Probe /></> },
      { path: "*", element: <Probe /> },
    ],
    { initialEntries: [url] },
  );
  render(<RouterProvider router={router} />);
  return router;
}

const search = () => screen.getByTestId("location").textContent!.split("?")[1] ?? "";
const urlSettings = () => parseSteerQuery(search());
const field = (what: string, row: number) => screen.getByLabelText(`${what}, row ${row}`);
/** The SAE list has loaded into the rows' selects. */
const loaded = () => waitFor(() => expect(screen.getAllByRole("option", { name: "tiny-l2" }).length).toBeGreaterThan(0));
const rowsShown = () => screen.getAllByRole("button", { name: /^Remove row/ }).length;

beforeEach(() => {
  FakeStream.all = [];
});
afterEach(() => vi.unstubAllGlobals());

describe("SteerPage", () => {
  it("restores its settings from the URL and steers with them", async () => {
    stubSteerFetch(routes);
    renderAt(
      "/steer?prompt=Dogs+are&f=tiny-l1:12:add:-2.5:r:generated&f=tiny-l2:3:ablate:0:a:both:2" +
        "&f=other-l0:5:scale:0.5:a:prompt&max=16&t=0.5&p=0.9&seed=7&frozen=1",
    );
    await loaded();
    expect(screen.getByLabelText("Prompt")).toHaveValue("Dogs are");
    expect(rowsShown()).toBe(3);
    expect(field("SAE", 1)).toHaveValue("tiny-l1");
    expect(field("Feature", 1)).toHaveValue(12);
    expect(field("Mode", 1)).toHaveValue("add");
    expect(field("Strength", 1)).toHaveValue(-2.5);
    expect(field("Relative", 1)).toBeChecked();
    expect(field("Positions", 1)).toHaveValue("generated");
    expect(field("From token", 1)).toHaveValue(1);
    expect(field("SAE", 2)).toHaveValue("tiny-l2");
    expect(field("Mode", 2)).toHaveValue("ablate");
    expect(field("Strength", 2)).toBeDisabled();
    expect(field("Relative", 2)).toBeDisabled();
    expect(field("From token", 2)).toHaveValue(2);
    expect(field("Mode", 3)).toHaveValue("scale");
    expect(field("Factor", 3)).toHaveValue(0.5);
    expect(field("Positions", 3)).toHaveValue("prompt");
    expect(screen.getByLabelText("Max tokens")).toHaveValue(16);
    expect(screen.getByLabelText("Temperature")).toHaveValue(0.5);
    expect(screen.getByLabelText("Top p")).toHaveValue(0.9);
    expect(screen.getByLabelText("Seed")).toHaveValue(7);
    expect(screen.getByLabelText(/Frozen attention/)).toBeChecked();

    await userEvent.click(screen.getByRole("button", { name: "Steer" }));
    await waitFor(() => expect(FakeStream.all).toHaveLength(1));
    expect(FakeStream.latest().body).toEqual({
      prompt: "Dogs are",
      features: [
        { sae_id: "tiny-l1", feature: 12, mode: "add", strength: -2.5, relative: true, positions: "generated", from_token: 1 },
        { sae_id: "tiny-l2", feature: 3, mode: "ablate", strength: 0, relative: false, positions: "both", from_token: 2 },
        { sae_id: "other-l0", feature: 5, mode: "scale", strength: 0.5, relative: false, positions: "prompt", from_token: 1 },
      ],
      max_new_tokens: 16,
      temperature: 0.5,
      top_p: 0.9,
      seed: 7,
      frozen_attention: true,
      compare: true,
    });

    // the output streams side by side, as on the feature page
    const stream = FakeStream.latest();
    act(() => {
      stream.emit("token", token("default", 0, " loyal", "length"));
      stream.emit("token", token("steered", 0, " cats", "eos"));
      stream.emit("end", {});
      stream.close();
    });
    await waitFor(() => expect(screen.getByRole("region", { name: "Steered" })).toHaveTextContent("Dogs are cats"));
    expect(screen.getByRole("region", { name: "Default" })).toHaveTextContent("Dogs are loyal");
  });

  it("ignores malformed URL parts and writes the URL back cleaned", async () => {
    stubSteerFetch(routes);
    renderAt("/steer?f=garbage&f=tiny-l1:1:boost:1:r:both&f=tiny-l2:7:clamp:1.5:r:both&max=abc&t=-3&seed=x");
    await loaded();
    expect(rowsShown()).toBe(1);
    expect(field("SAE", 1)).toHaveValue("tiny-l2");
    expect(field("Feature", 1)).toHaveValue(7);
    expect(field("Mode", 1)).toHaveValue("clamp");
    expect(screen.getByLabelText("Max tokens")).toHaveValue(32);
    expect(screen.getByLabelText("Temperature")).toHaveValue(0);
    expect(screen.getByLabelText("Prompt")).toHaveValue("I think that");
    await waitFor(() => expect(search()).toBe("prompt=I+think+that&f=tiny-l2:7:clamp:1.5:r:both&max=32&t=0"));
  });

  it("keeps the URL in step with the rows as they are edited, added and removed", async () => {
    stubSteerFetch(routes);
    renderAt("/steer");
    // an empty page: one row, its SAE the first listed, the feature still to type
    await waitFor(() => expect(field("SAE", 1)).toHaveValue("tiny-l1"));
    expect(screen.getByRole("button", { name: "Steer" })).toBeDisabled();
    expect(screen.getByText(/1 incomplete/)).toBeInTheDocument();
    expect(urlSettings().features).toEqual([]);

    await userEvent.type(field("Feature", 1), "5");
    await waitFor(() => expect(search()).toContain("f=tiny-l1:5:add:4:r:both"));
    expect(screen.getByRole("button", { name: "Steer" })).toBeEnabled();
    expect(screen.getByRole("link", { name: "Feature 5 of tiny-l1" })).toHaveAttribute("href", "/saes/tiny-l1/features/5");

    await userEvent.click(screen.getByRole("button", { name: "Add feature" }));
    expect(rowsShown()).toBe(2);
    expect(field("SAE", 2)).toHaveValue("tiny-l1"); // the SAE of the row above
    await userEvent.selectOptions(field("SAE", 2), "other-l0");
    await userEvent.type(field("Feature", 2), "9");
    await userEvent.selectOptions(field("Mode", 2), "scale");
    await userEvent.clear(field("Factor", 2));
    await userEvent.type(field("Factor", 2), "0.25");
    await userEvent.selectOptions(field("Positions", 2), "generated only");
    await userEvent.clear(field("From token", 2));
    await userEvent.type(field("From token", 2), "3");
    await userEvent.clear(screen.getByLabelText("Prompt"));
    await userEvent.type(screen.getByLabelText("Prompt"), "It's sunny");
    await waitFor(() =>
      expect(urlSettings()).toMatchObject({
        prompt: "It's sunny",
        features: [
          { sae_id: "tiny-l1", feature: 5, mode: "add", strength: 4, relative: true },
          { sae_id: "other-l0", feature: 9, mode: "scale", strength: 0.25, relative: false, positions: "generated", from_token: 3 },
        ],
      }),
    );
    expect(screen.getByLabelText("Prompt")).toHaveValue("It's sunny"); // typing was not reset by the URL

    await userEvent.click(screen.getByRole("button", { name: "Remove row 1" }));
    expect(rowsShown()).toBe(1);
    await waitFor(() => expect(urlSettings().features.map((f) => f.sae_id)).toEqual(["other-l0"]));
    expect(field("Feature", 1)).toHaveValue(9);

    // a half-typed row stays on the page but out of the URL
    await userEvent.click(screen.getByRole("button", { name: "Add feature" }));
    await userEvent.clear(field("Strength", 2));
    await userEvent.type(field("Strength", 2), "-");
    expect(screen.getByRole("button", { name: "Steer" })).toBeDisabled();
    expect(urlSettings().features).toHaveLength(1);
  });

  it("allows 16 features at most", async () => {
    stubSteerFetch(routes);
    renderAt(`/steer?${Array.from({ length: 15 }, (_, i) => `f=tiny-l1:${i}:add:1:r:both`).join("&")}`);
    await loaded();
    expect(rowsShown()).toBe(15);
    await userEvent.click(screen.getByRole("button", { name: "Add feature" }));
    expect(rowsShown()).toBe(16);
    expect(screen.getByRole("button", { name: "Add feature" })).toBeDisabled();
  });

  it("marks the row a 422 problem blames", async () => {
    stubSteerFetch(routes, {
      status: 422,
      title: "Unprocessable content",
      detail: "must be < d_sae = 32 of 'other-l0'",
      field: "features.1.feature",
    });
    renderAt("/steer?f=tiny-l1:1:add:1:r:both&f=other-l0:99:add:1:r:both");
    await loaded();
    await userEvent.click(screen.getByRole("button", { name: "Steer" }));
    const alert = await screen.findByRole("alert");
    expect(alert).toHaveTextContent("must be < d_sae = 32 of 'other-l0'");
    expect(within(alert).getByText("features.1.feature")).toBeInTheDocument();
    expect(field("Feature", 2).closest("tr")).toHaveClass("blamed");
    expect(field("Feature", 1).closest("tr")).not.toHaveClass("blamed");
  });

  it("takes the settings of a link followed while on the page", async () => {
    stubSteerFetch(routes);
    const router = renderAt("/steer?prompt=One&f=tiny-l1:1:add:1:r:both");
    await loaded();
    expect(screen.getByLabelText("Prompt")).toHaveValue("One");
    await act(() => router.navigate("/steer?prompt=Two&f=tiny-l2:2:clamp:3:a:prompt"));
    await waitFor(() => expect(screen.getByLabelText("Prompt")).toHaveValue("Two"));
    expect(rowsShown()).toBe(1);
    expect(field("SAE", 1)).toHaveValue("tiny-l2");
    expect(field("Mode", 1)).toHaveValue("clamp");
    expect(field("Relative", 1)).not.toBeChecked();
  });

  it("is routed at /steer, with a link in the main navigation", async () => {
    stubSteerFetch(routes);
    const router = createMemoryRouter(appRoutes, { initialEntries: ["/steer?prompt=Hello&f=tiny-l1:1:add:1:r:both"] });
    render(<RouterProvider router={router} />);
    expect(await screen.findByRole("heading", { name: "Steer generation" })).toBeInTheDocument();
    expect(screen.getByLabelText("Prompt")).toHaveValue("Hello");
    expect(within(screen.getByRole("navigation", { name: "Main" })).getByRole("link", { name: "Steer" })).toHaveAttribute(
      "href",
      "/steer",
    );
  });
});
