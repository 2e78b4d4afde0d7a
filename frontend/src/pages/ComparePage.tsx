import { useId, type ReactNode } from "react";
import { Link, useSearchParams } from "react-router";
import { api, type Sae } from "../api/client";
import { useApi } from "../api/useApi";
import { ScatterPlot, type ScatterPoint } from "../components/Charts";
import { ErrorMessage } from "../components/ErrorMessage";
import { Empty, Loading } from "../components/Status";
import { headline, pairSummary, PROBE_KS, type Headline } from "../evals";
import { fmt, pct } from "../format";

const enc = encodeURIComponent;
export const PARTNER_PAGE = 25;

/** The y axis of the trade-off plot (x is L0). */
export const Y_AXES = {
  ev: { key: "explained_variance", label: "Explained variance" },
  ce: { key: "ce_loss_recovered", label: "CE loss recovered" },
} as const;
type YAxis = keyof typeof Y_AXES;

/** Every SAE's metrics side by side, the sparsity / fidelity trade-off, and two SAEs' features
 * compared (?a=…&b=…: the stored universality summary and each feature's partners). */
export function ComparePage() {
  const [params, setParams] = useSearchParams();
  const a = params.get("a") ?? "";
  const b = params.get("b") ?? "";
  const y: YAxis = params.get("y") === "ce" ? "ce" : "ev";
  const { data: saes, error, loading, reload } = useApi((signal) => api.saes(undefined, signal), []);
  const set = (changes: Record<string, string>) =>
    setParams(
      (prev) => {
        const out = new URLSearchParams(prev);
        for (const [key, value] of Object.entries(changes)) {
          if (value) out.set(key, value);
          else out.delete(key);
        }
        if ("a" in changes || "b" in changes) out.delete("offset");
        return out;
      },
      { replace: true },
    );

  if (loading) return <Loading what="Loading SAEs" />;
  if (error) return <ErrorMessage error={error} onRetry={reload} />;
  const all = saes!;
  if (all.length === 0)
    return (
      <Empty>
        No SAEs yet. Train and analyze some (<Link to="/jobs">Jobs</Link>), then compare them here.
      </Empty>
    );
  return (
    <div>
      <h1>Compare SAEs</h1>
      <MetricsTable saes={all} />
      <TradeOff saes={all} y={y} onY={(next) => set({ y: next === "ev" ? "" : next })} />
      <section aria-labelledby="pair-heading" className="card">
        <h2 id="pair-heading">Two SAEs, feature by feature</h2>
        <div className="toolbar">
          <SaeSelect label="SAE A" value={a} saes={all} onChange={(value) => set({ a: value })} />
          <SaeSelect label="SAE B" value={b} saes={all} onChange={(value) => set({ b: value })} />
          <button type="button" onClick={() => set({ a: b, b: a })} disabled={!a && !b}>
            Swap
          </button>
        </div>
        <Pair saes={all} a={a} b={b} />
      </section>
    </div>
  );
}

function SaeSelect({
  label,
  value,
  saes,
  onChange,
}: {
  label: string;
  value: string;
  saes: Sae[];
  onChange: (value: string) => void;
}) {
  const id = useId();
  return (
    <span>
      <label htmlFor={id}>{label}</label>{" "}
      <select id={id} value={value} onChange={(e) => onChange(e.target.value)}>
        <option value="">—</option>
        {saes.map((s) => (
          <option key={s.id} value={s.id}>
            {s.id}
          </option>
        ))}
        {value && !saes.some((s) => s.id === value) && <option value={value}>{value} (unknown)</option>}
      </select>
    </span>
  );
}

interface Column {
  label: string;
  title?: string;
  cell: (h: Headline, sae: Sae) => ReactNode;
  present?: (h: Headline) => boolean;
}

