import { act, render, screen } from "@testing-library/react";
import { MemoryRouter, Route, Routes } from "react-router";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { Job } from "../api/client";
import { JobProgress } from "../components/JobProgress";
import { JobPage } from "../pages/JobPage";

/** A stand-in for the browser's EventSource that the test drives by hand. */
class FakeEventSource {
  static instances: FakeEventSource[] = [];
  readyState = 0;
  onopen: (() => void) | null = null;
  closed = false;
  private listeners = new Map<string, ((e: MessageEvent) => void)[]>();
  constructor(readonly url: string) {
    FakeEventSource.instances.push(this);
  }
  addEventListener(type: string, fn: (e: MessageEvent) => void) {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), fn]);
  }
  close() {
    this.closed = true;
    this.readyState = 2;
  }
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  emit(type: string, data: unknown) {
    const event = new MessageEvent(type, { data: JSON.stringify(data) });
    for (const fn of this.listeners.get(type) ?? []) fn(event);
  }
}

const job: Job = { id: "job-1", kind: "training", state: "running", progress: 0, metrics: {}, config: {} };

function progress(step: number, loss: number, l0: number, ev: number) {
  return { job_id: "job-1", state: "running", step, total_steps: 100, tokens: step * 512, loss, l0,
    explained_variance: ev, message: "", progress: step / 100, metrics: {}, time: null };
}

beforeEach(() => {
  FakeEventSource.instances = [];
  vi.stubGlobal("EventSource", FakeEventSource);
});
afterEach(() => vi.unstubAllGlobals());

describe("JobProgress", () => {
  it("draws loss, L0 and explained variance from progress events", () => {
    const onEnd = vi.fn();
    render(<JobProgress job={job} onEnd={onEnd} />);
    const source = FakeEventSource.instances[0];
    expect(source.url).toBe("/api/v1/jobs/job-1/events");
    expect(screen.getByText(/Connecting/)).toBeInTheDocument();

    act(() => {
      source.open();
      source.emit("progress", progress(10, 2.5, 40, 0.5));
      source.emit("progress", progress(20, 1.5, 30, 0.7));
      source.emit("progress", progress(30, 1.0, 25, 0.8));
    });
    expect(screen.getByText(/Live/)).toHaveTextContent("Step 30 of 100 · 30.0% · running");
    for (const metric of ["loss", "l0", "explained_variance"]) {
      expect(screen.getByTestId(`curve-${metric}`)).toHaveAttribute("data-points", "3");
    }
    expect(screen.getByRole("figure", { name: "Loss" })).toHaveTextContent("Loss: 1");
    expect(screen.getByRole("figure", { name: "L0" })).toHaveTextContent("L0: 25");
    expect(screen.getByRole("figure", { name: "Explained variance" })).toHaveTextContent("Explained variance: 0.8");
    // recharts rendered a line per chart
    expect(document.querySelectorAll(".recharts-line").length).toBe(3);

    const final = { ...job, state: "succeeded", progress: 1 };
    act(() => source.emit("end", final));
    expect(source.closed).toBe(true);
    expect(onEnd).toHaveBeenCalledWith(final);
    expect(screen.getByText(/Stream ended/)).toBeInTheDocument();
  });

  it("keeps the curves on the job page once the job it followed has succeeded", async () => {
    vi.stubGlobal("fetch", vi.fn(async () => new Response(JSON.stringify(job), { status: 200 })));
    render(
      <MemoryRouter initialEntries={["/jobs/job-1"]}>
        <Routes>
          <Route path="/jobs/:jobId" element={<JobPage />} />
        </Routes>
      </MemoryRouter>,
    );
    await screen.findByText(/Connecting/);
    const source = FakeEventSource.instances[0];
    act(() => {
      source.open();
      source.emit("progress", progress(10, 2.5, 40, 0.5));
      source.emit("progress", progress(20, 1.5, 30, 0.7));
      source.emit("end", { ...job, state: "succeeded", progress: 1 });
    });
    expect(screen.getByRole("heading", { level: 1 })).toHaveTextContent("succeeded");
    for (const metric of ["loss", "l0", "explained_variance"]) {
      expect(screen.getByTestId(`curve-${metric}`)).toHaveAttribute("data-points", "2");
    }
    expect(screen.getByText(/Stream ended/)).toHaveTextContent("Step 20 of 100");
    expect(FakeEventSource.instances).toHaveLength(1); // no second stream
  });

  it("shows the stream as over when the job ends without an end event (cancelled)", () => {
    const { rerender } = render(<JobProgress job={job} />);
    const source = FakeEventSource.instances[0];
    act(() => {
      source.open();
      source.emit("progress", progress(10, 2.5, 40, 0.5));
    });
    rerender(<JobProgress job={{ ...job, state: "cancelled" }} />);
    expect(source.closed).toBe(true);
    expect(screen.getByText(/Stream ended/)).toBeInTheDocument();
    expect(screen.getByTestId("curve-loss")).toHaveAttribute("data-points", "1");
  });

  it("shows an error event sent by the gateway and stops", () => {
    render(<JobProgress job={job} />);
    const source = FakeEventSource.instances[0];
    act(() => source.emit("error", { status: 503, title: "Service unavailable", detail: "training service: down" }));
    expect(screen.getByRole("alert")).toHaveTextContent("Service unavailable (503): training service: down");
    expect(source.closed).toBe(true);
  });

  it("opens no stream for a finished job", () => {
    render(<JobProgress job={{ ...job, state: "succeeded" }} />);
    expect(FakeEventSource.instances).toHaveLength(0);
    expect(screen.getByText(/Job succeeded; no live stream/)).toBeInTheDocument();
  });
});
