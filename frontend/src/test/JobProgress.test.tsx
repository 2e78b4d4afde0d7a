import { act, render, screen, waitFor } from "@testing-library/react";
import { MemoryRouter, Route, Routes } from "react-router";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { Job } from "../api/client";
import { JobProgress, RECONNECT_MS } from "../components/JobProgress";
import { JobPage } from "../pages/JobPage";

/** A stand-in for the gateway's event stream: each fetch of `/events` gets one the test writes to. */
class FakeStream {
  static all: FakeStream[] = [];
  aborted = false;
  private queue: Uint8Array[] = [];
  private ended = false;
  private failure: Error | null = null;
  private wake: (() => void) | null = null;
  constructor(
    readonly url: string,
    readonly init: RequestInit,
  ) {
    FakeStream.all.push(this);
    init.signal?.addEventListener("abort", () => {
      this.aborted = true;
      this.failure = new DOMException("aborted", "AbortError");
      this.wake?.();
    });
  }
  readonly response = {
    ok: true,
    status: 200,
    body: {
      getReader: () => ({
        read: async (): Promise<ReadableStreamReadResult<Uint8Array>> => {
          while (!this.queue.length && !this.ended && !this.failure) await new Promise<void>((r) => (this.wake = r));
          if (this.failure) throw this.failure;
          const value = this.queue.shift();
          return value ? { done: false, value } : { done: true, value: undefined };
        },
      }),
    },
  };
  /** Send raw text; split it anywhere to check that events survive chunk boundaries. */
  send(text: string) {
    this.queue.push(new TextEncoder().encode(text));
    this.wake?.();
  }
  emit(type: string, data: unknown) {
    const text = `id: 1\nevent: ${type}\ndata: ${JSON.stringify(data)}\n\n`;
    this.send(text.slice(0, 9));
    this.send(text.slice(9));
  }
  close() {
    this.ended = true;
    this.wake?.();
  }
}

/** fetch: event streams are FakeStreams; `/jobs/job-1` answers the job; `problem` answers every stream. */
function stubFetch(problem?: { status: number; title: string; detail: string }) {
  const fetchMock = vi.fn(async (url: string, init: RequestInit = {}) => {
    if (!url.endsWith("/events")) return new Response(JSON.stringify(job), { status: 200 });
    if (problem) {
      return new Response(JSON.stringify(problem), {
        status: problem.status,
        headers: { "Content-Type": "application/problem+json" },
      });
    }
    return new FakeStream(url, init).response as unknown as Response;
  });
  vi.stubGlobal("fetch", fetchMock);
  return fetchMock;
}

const latest = () => FakeStream.all[FakeStream.all.length - 1];

const job: Job = { id: "job-1", kind: "training", state: "running", progress: 0, metrics: {}, config: {}, error: "",
  request_id: "", owner: "alice", result: {}, created: "2026-01-01T00:00:00Z", updated: "2026-01-01T00:00:00Z" };

function progress(step: number, loss: number, l0: number, ev: number) {
  return { job_id: "job-1", state: "running", step, total_steps: 100, tokens: step * 512, loss, l0,
    explained_variance: ev, message: "", progress: step / 100, metrics: {}, time: null };
}

beforeEach(() => {
  FakeStream.all = [];
  localStorage.clear();
});
afterEach(() => vi.unstubAllGlobals());

