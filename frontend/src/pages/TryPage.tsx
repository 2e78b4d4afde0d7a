import { useState, type FormEvent } from "react";
import { Link, useParams, useSearchParams } from "react-router";
import { api, type ActivationResponse } from "../api/client";
import { ErrorMessage } from "../components/ErrorMessage";
import { Empty } from "../components/Status";
import { TokenShading } from "../components/TokenShading";
import { fmt, showToken } from "../format";

export function TryPage() {
  const saeId = useParams().saeId!;
  const [params] = useSearchParams();
  const [text, setText] = useState("The capital of France is Paris.");
  const [topK, setTopK] = useState(5);
  const [feature, setFeature] = useState(params.get("feature") ?? "");
  const [result, setResult] = useState<ActivationResponse | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const saeLink = `/saes/${encodeURIComponent(saeId)}`;

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const body = { text, top_k: topK, feature: feature === "" ? null : Number(feature) };
      setResult(await api.activations(saeId, body));
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <div>
      <nav aria-label="Breadcrumb" className="crumbs">
        <Link to="/">Home</Link> › <Link to={saeLink}>{saeId}</Link> › try
      </nav>
      <h1>Run {saeId} on text</h1>
      <form onSubmit={submit} className="stack">
        <label htmlFor="try-text">Text</label>
        <textarea id="try-text" rows={5} value={text} onChange={(e) => setText(e.target.value)} required />
        <div className="inline-form">
          <label htmlFor="try-topk">Top features per token</label>
          <input
            id="try-topk"
            type="number"
            min={1}
            max={200}
            value={topK}
            onChange={(e) => setTopK(Number(e.target.value))}
          />
          <label htmlFor="try-feature">Only feature (optional)</label>
          <input
            id="try-feature"
            type="number"
            min={0}
            value={feature}
            onChange={(e) => setFeature(e.target.value)}
            placeholder="all"
          />
          <button type="submit" disabled={busy || !text}>
            {busy ? "Running…" : "Run"}
          </button>
        </div>
      </form>
      <p className="note">Needs an API token with the “compute” scope (set it in the header): the gateway computes for no one else.</p>
      <ErrorMessage error={error} />
      {result && <Result result={result} saeLink={saeLink} />}
    </div>
  );
}

function Result({ result, saeLink }: { result: ActivationResponse; saeLink: string }) {
  if (result.tokens.length === 0) return <Empty>No tokens.</Empty>;
  if (result.feature != null) {
    const f = result.feature;
    const values = result.tokens.map((t) => t.features.find((x) => x.index === f)?.value ?? 0);
    return (
      <section aria-labelledby="result-heading">
        <h2 id="result-heading">
          Feature <Link to={`${saeLink}/features/${f}`}>#{f}</Link> per token (max {fmt(Math.max(...values))})
        </h2>
        <p className="shaded-text">
          <TokenShading tokens={result.tokens.map((t) => t.token)} values={values} label={`Feature ${f} per token`} />
        </p>
      </section>
    );
  }
  return (
    <section aria-labelledby="result-heading">
      <h2 id="result-heading">Strongest features per token</h2>
      <table>
        <thead>
          <tr>
            <th scope="col">Pos</th>
            <th scope="col">Token</th>
            <th scope="col">Features (index: value)</th>
          </tr>
        </thead>
        <tbody>
          {result.tokens.map((t) => (
            <tr key={t.position}>
              <td className="num">{t.position}</td>
              <td>
                <code>{showToken(t.token)}</code>
              </td>
              <td>
                {t.features.length === 0
                  ? "—"
                  : t.features.map((x) => (
                      <span key={x.index} className="feature-chip">
                        <Link to={`${saeLink}/features/${x.index}`}>#{x.index}</Link>: {fmt(x.value, 2)}
                      </span>
                    ))}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
