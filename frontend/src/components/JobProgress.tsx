import { useEffect, useState } from "react";
import { api, ApiError, FINISHED, type Job, type ProgressEvent, type ServerEvent } from "../api/client";
import { fmt, pct } from "../format";
import { CurveChart, type CurvePoint } from "./Charts";

type StreamState = "connecting" | "open" | "ended" | "error" | "idle";
export const RECONNECT_MS = 2000;

/** Resolves after `ms`, or at once when `signal` aborts. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
  });
}

/** Live loss, L0 and explained-variance curves from the job's server-sent events. The curves stay
 * when the job ends while shown (its stream closes); a job finished before it is shown has none. */
export function JobProgress({ job, onEnd }: { job: Job; onEnd?: (job: Job) => void }) {
  const [points, setPoints] = useState<CurvePoint[]>([]);
  const [latest, setLatest] = useState<ProgressEvent | null>(null);
  const [stream, setStream] = useState<StreamState>(FINISHED.has(job.state) ? "idle" : "connecting");
  const [problem, setProblem] = useState<string | null>(null);
  const finished = FINISHED.has(job.state);
  // a job that finished while followed (e.g. cancelled) shows its stream as over
  const shown: StreamState = finished && (stream === "open" || stream === "connecting") ? "ended" : stream;

  useEffect(() => {
    if (finished) return;
    const controller = new AbortController();
    const bySteps = new Map<number, CurvePoint>();
    let over = false; // an `end` or `error` event came: do not reconnect
    const onEvent = ({ event, data }: ServerEvent) => {
      if (event === "progress") {
        const update = JSON.parse(data) as ProgressEvent;
        setLatest(update);
        if (job.kind !== "training" || !(update.step > 0)) return;
        bySteps.set(update.step, {
          step: update.step,
          loss: update.loss,
          l0: update.l0,
          explained_variance: update.explained_variance,
        });
        setPoints([...bySteps.values()].sort((a, b) => a.step - b.step));
      } else if (event === "end") {
        over = true;
        setStream("ended");
        try {
          onEnd?.(JSON.parse(data) as Job);
        } catch {
          /* the page reloads the job anyway */
        }
      } else if (event === "error") {
        over = true;
        setStream("error");
        try {
          const body = JSON.parse(data) as { title?: string; detail?: string; status?: number };
          setProblem(`${body.title ?? "Error"}${body.status ? ` (${body.status})` : ""}: ${body.detail ?? ""}`);
        } catch {
          setProblem(data);
        }
      }
    };
    const follow = async () => {
      // Like EventSource, reconnect when the stream drops; unlike it, send the API token.
      while (!over && !controller.signal.aborted) {
        setStream("connecting");
        try {
          await api.jobEvents(job.id, { onOpen: () => setStream("open"), onEvent }, controller.signal);
        } catch (error) {
          if (controller.signal.aborted) return;
          if (error instanceof ApiError && error.status > 0) {
            setProblem(`${error.title} (${error.status}): ${error.detail}`);
            setStream("error");
            return;
          }
        }
        if (!over) await pause(RECONNECT_MS, controller.signal);
      }
    };
    void follow();
    return () => controller.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [job.id, finished]);

  return (
    <section aria-labelledby="progress-heading" className="job-progress">
      <h2 id="progress-heading">Progress</h2>
      <p className="stream-state" aria-live="polite">
        {shown === "idle"
          ? `Job ${job.state}; no live stream.`
          : shown === "open"
            ? "Live: following the job's events."
            : shown === "ended"
              ? "Stream ended."
              : shown === "error"
                ? "Stream stopped."
                : "Connecting to the event stream…"}
        {latest && (
          <>
            {" "}
            Step {latest.step}
            {latest.total_steps ? ` of ${latest.total_steps}` : ""} · {pct(latest.progress)} · {latest.state}
            {latest.message ? ` · ${latest.message}` : ""}
          </>
        )}
      </p>
      {problem && (
        <div className="error" role="alert">
          {problem}
        </div>
      )}
      {job.kind === "training" && (
        <div className="charts-row">
          <CurveChart points={points} metric="loss" title="Loss" color="#c0392b" />
          <CurveChart points={points} metric="l0" title="L0" color="#2c6fbb" />
          <CurveChart points={points} metric="explained_variance" title="Explained variance" color="#27865a" />
        </div>
      )}
      {job.kind === "training" && points.length === 0 && !finished && (
        <p className="empty">No training steps reported yet.</p>
      )}
      {latest && Object.keys(latest.metrics ?? {}).length > 0 && (
        <dl className="metrics">
          {Object.entries(latest.metrics).map(([k, v]) => (
            <div key={k}>
              <dt>{k}</dt>
              <dd>{fmt(v, 4)}</dd>
            </div>
          ))}
        </dl>
      )}
    </section>
  );
}