const COLUMNS: Column[] = [
  { label: "L0", cell: (h) => fmt(h.l0, 2) },
  { label: "Explained variance", cell: (h) => fmt(h.explained_variance) },
  { label: "CE recovered", cell: (h) => fmt(h.ce_loss_recovered) },
  { label: "KL divergence", title: "nats per prediction, clean ‖ with the SAE", cell: (h) => fmt(h.kl_divergence, 4) },
  { label: "Dead fraction", cell: (h) => pct(h.dead_fraction) },
  {
    label: "Absorption",
    title: "absorption suite: mean absorption rate (lower is better)",
    cell: (h) => pct(h.absorption),
    present: (h) => h.absorption !== undefined,
  },
  {
    label: "Full absorption",
    title: "absorption suite: mean full absorption rate",
    cell: (h) => pct(h.full_absorption),
    present: (h) => h.full_absorption !== undefined,
  },
  ...PROBE_KS.map(
    (k): Column => ({
      label: `Sparse probe k=${k}`,
      title: `probing suite: mean accuracy of probes on the best ${k} features`,
      cell: (h) => fmt(h.sparse_probe[k]),
      present: (h) => h.sparse_probe[k] !== undefined,
    }),
  ),
  {
    label: "Dense probe",
    title: "probing suite: mean accuracy of a probe on the whole activation",
    cell: (h) => fmt(h.dense_probe),
    present: (h) => h.dense_probe !== undefined,
  },
  {
    label: "Partners",
    title: "universality suite: live features with a partner (max correlation ≥ 0.7) in the compared SAE",
    cell: (h, sae) =>
      h.partner_fraction === undefined ? (
        "—"
      ) : (
        <>
          {pct(h.partner_fraction)}
          {h.compared_id && (
            <>
              {" "}
              vs <Link to={`/compare?a=${enc(sae.id)}&b=${enc(h.compared_id)}`}>{h.compared_id}</Link>
            </>
          )}
        </>
      ),
    present: (h) => h.partner_fraction !== undefined,
  },
];

