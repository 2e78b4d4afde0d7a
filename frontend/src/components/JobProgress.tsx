import { useEffect, useState } from "react";
import { api, FINISHED, type Job, type ProgressEvent } from "../api/client";
import { fmt, pct } from "../format";
import { CurveChart, type CurvePoint } from "./Charts";

type StreamState = "connecting" | "open" | "ended" | "error" | "idle";

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
    setStream("connecting");
    const source = new EventSource(api.jobEventsUrl(job.id));
    const bySteps = new Map<number, CurvePoint>();
    source.onopen = () => setStream("open");
    source.addEventListener("progress", (event) => {
      const data = JSON.parse((event as MessageEvent<string>).data) as ProgressEvent;
      setLatest(data);
      setStream("open");
      if (job.kind !== "training" || !(data.step > 0)) return;
      bySteps.set(data.step, {
        step: data.step,
        loss: data.loss,
        l0: data.l0,
        explained_variance: data.explained_variance,
      });
      setPoints([...bySteps.values()].sort((a, b) => a.step - b.step));
    });
    source.addEventListener("end", (event) => {
      source.close();
      setStream("ended");
      try {
        onEnd?.(JSON.parse((event as MessageEvent<string>).data) as Job);
      } catch {
        /* the page reloads the job anyway */
      }
    });
    source.addEventListener("error", (event) => {
      const data = (event as MessageEvent<string>).data;
      if (typeof data === "string" && data) {
        // a problem sent by the gateway as an `error` event
        try {
          const body = JSON.parse(data) as { title?: string; detail?: string; status?: number };
          setProblem(`${body.title ?? "Error"}${body.status ? ` (${body.status})` : ""}: ${body.detail ?? ""}`);
        } catch {
          setProblem(data);
        }
        source.close();
        setStream("error");
      } else if (source.readyState === 2 /* CLOSED */) {
        setProblem("the event stream closed");
        setStream("error");
      } else {
        setStream("connecting"); // the browser reconnects by itself
      }
    });
    return () => source.close();
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
