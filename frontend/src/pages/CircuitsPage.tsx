import { useState, type FormEvent } from "react";
import { Link } from "react-router";
import { api, FINISHED, type Job, type TraceRequest } from "../api/client";
import { useApi } from "../api/useApi";
import { graphIdOf } from "../circuits/jobs";
import { blames, ErrorMessage, FieldError } from "../components/ErrorMessage";
import { JobProgress } from "../components/JobProgress";
import { Empty, Loading } from "../components/Status";
import { fmt } from "../format";

export function CircuitsPage() {
  const graphs = useApi((signal) => api.circuits(signal), []);
  return (
    <div>
      <h1>Circuits</h1>
      <p className="note">
        Attribution graphs: how a prompt's features, layer by layer, lead to the model's next-token logits through a
        replacement model made of transcoders.
      </p>
      <div className="circuits-grid">
        <section aria-labelledby="graphs-heading" className="table-scroll">
          <h2 id="graphs-heading">
            Graphs{" "}
            <button type="button" onClick={graphs.reload}>
              Refresh
            </button>
          </h2>
          {graphs.loading ? (
            <Loading what="Loading graphs" />
          ) : graphs.error ? (
            <ErrorMessage error={graphs.error} onRetry={graphs.reload} />
          ) : graphs.data!.items.length === 0 ? (
            <Empty>No graphs yet: trace a prompt.</Empty>
          ) : (
            <table>
              <thead>
                <tr>
                  <th scope="col">Prompt</th>
                  <th scope="col">Model</th>
                  <th scope="col" className="num">
                    Replacement
                  </th>
                  <th scope="col" className="num">
                    Completeness
                  </th>
                  <th scope="col" className="num">
                    Layers
                  </th>
                  <th scope="col">Created</th>
                </tr>
              </thead>
              <tbody>
                {graphs.data!.items.map((g) => (
                  <tr key={g.id}>
                    <td>
                      <Link to={`/circuits/${encodeURIComponent(g.id)}`}>{g.prompt}</Link>{" "}
                      <small className="note">{g.id}</small>
                    </td>
                    <td>{g.model}</td>
                    <td className="num">{fmt(g.scores.replacement)}</td>
                    <td className="num">{fmt(g.scores.completeness)}</td>
                    <td className="num">{g.layers?.length ?? "—"}</td>
                    <td>{g.created ? new Date(g.created).toLocaleString() : "—"}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </section>
        <TraceForm onDone={graphs.reload} />
      </div>
    </div>
  );
}

const FIELDS = ["prompt", "transcoders", "node_threshold", "edge_threshold", "max_logits"] as const;

/** An optional number input's value: undefined when empty. */
function optional(value: string): number | undefined {
  return value.trim() === "" ? undefined : Number(value);
}

/** Trace a prompt: POST /circuits, then follow the tracing job until it names its graph. */
export function TraceForm({ onDone }: { onDone?: () => void }) {
  const [prompt, setPrompt] = useState("");
  const [transcoders, setTranscoders] = useState("");
  const [nodeThreshold, setNodeThreshold] = useState("");
  const [edgeThreshold, setEdgeThreshold] = useState("");
  const [maxLogits, setMaxLogits] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [job, setJob] = useState<Job | null>(null);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    setBusy(true);
    const body: TraceRequest = {
      prompt,
      transcoders: transcoders.trim(),
      node_threshold: optional(nodeThreshold),
      edge_threshold: optional(edgeThreshold),
      max_logits: optional(maxLogits),
    };
    try {
      const submitted = await api.trace(body);
      setJob(submitted);
      if (FINISHED.has(submitted.state)) onDone?.();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const ended = (final: Job) => {
    setJob(final);
    onDone?.();
  };

  const fieldError = FIELDS.some((f) => blames(error, f));
  const invalid = (f: string) => blames(error, f) || undefined;
  const describe = (f: string, help?: string) => [help, blames(error, f) ? `trace-${f}-error` : null].filter(Boolean).join(" ") || undefined;
  const graphId = job?.state === "succeeded" ? graphIdOf(job) : null;
  return (
    <section aria-labelledby="trace-heading">
      <h2 id="trace-heading">Trace a prompt</h2>
      <form onSubmit={submit} className="stack trace-form">
        <label htmlFor="trace-prompt">Prompt</label>
        <textarea
          id="trace-prompt"
          rows={2}
          required
          value={prompt}
          onChange={(e) => setPrompt(e.target.value)}
          placeholder="The capital of France is"
          aria-invalid={invalid("prompt")}
          aria-describedby={describe("prompt")}
        />
        <FieldError error={error} field="prompt" id="trace-prompt-error" />
        <label htmlFor="trace-transcoders">Transcoder set</label>
        <input
          id="trace-transcoders"
          required
          value={transcoders}
          onChange={(e) => setTranscoders(e.target.value)}
          placeholder="runs/smollm2-transcoders or s3://bucket/prefix"
          aria-invalid={invalid("transcoders")}
          aria-describedby={describe("transcoders", "trace-transcoders-help")}
        />
        <span id="trace-transcoders-help" className="note">
          Folder or s3:// prefix holding transcoders.json.
        </span>
        <FieldError error={error} field="transcoders" id="trace-transcoders-error" />
        <div className="field-row">
          <NumberField field="node_threshold" label="Node threshold" min={0} max={1} placeholder="0.8"
            value={nodeThreshold} onChange={setNodeThreshold} error={error} />
          <NumberField field="edge_threshold" label="Edge threshold" min={0} max={1} placeholder="0.98"
            value={edgeThreshold} onChange={setEdgeThreshold} error={error} />
          <NumberField field="max_logits" label="Max logits" min={1} max={50} step={1} placeholder="10"
            value={maxLogits} onChange={setMaxLogits} error={error} />
        </div>
        <p className="note">Empty thresholds use the service's defaults. Needs an API token with the “submit” scope (set it in the header).</p>
        {!fieldError && <ErrorMessage error={error} />}
        <div>
          <button type="submit" disabled={busy}>
            {busy ? "Submitting…" : "Trace"}
          </button>
        </div>
      </form>
      {job && (
        <div className="trace-job">
          <p>
            Job <Link to={`/jobs/${encodeURIComponent(job.id)}`}>{job.id}</Link>{" "}
            <span className={`state state-${job.state}`}>{job.state}</span>
          </p>
          <JobProgress key={`${job.id}-${FINISHED.has(job.state)}`} job={job} onEnd={ended} />
          {job.error && (
            <div className="error" role="alert">
              <strong>Trace failed</strong>
              <pre>{job.error}</pre>
            </div>
          )}
          {graphId && (
            <p className="done">
              Done: <Link to={`/circuits/${encodeURIComponent(graphId)}`}>open graph {graphId}</Link>
            </p>
          )}
        </div>
      )}
    </section>
  );
}

/** One optional numeric setting of the trace form, with the gateway's 422 shown beside it. */
function NumberField(props: {
  field: string;
  label: string;
  min: number;
  max: number;
  step?: number;
  placeholder: string;
  value: string;
  onChange: (value: string) => void;
  error: unknown;
}) {
  const { field, error } = props;
  const id = `trace-${field.replace(/_/g, "-")}`;
  const errorId = `trace-${field}-error`;
  const blamed = blames(error, field);
  return (
    <div className="stack">
      <label htmlFor={id}>{props.label}</label>
      <input
        id={id}
        type="number"
        min={props.min}
        max={props.max}
        step={props.step ?? "any"}
        value={props.value}
        onChange={(e) => props.onChange(e.target.value)}
        placeholder={props.placeholder}
        aria-invalid={blamed || undefined}
        aria-describedby={blamed ? errorId : undefined}
      />
      <FieldError error={error} field={field} id={errorId} />
    </div>
  );
}
