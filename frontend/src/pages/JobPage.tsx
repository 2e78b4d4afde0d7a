import { useState } from "react";
import { Link, useParams } from "react-router";
import { api, FINISHED, type Job } from "../api/client";
import { useApi } from "../api/useApi";
import { graphIdOf } from "../circuits/jobs";
import { ErrorMessage } from "../components/ErrorMessage";
import { JobProgress } from "../components/JobProgress";
import { Loading } from "../components/Status";
import { fmt, pct } from "../format";

export function JobPage() {
  const jobId = useParams().jobId!;
  const { data, error, loading, reload } = useApi((signal) => api.job(jobId, signal), [jobId]);
  const [final, setFinal] = useState<Job | null>(null);
  const [cancelError, setCancelError] = useState<unknown>(null);
  const job = final && final.id === jobId ? final : data;

  const crumbs = (
    <nav aria-label="Breadcrumb" className="crumbs">
      <Link to="/jobs">Jobs</Link> › {jobId}
    </nav>
  );
  if (loading && !job)
    return (
      <div>
        {crumbs}
        <Loading what="Loading job" />
      </div>
    );
  if (error || !job)
    return (
      <div>
        {crumbs}
        <ErrorMessage error={error} onRetry={reload} />
      </div>
    );

  const cancel = async () => {
    setCancelError(null);
    try {
      setFinal(await api.cancelJob(job.id));
    } catch (err) {
      setCancelError(err);
    }
  };
  const result = job.result && Object.keys(job.result).length ? job.result : null;
  const saeId = typeof result?.sae_id === "string" ? result.sae_id : null;
  const graphId = job.kind === "tracing" ? graphIdOf(job) : null;
  return (
    <div>
      {crumbs}
      <h1>
        {job.kind} job <code>{job.id}</code> <span className={`state state-${job.state}`}>{job.state}</span>
      </h1>
      <p>
        Progress {pct(job.progress, 0)}
        {job.created && ` · created ${new Date(job.created).toLocaleString()}`}
        {job.updated && ` · updated ${new Date(job.updated).toLocaleString()}`}{" "}
        {!FINISHED.has(job.state) && (job.kind === "training" || job.kind === "analysis") && (
          <button type="button" onClick={cancel}>
            Cancel job
          </button>
        )}
      </p>
      <ErrorMessage error={cancelError} />
      {job.error && (
        <div className="error" role="alert">
          <strong>Job failed</strong>
          <pre>{job.error}</pre>
        </div>
      )}
      {/* keyed by job only: the curves drawn while the job ran stay once it has ended */}
      <JobProgress key={job.id} job={job} onEnd={setFinal} />
      {Object.keys(job.metrics ?? {}).length > 0 && (
        <section aria-labelledby="metrics-heading">
          <h2 id="metrics-heading">Metrics</h2>
          <dl className="metrics">
            {Object.entries(job.metrics ?? {}).map(([k, v]) => (
              <div key={k}>
                <dt>{k}</dt>
                <dd>{fmt(v, 4)}</dd>
              </div>
            ))}
          </dl>
        </section>
      )}
      {saeId && (
        <p>
          Result: <Link to={`/saes/${encodeURIComponent(saeId)}`}>SAE {saeId}</Link>
        </p>
      )}
      {graphId && (
        <p>
          Result: <Link to={`/circuits/${encodeURIComponent(graphId)}`}>graph {graphId}</Link>
        </p>
      )}
      <details>
        <summary>Config and result (JSON)</summary>
        <pre className="code">{JSON.stringify({ config: job.config, result: job.result }, null, 2)}</pre>
      </details>
    </div>
  );
}
