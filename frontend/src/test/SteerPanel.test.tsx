import { act, fireEvent, render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter, Route, Routes } from "react-router";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { SteerPanel } from "../components/SteerPanel";
import { FeaturePage } from "../pages/FeaturePage";
import { FakeStream, stubSteerFetch, token } from "./fakeStream";

function renderPanel() {
  return render(
    <MemoryRouter>
      <SteerPanel saeId="tiny-l1" feature={12} maxActivation={2.5} />
    </MemoryRouter>,
  );
}

const status = () => screen.getByRole("status", { name: "Steering status" });
const column = (name: "Default" | "Steered") => screen.getByRole("region", { name });

beforeEach(() => {
  FakeStream.all = [];
});
afterEach(() => vi.unstubAllGlobals());

describe("SteerPanel", () => {
  it("sends the settings as the steer body, with the API token", async () => {
    const fetchMock = stubSteerFetch();
    localStorage.setItem("lm-saes-token", "tok");
    renderPanel();
    // the default: add 4 × max activation (= 10 for this feature)
    expect(screen.queryByRole("status", { name: "Steering status" })).toBeNull(); // no output before the first run
    expect(screen.getByLabelText("Strength (× max activation)")).toHaveValue("4");
    expect(screen.getByText("4 = 10")).toBeInTheDocument();

    await userEvent.click(screen.getByRole("button", { name: "Steer" }));
    await waitFor(() => expect(FakeStream.all).toHaveLength(1));
    const [url, init] = fetchMock.mock.calls[0] as [string, RequestInit];
    expect(url).toBe("/api/v1/steer");
    expect(init.method).toBe("POST");
    const headers = init.headers as Record<string, string>;
    expect(headers.Authorization).toBe("Bearer tok");
    expect(headers.Accept).toMatch(/^text\/event-stream/);
    expect(FakeStream.latest().body).toEqual({
      prompt: "I think that",
      features: [{ sae_id: "tiny-l1", feature: 12, mode: "add", strength: 4, relative: true, positions: "both", from_token: 1 }],
      max_new_tokens: 32,
      temperature: 0,
      top_p: 1,
      seed: 0,
      frozen_attention: false,
      compare: true,
    });
    act(() => FakeStream.latest().close());
    await screen.findByText("The stream closed early.");

    // another prompt, strength, positions and generation settings
    await userEvent.clear(screen.getByLabelText("Prompt"));
    await userEvent.type(screen.getByLabelText("Prompt"), "Dogs are");
    fireEvent.change(screen.getByLabelText("Strength (× max activation)"), { target: { value: "-6.5" } });
    await userEvent.selectOptions(screen.getByLabelText("Positions"), "generated only");
    await userEvent.clear(screen.getByLabelText("Max tokens"));
    await userEvent.type(screen.getByLabelText("Max tokens"), "16");
    await userEvent.clear(screen.getByLabelText("Temperature"));
    await userEvent.type(screen.getByLabelText("Temperature"), "0.7");
    await userEvent.click(screen.getByRole("button", { name: "Steer" }));
    await waitFor(() => expect(FakeStream.all).toHaveLength(2));
    expect(FakeStream.latest().body).toMatchObject({
      prompt: "Dogs are",
      features: [{ mode: "add", strength: -6.5, relative: true, positions: "generated" }],
      max_new_tokens: 16,
      temperature: 0.7,
    });
    act(() => FakeStream.latest().close());
    await screen.findByText("The stream closed early.");

    // scale: an absolute factor; ablate: strength 0, the slider disabled
    await userEvent.selectOptions(screen.getByLabelText("Mode"), "scale");
    expect(screen.getByLabelText("Factor")).toHaveValue("-6.5");
    await userEvent.click(screen.getByRole("button", { name: "Steer" }));
    await waitFor(() => expect(FakeStream.all).toHaveLength(3));
    expect(FakeStream.latest().body).toMatchObject({ features: [{ mode: "scale", strength: -6.5, relative: false }] });
    act(() => FakeStream.latest().close());
    await screen.findByText("The stream closed early.");

    await userEvent.selectOptions(screen.getByLabelText("Mode"), "ablate");
    expect(screen.getByLabelText("Strength")).toBeDisabled();
    await userEvent.click(screen.getByRole("button", { name: "Steer" }));
    await waitFor(() => expect(FakeStream.all).toHaveLength(4));
    expect(FakeStream.latest().body).toMatchObject({ features: [{ mode: "ablate", strength: 0, relative: false }] });
  });

  it("streams the default and the steered text into their columns", async () => {
    stubSteerFetch();
    renderPanel();
    await userEvent.click(screen.getByRole("button", { name: "Steer" }));
    await waitFor(() => expect(FakeStream.all).toHaveLength(1));
    const stream = FakeStream.latest();
    expect(screen.getByRole("button", { name: "Steering…" })).toBeDisabled();
    expect(screen.getByRole("button", { name: "Stop" })).toBeEnabled();

    act(() => {
      stream.emit("start", {
        prompt_tokens: ["<bos>", "I", " think", " that"],
        changes: [{ sae: "tiny-l1", feature: 12, mode: "add", value: 10, positions: "both", from_token: 1 }],
      });
      stream.emit("token", token("steered", 0, " cats"));
      stream.emit("token", token("default", 0, " the"));
      stream.emit("token", token("steered", 1, " purr"));
    });
    await waitFor(() => expect(column("Steered")).toHaveTextContent("I think that cats purr"));
    expect(column("Default")).toHaveTextContent("I think that the");
    expect(column("Default")).not.toHaveTextContent("cats");
    expect(screen.getByRole("list", { name: "Applied changes" })).toHaveTextContent("tiny-l1 #12 add 10 · positions both");
    expect(status()).toHaveTextContent("Generating…");

    act(() => {
      stream.emit("token", token("default", 1, " world", "length"));
      stream.emit("token", token("steered", 2, ".", "eos"));
      stream.emit("end", {});
      stream.close();
    });
    await waitFor(() => expect(status()).toHaveTextContent("Done."));
    expect(screen.getByTestId("default-text")).toHaveTextContent(/^I think that the world$/);
    expect(screen.getByTestId("steered-text")).toHaveTextContent(/^I think that cats purr\.$/);
    expect(column("Default")).toHaveTextContent("2 tokens · finished: length");
    expect(column("Steered")).toHaveTextContent("3 tokens · finished: eos");
    expect(screen.getByRole("button", { name: "Steer" })).toBeEnabled();
    expect(screen.getByRole("button", { name: "Stop" })).toBeDisabled();
  });

  it("shows a 422 problem's detail and field", async () => {
    stubSteerFetch({}, {
      status: 422,
      title: "Unprocessable content",
      detail: "must be < d_sae = 64 of 'tiny-l1'",
      field: "features.0.feature",
    });
    renderPanel();
    await userEvent.click(screen.getByRole("button", { name: "Steer" }));
    const alert = await screen.findByRole("alert");
    expect(alert).toHaveTextContent("Unprocessable content (422)");
    expect(alert).toHaveTextContent("must be < d_sae = 64 of 'tiny-l1'");
    expect(alert).toHaveTextContent("Field: features.0.feature");
    expect(FakeStream.all).toHaveLength(0);
    expect(screen.getByRole("button", { name: "Steer" })).toBeEnabled();
  });

  it("shows an error event sent mid-stream", async () => {
    stubSteerFetch();
    renderPanel();
    await userEvent.click(screen.getByRole("button", { name: "Steer" }));
    await waitFor(() => expect(FakeStream.all).toHaveLength(1));
    act(() => {
      FakeStream.latest().emit("token", token("steered", 0, " so"));
      FakeStream.latest().emit("error", { status: 502, title: "Bad gateway", detail: "activation service: gone" });
      FakeStream.latest().close();
    });
    expect(await screen.findByRole("alert")).toHaveTextContent("Bad gateway (502)activation service: gone");
    expect(column("Steered")).toHaveTextContent("I think that so");
  });

  it("Stop aborts the stream and keeps the text so far", async () => {
    stubSteerFetch();
    renderPanel();
    await userEvent.click(screen.getByRole("button", { name: "Steer" }));
    await waitFor(() => expect(FakeStream.all).toHaveLength(1));
    const stream = FakeStream.latest();
    act(() => stream.emit("token", token("steered", 0, " maybe")));
    await waitFor(() => expect(column("Steered")).toHaveTextContent("maybe"));
    await userEvent.click(screen.getByRole("button", { name: "Stop" }));
    expect(stream.aborted).toBe(true);
    expect((stream.init.signal as AbortSignal).aborted).toBe(true);
    expect(status()).toHaveTextContent("Stopped.");
    expect(column("Steered")).toHaveTextContent("I think that maybe");
    expect(screen.queryByRole("alert")).toBeNull(); // an abort is no error
    expect(screen.getByRole("button", { name: "Steer" })).toBeEnabled();
  });

  it("links to the steer page with its settings", async () => {
    stubSteerFetch();
    renderPanel();
    fireEvent.change(screen.getByLabelText("Strength (× max activation)"), { target: { value: "2.5" } });
    await userEvent.selectOptions(screen.getByLabelText("Mode"), "clamp");
    expect(screen.getByRole("link", { name: "Open in steer page" })).toHaveAttribute(
      "href",
      "/steer?prompt=I+think+that&f=tiny-l1:12:clamp:2.5:r:both&max=32&t=0",
    );
  });

  it("sits on the feature page, knowing the feature's max activation", async () => {
    stubSteerFetch({
      "/api/v1/saes/tiny-l1/features/12": { sae_id: "tiny-l1", index: 12, density: 0.01, max_activation: 3, top_examples: [] },
    });
    render(
      <MemoryRouter initialEntries={["/saes/tiny-l1/features/12"]}>
        <Routes>
          <Route path="/saes/:saeId/features/:index" element={<FeaturePage />} />
        </Routes>
      </MemoryRouter>,
    );
    const panel = await screen.findByRole("region", { name: "Steer" });
    expect(within(panel).getByText("4 = 12")).toBeInTheDocument();
    await userEvent.click(within(panel).getByRole("button", { name: "Steer" }));
    await waitFor(() => expect(FakeStream.all).toHaveLength(1));
    expect(FakeStream.latest().body).toMatchObject({ features: [{ sae_id: "tiny-l1", feature: 12 }] });
  });
});