/** A row per SAE; a suite's columns appear once some SAE has its figures. */
function MetricsTable({ saes }: { saes: Sae[] }) {
  const rows = saes.map((sae) => ({ sae, h: headline(sae) }));
  const columns = COLUMNS.filter((c) => !c.present || rows.some(({ h }) => c.present!(h)));
  return (
    <section aria-labelledby="metrics-heading">
      <h2 id="metrics-heading">Metrics</h2>
      <div className="table-scroll">
        <table aria-labelledby="metrics-heading">
          <thead>
            <tr>
              <th scope="col">SAE</th>
              <th scope="col">Model</th>
              <th scope="col">Architecture</th>
              <th scope="col">d_sae</th>
              {columns.map((c) => (
                <th key={c.label} scope="col" title={c.title}>
                  {c.label}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {rows.map(({ sae, h }) => (
              <tr key={sae.id}>
                <th scope="row">
                  <Link to={`/saes/${enc(sae.id)}`}>{sae.id}</Link>
                </th>
                <td>{sae.model}</td>
                <td>{sae.architecture ?? "—"}</td>
                <td className="num">{sae.d_sae ?? "—"}</td>
                {columns.map((c) => (
                  <td key={c.label} className="num">
                    {c.cell(h, sae)}
                  </td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <p className="note">
        Core figures come from the SAE&apos;s evaluation suite report where <code>lm-saes eval --suite core</code>{" "}
        stored one, else from its training run&apos;s evaluation.
      </p>
    </section>
  );
}

/** L0 against explained variance (or CE loss recovered), one point per SAE. */
function TradeOff({ saes, y, onY }: { saes: Sae[]; y: YAxis; onY: (y: YAxis) => void }) {
  const axis = Y_AXES[y];
  const points: ScatterPoint[] = [];
  for (const sae of saes) {
    const h = headline(sae);
    const value = h[axis.key];
    if (h.l0 !== undefined && value !== undefined) points.push({ label: sae.id, x: h.l0, y: value });
  }
  const missing = saes.length - points.length;
  return (
    <section aria-labelledby="tradeoff-heading">
      <h2 id="tradeoff-heading">Sparsity against fidelity</h2>
      <fieldset className="toolbar">
        <legend className="visually-hidden">Y axis</legend>
        {(Object.keys(Y_AXES) as YAxis[]).map((key) => (
          <label key={key}>
            <input type="radio" name="y-axis" value={key} checked={y === key} onChange={() => onY(key)} />{" "}
            {Y_AXES[key].label}
          </label>
        ))}
      </fieldset>
      {points.length === 0 ? (
        <Empty>No SAE has both L0 and {axis.label.toLowerCase()} yet.</Empty>
      ) : (
        <ScatterPlot points={points} title={`${axis.label} against L0`} xLabel="L0" yLabel={axis.label} />
      )}
      {missing > 0 && points.length > 0 && (
        <p className="note">
          {missing} SAE{missing === 1 ? "" : "s"} without L0 and {axis.label.toLowerCase()} not plotted.
        </p>
      )}
    </section>
  );
}

function Pair({ saes, a, b }: { saes: Sae[]; a: string; b: string }) {
  if (!a || !b) return <Empty>Pick two SAEs to compare their features.</Empty>;
  if (a === b) return <Empty>Pick two different SAEs.</Empty>;
  const saeA = saes.find((s) => s.id === a);
  const saeB = saes.find((s) => s.id === b);
  const unknown = [saeA ? "" : a, saeB ? "" : b].filter(Boolean);
  if (!saeA || !saeB) return <ErrorMessage error={new Error(`No SAE ${unknown.map((u) => `“${u}”`).join(" or ")}.`)} />;
  const summary = pairSummary(saeA, saeB);
  return (
    <div>
      {saeA.model !== saeB.model && (
        <p className="note">
          {a} is an SAE of {saeA.model}, {b} of {saeB.model}: universality compares SAEs of one model on the same
          tokens.
        </p>
      )}
      <h3>Universality</h3>
      {summary ? (
        <>
          <table aria-label={`Universality of ${a} and ${b}`}>
            <thead>
              <tr>
                <th scope="col">Features of</th>
                <th scope="col">Live</th>
                <th scope="col">With a partner (max correlation ≥ 0.7)</th>
                <th scope="col">Mean max correlation</th>
              </tr>
            </thead>
            <tbody>
              {summary.sides.map((side) => (
                <tr key={side.from}>
                  <th scope="row">
                    {side.from} in {side.to}
                  </th>
                  <td className="num">
                    {side.alive} of {side.features}
                  </td>
                  <td className="num">{pct(side.partner_fraction)}</td>
                  <td className="num">{fmt(side.mean_max_correlation)}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <p className="note">
            Decoders: mean best cosine {fmt(summary.decoder_mean_max_cosine)}, one-to-one matched cosine{" "}
            {fmt(summary.decoder_matched_cosine)} · over {summary.tokens.toLocaleString()} tokens · measured by{" "}
            <code>lm-saes eval --sae …/{summary.measuredBy} --compare …</code>
          </p>
        </>
      ) : (
        <Empty>
          No stored universality comparison of {a} and {b}. Run{" "}
          <code>
            lm-saes eval --suite universality --sae … --compare … --documents … --sae-id {a} --compare-id {b}
          </code>
          .
        </Empty>
      )}
      <Partners a={a} b={b} />
    </div>
  );
}

/** A's features (densest first) with their activation partners in B, from the stored neighbours. */
function Partners({ a, b }: { a: string; b: string }) {
  const [params, setParams] = useSearchParams();
  const offset = Math.max(0, Math.floor(Number(params.get("offset")) || 0));
  const { data, error, loading, reload } = useApi(
    (signal) =>
      api.neighbours(
        a,
        { partner: b, kind: "activation", sort: "density", order: "desc", offset, limit: PARTNER_PAGE },
        signal,
      ),
    [a, b, offset],
  );
  const go = (next: number) =>
    setParams(
      (prev) => {
        const out = new URLSearchParams(prev);
        out.set("offset", String(next));
        return out;
      },
      { replace: true },
    );
  const heading = (
    <h3>
      Features of {a} and their partners in {b}
    </h3>
  );
  if (loading)
    return (
      <>
        {heading}
        <Loading what="Loading partners" />
      </>
    );
  if (error)
    return (
      <>
        {heading}
        <ErrorMessage error={error} onRetry={reload} />
      </>
    );
  const page = data!;
  const last = Math.min(offset + page.items.length, page.total);
  const any = page.items.some((f) => f.neighbours.length > 0);
  return (
    <>
      {heading}
      <div className="toolbar">
        <button type="button" onClick={() => go(Math.max(0, offset - PARTNER_PAGE))} disabled={offset === 0}>
          ‹ Previous
        </button>
        <span className="page-info" aria-live="polite">
          {page.total ? `${offset + 1}–${last} of ${page.total} features, densest first` : "no analyzed features"}
        </span>
        <button type="button" onClick={() => go(offset + PARTNER_PAGE)} disabled={last >= page.total}>
          Next ›
        </button>
      </div>
      {!any && page.items.length > 0 && (
        <Empty>
          No stored partners in {b} for these features (the universality suite stores them when run with{" "}
          <code>--documents</code> and <code>--sae-id</code>).
        </Empty>
      )}
      {page.items.length > 0 && (
        <table aria-label={`Partners in ${b}`}>
          <thead>
            <tr>
              <th scope="col">Feature of {a}</th>
              <th scope="col">Density</th>
              <th scope="col">Partners in {b} (activation correlation)</th>
            </tr>
          </thead>
          <tbody>
            {page.items.map((f) => (
              <tr key={f.index}>
                <td>
                  <Link to={`/saes/${enc(a)}/features/${f.index}`}>#{f.index}</Link>
                </td>
                <td className="num">{pct(f.density, 3)}</td>
                <td>
                  {f.neighbours.length === 0
                    ? "—"
                    : f.neighbours.map((n) => (
                        <span key={n.index} className="feature-chip">
                          <Link to={`/saes/${enc(n.sae_id)}/features/${n.index}`}>#{n.index}</Link> {fmt(n.similarity)}
                        </span>
                      ))}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}
