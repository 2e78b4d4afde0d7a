import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import { api, ApiError } from "../api/client";
import { ErrorMessage } from "../components/ErrorMessage";

afterEach(() => vi.unstubAllGlobals());

function problemFetch(status: number, body: unknown) {
  return vi.fn(async () =>
    new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/problem+json" } }),
  );
}

describe("problem details", () => {
  it("the client turns a 422 problem into an ApiError naming the field", async () => {
    const problem = { type: "about:blank", title: "Invalid request", status: 422, detail: "config.train.lr: must be > 0", field: "config.train.lr" };
    vi.stubGlobal("fetch", problemFetch(422, problem));
    const error = await api.submitTraining({ config: {} }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error).toMatchObject({ status: 422, title: "Invalid request", field: "config.train.lr" });
    expect((error as ApiError).message).toBe("config.train.lr: must be > 0");
  });

  it("sends the bearer token from localStorage", async () => {
    localStorage.setItem("lm-saes-token", "secret");
    const fetchMock = vi.fn(async () => new Response("[]", { status: 200 }));
    vi.stubGlobal("fetch", fetchMock);
    await api.jobs();
    const [url, init] = fetchMock.mock.calls[0] as unknown as [string, RequestInit];
    expect(url).toBe("/api/v1/jobs");
    expect((init.headers as Record<string, string>).Authorization).toBe("Bearer secret");
  });

  it("falls back to the HTTP status when the body is not JSON", async () => {
    vi.stubGlobal("fetch", vi.fn(async () => new Response("oops", { status: 502, statusText: "Bad Gateway" })));
    const error = (await api.models().catch((e: unknown) => e)) as ApiError;
    expect(error).toMatchObject({ status: 502, title: "Bad Gateway", field: null });
  });

  it("displays title, status, detail and field, with a retry button", async () => {
    const retry = vi.fn();
    const error = new ApiError({ status: 422, title: "Invalid request", detail: "text: field required", field: "text" });
    render(<ErrorMessage error={error} onRetry={retry} />);
    const alert = screen.getByRole("alert");
    expect(alert).toHaveTextContent("Invalid request (422)");
    expect(alert).toHaveTextContent("text: field required");
    expect(alert).toHaveTextContent("Field: text");
    await userEvent.click(screen.getByRole("button", { name: "Retry" }));
    expect(retry).toHaveBeenCalledOnce();
  });

  it("displays plain errors and nothing for no error", () => {
    const { container, rerender } = render(<ErrorMessage error={null} />);
    expect(container).toBeEmptyDOMElement();
    rerender(<ErrorMessage error={new Error("boom")} />);
    expect(screen.getByRole("alert")).toHaveTextContent("Something went wrong");
    expect(screen.getByRole("alert")).toHaveTextContent("boom");
  });
});
