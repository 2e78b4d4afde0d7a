import { useState, type FormEvent } from "react";
import { Link, useSearchParams } from "react-router";
import { api } from "../api/client";
import { useApi } from "../api/useApi";
import { ErrorMessage } from "../components/ErrorMessage";
import { MAX_QUERY } from "../components/Layout";
import { Empty, Loading } from "../components/Status";
import { fmt } from "../format";

export const K_CHOICES = [10, 20, 50, 100];

/** /search?q=…&sae=…&k=…: features whose explanations are nearest the query in meaning. */
export function SearchPage() {
  const [params, setParams] = useSearchParams();
  const q = (params.get("q") ?? "").trim();
  const saeId = params.get("sae") ?? "";
  const k = K_CHOICES.includes(Number(params.get("k"))) ? Number(params.get("k")) : 20;
  const saes = useApi((signal) => api.saes(undefined, signal), []);
  const results = useApi(
    (signal) => (q ? api.search(q, { k, saeId: saeId || undefined }, signal) : Promise.resolve(null)),
    [q, k, saeId],
  );
  const [draft, setDraft] = useState<string | null>(null);
  const shown = draft ?? q;

  const update = (next: { q?: string; sae?: string; k?: number }) => {
    setParams((prev) => {
      const out = new URLSearchParams(prev);
      for (const [key, value] of Object.entries(next)) {
        if (value === undefined || value === "") out.delete(key);
        else out.set(key, String(value));
      }
      return out;
    });
  };
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (shown.trim()) update({ q: shown.trim() });
    setDraft(null);
  };

  const hits = results.data?.hits ?? [];
  return (
    <div>
      <nav aria-label="Breadcrumb" className="crumbs">
        <Link to="/">Home</Link> › search
      </nav>
      <h1>Search features</h1>
      <p className="note">
        Features whose explanations (autointerp) mean what you write, ranked by the cosine similarity of sentence
        embeddings (all-MiniLM-L6-v2). Only explained features can be found.
      </p>
      <form className="inline-form" onSubmit={submit} aria-label="Search options">
        <label htmlFor="search-query">Query</label>
        <input
          id="search-query"
          value={shown}
          maxLength={MAX_QUERY}
          size={40}
          onChange={(e) => setDraft(e.target.value)}
          placeholder="e.g. French city names"
        />
        <label htmlFor="search-sae">SAE</label>
        <select id="search-sae" value={saeId} onChange={(e) => update({ sae: e.target.value })}>
          <option value="">All SAEs</option>
          {(saes.data ?? []).map((s) => (
            <option key={s.id} value={s.id}>
              {s.id}
            </option>
          ))}
          {saeId && !(saes.data ?? []).some((s) => s.id === saeId) && <option value={saeId}>{saeId}</option>}
        </select>
        <label htmlFor="search-k">Results</label>
        <select id="search-k" value={k} onChange={(e) => update({ k: Number(e.target.value) })}>
          {K_CHOICES.map((n) => (
            <option key={n} value={n}>
              {n}
            </option>
          ))}
        </select>
        <button type="submit" disabled={!shown.trim()}>
          Search
        </button>
      </form>
      {!q ? (
        <Empty>Type what a feature should mean, e.g. “words about money” or “closing brackets in code”.</Empty>
      ) : results.loading ? (
        <Loading what="Searching" />
      ) : results.error ? (
        <ErrorMessage error={results.error} onRetry={results.reload} />
      ) : hits.length === 0 ? (
        <Empty>
          No explained features{saeId ? ` in ${saeId}` : ""} yet: run autointerp on an SAE to explain its features.
        </Empty>
      ) : (
        <table className="search-hits" aria-label={`Features matching “${q}”`}>
          <thead>
            <tr>
              <th scope="col">Feature</th>
              <th scope="col">SAE</th>
              <th scope="col">Explanation</th>
              <th scope="col" className="num">
                Similarity
              </th>
              <th scope="col" className="num">
                Score
              </th>
            </tr>
          </thead>
          <tbody>
            {hits.map((h) => (
              <tr key={`${h.sae_id}/${h.index}`}>
                <td>
                  <Link to={`/saes/${encodeURIComponent(h.sae_id)}/features/${h.index}`}>#{h.index}</Link>
                </td>
                <td>
                  <Link to={`/saes/${encodeURIComponent(h.sae_id)}`}>{h.sae_id}</Link>
                </td>
                <td className="explanation-cell">{h.explanation}</td>
                <td className="num">{fmt(h.similarity, 3)}</td>
                <td className="num">{fmt(h.score, 2)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
