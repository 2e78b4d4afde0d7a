import { useState, type FormEvent } from "react";
import { Link, useNavigate } from "react-router";
import { api, ApiError, type AnalysisJobRequest, type TrainingJobRequest } from "../api/client";
import { useApi } from "../api/useApi";
import { ErrorMessage } from "../components/ErrorMessage";
import { Empty, Loading } from "../components/Status";
import { pct } from "../format";

type Kind = "training" | "analysis";

/** A run that works as is: a tiny random model (`tiny`) on a few thousand tokens, done in seconds
 * (examples/configuration/train-tiny.toml), with small batches so that its curves have points to
 * show while it runs. Name a real model, hook and token budget for real work. */
export const TRAINING_TEMPLATE = {
  config: {
    model: { name: "tiny" },
    data: { context_size: 64, max_tokens: 8192, eval_tokens: 512 },
    activations: { hooks: ["blocks.0.hook_resid_post"], shard_tokens: 2048, buffer_tokens: 4096 },
    sae: { architecture: "topk", d_sae: 256, k: 8 },
    train: { batch_size: 32, epochs: 2, lr: 0.001, lr_warmup_steps: 2, log_every: 8 },
  },
  request_id: null,
};

export const TEMPLATES: Record<Kind, string> = {
  training: JSON.stringify(TRAINING_TEMPLATE, null, 2),
  analysis: JSON.stringify({ sae_uri: "runs/example/sae", sae_id: null, config: null, request_id: null }, null, 2),
};

/** Parse the editor's text: the request body for POST /jobs/{kind}. */
export function parseBody(text: string): { body?: Record<string, unknown>; error?: string } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return { error: `Not valid JSON: ${(err as Error).message}` };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value))
    return { error: "The request must be a JSON object." };
  return { body: value as Record<string, unknown> };
}

export function JobsPage() {
  const jobs = useApi((signal) => api.jobs(undefined, signal), []);
  return (
    <div>
      <h1>Jobs</h1>
      <div className="two-col">
        <SubmitForm onSubmitted={jobs.reload} />
        <section aria-labelledby="jobs-heading">
          <h2 id="jobs-heading">
            All jobs{" "}
            <button type="button" onClick={jobs.reload}>
              Refresh
            </button>
          </h2>
          {jobs.loading ? (
            <Loading what="Loading jobs" />
          ) : jobs.error ? (
            <ErrorMessage error={jobs.error} onRetry={jobs.reload} />
          ) : jobs.data!.length === 0 ? (
            <Empty>No jobs yet.</Empty>
          ) : (
            <table>
              <thead>
                <tr>
                  <th scope="col">Job</th>
                  <th scope="col">Kind</th>
                  <th scope="col">State</th>
                  <th scope="col">Progress</th>
                  <th scope="col">Created</th>
                </tr>
              </thead>
              <tbody>
                {jobs.data!.map((j) => (
                  <tr key={j.id}>
                    <td>
                      <Link to={`/jobs/${encodeURIComponent(j.id)}`}>{j.id}</Link>
                    </td>
                    <td>{j.kind}</td>
                    <td>
                      <span className={`state state-${j.state}`}>{j.state}</span>
                    </td>
                    <td>{pct(j.progress, 0)}</td>
                    <td>{j.created ? new Date(j.created).toLocaleString() : "—"}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </section>
      </div>
    </div>
  );
}

function SubmitForm({ onSubmitted }: { onSubmitted: () => void }) {
  const navigate = useNavigate();
  const [kind, setKind] = useState<Kind>("training");
  const [text, setText] = useState(TEMPLATES.training);
  const [localError, setLocalError] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  const changeKind = (next: Kind) => {
    if (text === TEMPLATES[kind]) setText(TEMPLATES[next]);
    setKind(next);
  };

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    const parsed = parseBody(text);
    setLocalError(parsed.error ?? null);
    if (!parsed.body) return;
    setBusy(true);
    try {
      const job =
        kind === "training"
          ? await api.submitTraining(parsed.body as unknown as TrainingJobRequest)
          : await api.submitAnalysis(parsed.body as unknown as AnalysisJobRequest);
      onSubmitted();
      navigate(`/jobs/${encodeURIComponent(job.id)}`);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  const field = error instanceof ApiError ? error.field : null;
  return (
    <section aria-labelledby="submit-heading">
      <h2 id="submit-heading">Submit a job</h2>
      <form onSubmit={submit} className="stack">
        <label htmlFor="job-kind">Kind</label>
        <select id="job-kind" value={kind} onChange={(e) => changeKind(e.target.value as Kind)}>
          <option value="training">training (POST /jobs/training)</option>
          <option value="analysis">analysis (POST /jobs/analysis)</option>
        </select>
        <label htmlFor="job-body">Request (JSON)</label>
        <textarea
          id="job-body"
          className="code"
          rows={16}
          spellCheck={false}
          value={text}
          onChange={(e) => setText(e.target.value)}
          aria-invalid={Boolean(localError || field)}
          aria-describedby="job-body-help"
        />
        <p id="job-body-help" className="note">
          {kind === "training"
            ? "config: an lm_saes RunConfig as JSON; request_id: optional idempotency key."
            : "sae_uri: folder or s3:// URI of a saved SAE; config: an AnalyzeConfig (optional)."}{" "}
          Needs an API token with the “submit” scope (set it in the header).
        </p>
        {localError && (
          <div className="error" role="alert">
            {localError}
          </div>
        )}
        <ErrorMessage error={error} />
        <div>
          <button type="submit" disabled={busy}>
            {busy ? "Submitting…" : "Submit"}
          </button>{" "}
          <button type="button" onClick={() => setText(TEMPLATES[kind])}>
            Reset template
          </button>
        </div>
      </form>
    </section>
  );
}
