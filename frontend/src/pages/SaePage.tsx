import { useState, type FormEvent } from "react";
import { Link, useParams } from "react-router";
import { api, type TokenMatch } from "../api/client";
import { useApi } from "../api/useApi";
import { DensityHistogram } from "../components/DensityHistogram";
import { ErrorMessage } from "../components/ErrorMessage";
import { EvalSuites } from "../components/EvalSuites";
import { FeatureTable } from "../components/FeatureTable";
import { ScoreHistogram } from "../components/ScoreHistogram";
import { Empty, Loading } from "../components/Status";
import { evalsOf } from "../evals";
import { fmt, pct, showToken } from "../format";

export function SaePage() {
  const saeId = useParams().saeId!;
  const { data: sae, error, loading, reload } = useApi((signal) => api.sae(saeId, signal), [saeId]);
  if (loading) return <Loading what="Loading SAE" />;
  if (error) return <ErrorMessage error={error} onRetry={reload} />;
  const m = sae!.metrics ?? {};
  return (
    <div>
      <nav aria-label="Breadcrumb" className="crumbs">
        <Link to="/">Home</Link> › {saeId}
      </nav>
      <h1>
        {saeId} <small>{sae!.architecture}</small>
      </h1>
      <p>
        Model <strong>{sae!.model}</strong> · hook <code>{sae!.hook_in ?? "—"}</code>
        {sae!.hook_out && sae!.hook_out !== sae!.hook_in && (
          <>
            {" "}
            → <code>{sae!.hook_out}</code>
          </>
        )}{" "}
        · d_sae {sae!.d_sae ?? "—"} · <Link to={`/saes/${encodeURIComponent(saeId)}/try`}>Try it on text</Link> ·{" "}
        <Link to={`/search?sae=${encodeURIComponent(saeId)}`}>Search its features by meaning</Link> ·{" "}
        <Link to={`/compare?a=${encodeURIComponent(saeId)}`}>Compare with other SAEs</Link>
      </p>
      <dl className="metrics">
        <div>
          <dt>L0</dt>
          <dd>{fmt(m.l0, 2)}</dd>
        </div>
        <div>
          <dt>Explained variance</dt>
          <dd>{fmt(m.explained_variance)}</dd>
        </div>
        <div>
          <dt>CE recovered</dt>
          <dd>{fmt(m.ce_loss_recovered)}</dd>
        </div>
        <div>
          <dt>KL divergence</dt>
          <dd>{fmt(m.kl_divergence, 4)}</dd>
        </div>
        <div>
          <dt>Dead fraction</dt>
          <dd>{pct(m.dead_fraction)}</dd>
        </div>
        <div>
          <dt>Dense fraction</dt>
          <dd>{pct(m.dense_fraction)}</dd>
        </div>
      </dl>
      {(sae!.analyses ?? []).length > 0 && (
        <p className="note">
          Analyses:{" "}
          {(sae!.analyses ?? []).map((a) => `${a.id} (${a.state}${a.tokens ? `, ${a.tokens} tokens` : ""})`).join("; ")}
        </p>
      )}
      <section aria-labelledby="evals-heading" className="card">
        <h2 id="evals-heading">Evaluation suites</h2>
        <EvalSuites saeId={saeId} evals={evalsOf(sae!)} />
      </section>
      <div className="two-col">
        <FeatureTable saeId={saeId} />
        <div>
          <section aria-labelledby="density-heading">
            <h2 id="density-heading">Density</h2>
            <DensityHistogram saeId={saeId} dSae={sae!.d_sae} />
          </section>
          <section aria-labelledby="scores-heading">
            <h2 id="scores-heading">Explanation scores</h2>
            <ScoreHistogram saeId={saeId} />
          </section>
          <TokenSearch saeId={saeId} />
        </div>
      </div>
    </div>
  );
}

function TokenSearch({ saeId }: { saeId: string }) {
  const [token, setToken] = useState("");
  const [result, setResult] = useState<TokenMatch[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      setResult(await api.searchToken(saeId, token));
    } catch (err) {
      setError(err);
      setResult(null);
    } finally {
      setBusy(false);
    }
  };
  return (
    <section aria-labelledby="token-search-heading">
      <h2 id="token-search-heading">Features that peak on a token</h2>
      <form onSubmit={submit} className="inline-form">
        <label htmlFor="token-search">Token</label>
        <input id="token-search" value={token} onChange={(e) => setToken(e.target.value)} placeholder=" Paris" />
        <button type="submit" disabled={!token || busy}>
          Search
        </button>
      </form>
      <ErrorMessage error={error} />
      {result && result.length === 0 && <Empty>No feature peaks on {JSON.stringify(token)}.</Empty>}
      {result && result.length > 0 && (
        <ul className="plain">
          {result.map((r) => (
            <li key={r.index}>
              <Link to={`/saes/${encodeURIComponent(saeId)}/features/${r.index}`}>#{r.index}</Link> max{" "}
              {fmt(r.max_activation)} · density {pct(r.density, 3)} · {showToken(String(r.top_token?.token ?? ""))}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
