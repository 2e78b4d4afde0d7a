import { Link, useSearchParams } from "react-router";
import { api, type FeatureSort, type SortOrder } from "../api/client";
import { useApi } from "../api/useApi";
import { fmt, pct } from "../format";
import { ErrorMessage } from "./ErrorMessage";
import { Empty, Loading } from "./Status";

const COLUMNS: { key: FeatureSort; label: string }[] = [
  { key: "index", label: "Feature" },
  { key: "density", label: "Density" },
  { key: "max_activation", label: "Max activation" },
  { key: "score", label: "Score" },
];
const SORTS = new Set<string>(COLUMNS.map((c) => c.key));
export const PAGE_SIZES = [25, 50, 100, 200];

/** A page of an SAE's features; sort, order, offset and page size live in the URL. */
export function FeatureTable({ saeId }: { saeId: string }) {
  const [params, setParams] = useSearchParams();
  const sortParam = params.get("sort") ?? "index";
  const sort = (SORTS.has(sortParam) ? sortParam : "index") as FeatureSort;
  const order: SortOrder = params.get("order") === "desc" ? "desc" : "asc";
  const limit = PAGE_SIZES.includes(Number(params.get("limit"))) ? Number(params.get("limit")) : 50;
  const offset = Math.max(0, Math.floor(Number(params.get("offset")) || 0));

  const { data, error, loading, reload } = useApi(
    (signal) => api.features(saeId, { sort, order, offset, limit }, signal),
    [saeId, sort, order, offset, limit],
  );

  const update = (next: Partial<{ sort: string; order: string; offset: number; limit: number }>) => {
    const merged = { sort, order, offset, limit, ...next };
    setParams(
      (prev) => {
        const out = new URLSearchParams(prev);
        out.set("sort", merged.sort);
        out.set("order", merged.order);
        out.set("offset", String(merged.offset));
        out.set("limit", String(merged.limit));
        return out;
      },
      { replace: true },
    );
  };

  const sortBy = (key: FeatureSort) => {
    if (key === sort) update({ order: order === "asc" ? "desc" : "asc", offset: 0 });
    else update({ sort: key, order: key === "index" ? "asc" : "desc", offset: 0 });
  };

  const total = data?.total ?? 0;
  const last = Math.min(offset + limit, total);
  const page = Math.floor(offset / limit) + 1;
  const pages = Math.max(1, Math.ceil(total / limit));

  return (
    <section aria-labelledby="features-heading" className="feature-table">
      <h2 id="features-heading">Features</h2>
      <div className="toolbar">
        <label>
          Page size{" "}
          <select value={limit} onChange={(e) => update({ limit: Number(e.target.value), offset: 0 })}>
            {PAGE_SIZES.map((n) => (
              <option key={n} value={n}>
                {n}
              </option>
            ))}
          </select>
        </label>
        <button type="button" onClick={() => update({ offset: 0 })} disabled={offset === 0}>
          « First
        </button>
        <button type="button" onClick={() => update({ offset: Math.max(0, offset - limit) })} disabled={offset === 0}>
          ‹ Previous
        </button>
        <span className="page-info" aria-live="polite">
          {data ? (total ? `${offset + 1}–${last} of ${total} (page ${page} of ${pages})` : "0 features") : ""}
        </span>
        <button type="button" onClick={() => update({ offset: offset + limit })} disabled={!data || last >= total}>
          Next ›
        </button>
      </div>
      {error ? (
        <ErrorMessage error={error} onRetry={reload} />
      ) : (
        <table aria-busy={loading}>
          <thead>
            <tr>
              {COLUMNS.map((c) => (
                <th
                  key={c.key}
                  scope="col"
                  aria-sort={c.key === sort ? (order === "asc" ? "ascending" : "descending") : "none"}
                >
                  <button type="button" className="sort" onClick={() => sortBy(c.key)}>
                    {c.label}
                    {c.key === sort ? (order === "asc" ? " ▲" : " ▼") : ""}
                  </button>
                </th>
              ))}
              <th scope="col">Mean activation</th>
            </tr>
          </thead>
          <tbody>
            {data?.items.map((f) => (
              <tr key={f.index}>
                <td>
                  <Link to={`/saes/${encodeURIComponent(saeId)}/features/${f.index}`}>#{f.index}</Link>
                </td>
                <td>{pct(f.density, 3)}</td>
                <td>{fmt(f.max_activation)}</td>
                <td title={typeof f.score === "number" ? "explanation score" : "not explained"}>{fmt(f.score, 2)}</td>
                <td>{fmt(f.mean_activation)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {loading && <Loading what="Loading features" />}
      {!loading && !error && data && data.items.length === 0 && (
        <Empty>No features on this page (has this SAE been analyzed?).</Empty>
      )}
    </section>
  );
}