describe("JobProgress", () => {
  it("draws loss, L0 and explained variance from progress events", async () => {
    stubFetch();
    localStorage.setItem("lm-saes-token", "tok");
    const onEnd = vi.fn();
    render(<JobProgress job={job} onEnd={onEnd} />);
    expect(screen.getByText(/Connecting/)).toBeInTheDocument();
    await waitFor(() => expect(FakeStream.all).toHaveLength(1));
    const source = latest();
    expect(source.url).toBe("/api/v1/jobs/job-1/events");
    // unlike EventSource, the stream sends the API token (protected reads work)
    expect((source.init.headers as Record<string, string>).Authorization).toBe("Bearer tok");

    await screen.findByText(/Live/);
    act(() => {
      source.emit("progress", progress(10, 2.5, 40, 0.5));
      source.emit("progress", progress(20, 1.5, 30, 0.7));
      source.emit("progress", progress(30, 1.0, 25, 0.8));
    });
    await waitFor(() => expect(screen.getByText(/Live/)).toHaveTextContent("Step 30 of 100 · 30.0% · running"));
    for (const metric of ["loss", "l0", "explained_variance"]) {
      expect(screen.getByTestId(`curve-${metric}`)).toHaveAttribute("data-points", "3");
    }
    expect(screen.getByRole("figure", { name: "Loss" })).toHaveTextContent("Loss: 1");
    expect(screen.getByRole("figure", { name: "L0" })).toHaveTextContent("L0: 25");
    expect(screen.getByRole("figure", { name: "Explained variance" })).toHaveTextContent("Explained variance: 0.8");
    // recharts rendered a line per chart
    expect(document.querySelectorAll(".recharts-line").length).toBe(3);

    const final = { ...job, state: "succeeded", progress: 1 };
    act(() => {
      source.emit("end", final);
      source.close();
    });
    await waitFor(() => expect(onEnd).toHaveBeenCalledWith(final));
    expect(screen.getByText(/Stream ended/)).toBeInTheDocument();
  });

  it("keeps the curves on the job page once the job it followed has succeeded", async () => {
    stubFetch();
    render(
      <MemoryRouter initialEntries={["/jobs/job-1"]}>
        <Routes>
          <Route path="/jobs/:jobId" element={<JobPage />} />
        </Routes>
      </MemoryRouter>,
    );
    await screen.findByText(/Live/);
    const source = latest();
    act(() => {
      source.emit("progress", progress(10, 2.5, 40, 0.5));
      source.emit("progress", progress(20, 1.5, 30, 0.7));
      source.emit("end", { ...job, state: "succeeded", progress: 1 });
      source.close();
    });
    await waitFor(() => expect(screen.getByRole("heading", { level: 1 })).toHaveTextContent("succeeded"));
    for (const metric of ["loss", "l0", "explained_variance"]) {
      expect(screen.getByTestId(`curve-${metric}`)).toHaveAttribute("data-points", "2");
    }
    expect(screen.getByText(/Stream ended/)).toHaveTextContent("Step 20 of 100");
    expect(FakeStream.all).toHaveLength(1); // no second stream
  });

  it("shows the stream as over when the job ends without an end event (cancelled)", async () => {
    stubFetch();
    const { rerender } = render(<JobProgress job={job} />);
    await screen.findByText(/Live/);
    const source = latest();
    act(() => source.emit("progress", progress(10, 2.5, 40, 0.5)));
    await waitFor(() => expect(screen.getByTestId("curve-loss")).toHaveAttribute("data-points", "1"));
    rerender(<JobProgress job={{ ...job, state: "cancelled" }} />);
    expect(source.aborted).toBe(true);
    expect(screen.getByText(/Stream ended/)).toBeInTheDocument();
    expect(screen.getByTestId("curve-loss")).toHaveAttribute("data-points", "1");
  });

  it("shows an error event sent by the gateway and stops", async () => {
    stubFetch();
    render(<JobProgress job={job} />);
    await screen.findByText(/Live/);
    act(() => {
      latest().emit("error", { status: 503, title: "Service unavailable", detail: "training service: down" });
      latest().close();
    });
    expect(await screen.findByRole("alert")).toHaveTextContent("Service unavailable (503): training service: down");
    expect(screen.getByText(/Stream stopped/)).toBeInTheDocument();
    await new Promise((r) => setTimeout(r, RECONNECT_MS + 200));
    expect(FakeStream.all).toHaveLength(1); // no reconnection after an error
  });

  it("shows a problem answer (e.g. a missing token) instead of retrying", async () => {
    const fetchMock = stubFetch({ status: 401, title: "Unauthorized", detail: "send an API token with the read scope" });
    render(<JobProgress job={job} />);
    expect(await screen.findByRole("alert")).toHaveTextContent("Unauthorized (401): send an API token with the read scope");
    expect(fetchMock).toHaveBeenCalledTimes(1);
  });

  it("reconnects when the stream drops before the job ends, keeping the curves", async () => {
    stubFetch();
    render(<JobProgress job={job} />);
    await screen.findByText(/Live/);
    act(() => {
      latest().emit("progress", progress(10, 2.5, 40, 0.5));
      latest().close();
    });
    await waitFor(() => expect(FakeStream.all).toHaveLength(2), { timeout: RECONNECT_MS + 1000 });
    await screen.findByText(/Live/);
    act(() => latest().emit("progress", progress(20, 1.5, 30, 0.7)));
    await waitFor(() => expect(screen.getByTestId("curve-loss")).toHaveAttribute("data-points", "2"));
  });

  it("opens no stream for a finished job", () => {
    const fetchMock = stubFetch();
    render(<JobProgress job={{ ...job, state: "succeeded" }} />);
    expect(fetchMock).not.toHaveBeenCalled();
    expect(screen.getByText(/Job succeeded; no live stream/)).toBeInTheDocument();
  });
});
