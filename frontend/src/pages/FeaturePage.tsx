import { Link, useParams } from "react-router";
import { api, type Feature, type FeatureNeighbour } from "../api/client";
import { useApi } from "../api/useApi";
import { HistogramChart, type Bin } from "../components/Charts";
import { ErrorMessage } from "../components/ErrorMessage";
import { Empty, Loading } from "../components/Status";
import { ExampleList, type Example } from "../components/Examples";
import { ExplanationPanel } from "../components/ExplanationPanel";
import { SteerPanel } from "../components/SteerPanel";
import { fmt, num, pct, showToken } from "../format";

interface LensToken {
  token: string;
  token_id?: number;
  value: number;
}

/** The analysis histogram ({edges, counts, zero}) as labeled bins; the last edge may be ∞. */
export function activationBins(histogram: Feature["histogram"]): Bin[] {
  if (!histogram) return [];
  const edges = (histogram.edges as unknown[] | undefined) ?? [];
  const counts = (histogram.counts as number[] | undefined) ?? [];
  return counts.map((count, i) => {
    const lo = num(edges[i]);
    return { label: lo === undefined ? `bin ${i}` : fmt(lo, 2), count };
  });
}

export function FeaturePage() {
  const { saeId = "", index = "" } = useParams();
  const n = Number(index);
  const { data, error, loading, reload } = useApi((signal) => api.feature(saeId, n, signal), [saeId, n]);
  const saeLink = `/saes/${encodeURIComponent(saeId)}`;
  const header = (
    <nav aria-label="Breadcrumb" className="crumbs">
      <Link to="/">Home</Link> › <Link to={saeLink}>{saeId}</Link> › feature {index}
    </nav>
  );
  if (!Number.isInteger(n) || n < 0)
    return (
      <div>
        {header}
        <ErrorMessage error={new Error(`"${index}" is not a feature index`)} />
      </div>
    );
  if (loading)
    return (
      <div>
        {header}
        <Loading what="Loading feature" />
      </div>
    );
  if (error)
    return (
      <div>
        {header}
        <ErrorMessage error={error} onRetry={reload} />
      </div>
    );
  const f = data!;
  const top = (f.top_examples ?? []) as unknown as Example[];
  const quantiles = (f.quantile_samples ?? []) as unknown as { interval: number[]; examples: Example[] }[];
  const lens = f.logit_lens as { top?: LensToken[]; bottom?: LensToken[] } | null | undefined;
  const peaks = (f.top_tokens ?? []) as { token: string; count: number; max_activation: number }[];
  const bins = activationBins(f.histogram);
  return (
    <div>
      {header}
      <h1>
        Feature {f.index} <small>of {saeId}</small>
      </h1>
      <p>
        <Link to={`${saeLink}/features/${Math.max(0, n - 1)}`} aria-disabled={n === 0}>
          ‹ Previous
        </Link>{" "}
        · <Link to={`${saeLink}/features/${n + 1}`}>Next ›</Link> ·{" "}
        <Link to={`${saeLink}/try?feature=${n}`}>Try this feature on text</Link>
      </p>
      <dl className="metrics">
        <div>
          <dt>Density</dt>
          <dd>{pct(f.density, 4)}</dd>
        </div>
        <div>
          <dt>Max activation</dt>
          <dd>{fmt(f.max_activation)}</dd>
        </div>
        <div>
          <dt>Mean activation (when active)</dt>
          <dd>{fmt(f.mean_activation)}</dd>
        </div>
        {f.histogram && (
          <div>
            <dt>Silent tokens</dt>
            <dd>{fmt(num(f.histogram.zero), 0)}</dd>
          </div>
        )}
      </dl>
      <ExplanationPanel explanation={f.explanation} score={f.score} />
      <div className="two-col">
        <section aria-labelledby="top-heading">
          <h2 id="top-heading">Top activating contexts</h2>
          {top.length === 0 ? (
            <Empty>This feature never fired on the analyzed text.</Empty>
          ) : (
            <ExampleList examples={top} max={f.max_activation} highlightPeak />
          )}
          <h2>Samples across the activation range</h2>
          {quantiles.every((q) => q.examples.length === 0) ? (
            <Empty>No quantile samples.</Empty>
          ) : (
            quantiles
              .filter((q) => q.examples.length > 0)
              .reverse()
              .map((q, qi) => (
                <div key={qi} className="quantile">
                  <h3>
                    {fmt(q.interval[0], 2)} – {fmt(q.interval[1], 2)}
                  </h3>
                  <ExampleList examples={q.examples} max={f.max_activation} />
                </div>
              ))
          )}
        </section>
        <div>
          <SteerPanel key={`${saeId}/${f.index}`} saeId={saeId} feature={f.index} maxActivation={f.max_activation} />
          <section aria-labelledby="hist-heading">
            <h2 id="hist-heading">Activation histogram</h2>
            {bins.length ? (
              <HistogramChart bins={bins} title="Activations when active (count, log scale)" xLabel="activation" logScale />
            ) : (
              <Empty>No histogram.</Empty>
            )}
          </section>
          <section aria-labelledby="lens-heading">
            <h2 id="lens-heading">Logit lens</h2>
            {lens ? (
              <div className="lens">
                <LensList title="Promotes" tokens={lens.top ?? []} />
                <LensList title="Suppresses" tokens={lens.bottom ?? []} />
              </div>
            ) : (
              <Empty>No logit lens (the SAE does not write to the residual stream).</Empty>
            )}
          </section>
          <Neighbours saeId={saeId} neighbours={f.neighbours ?? []} />
          {peaks.length > 0 && (
            <section aria-labelledby="peaks-heading">
              <h2 id="peaks-heading">Peaks on</h2>
              <ul className="plain">
                {peaks.map((p) => (
                  <li key={p.token}>
                    <code>{showToken(p.token)}</code> × {p.count} (max {fmt(p.max_activation, 2)})
                  </li>
                ))}
              </ul>
            </section>
          )}
        </div>
      </div>
    </div>
  );
}

/** Stored neighbours by kind and SAE: `lm-saes eval --suite universality --sae-id …` writes them. */
export function neighbourGroups(saeId: string, neighbours: FeatureNeighbour[]) {
  const groups = new Map<string, { kind: FeatureNeighbour["kind"]; sae: string; items: FeatureNeighbour[] }>();
  for (const n of neighbours) {
    const key = `${n.kind} ${n.sae_id}`;
    if (!groups.has(key)) groups.set(key, { kind: n.kind, sae: n.sae_id, items: [] });
    groups.get(key)!.items.push(n);
  }
  // this SAE's decoder neighbours first, then partners in other SAEs
  return [...groups.values()].sort(
    (x, y) => Number(x.kind !== "decoder" || x.sae !== saeId) - Number(y.kind !== "decoder" || y.sae !== saeId),
  );
}

function Neighbours({ saeId, neighbours }: { saeId: string; neighbours: FeatureNeighbour[] }) {
  const groups = neighbourGroups(saeId, neighbours);
  return (
    <section aria-labelledby="neighbours-heading">
      <h2 id="neighbours-heading">Nearest features</h2>
      {groups.length === 0 ? (
        <Empty>
          No stored neighbours (<code>lm-saes eval --suite universality</code> with <code>--sae-id</code> stores them).
        </Empty>
      ) : (
        groups.map((g) => {
          const title =
            g.kind === "decoder"
              ? g.sae === saeId
                ? "Similar decoder directions in this SAE"
                : `Similar decoder directions in ${g.sae}`
              : `Partners in ${g.sae} (activation correlation)`;
          return (
            <div key={`${g.kind} ${g.sae}`}>
              <h3>
                {title}
                {g.sae !== saeId && (
                  <>
                    {" "}
                    <small>
                      <Link to={`/compare?a=${encodeURIComponent(saeId)}&b=${encodeURIComponent(g.sae)}`}>compare</Link>
                    </small>
                  </>
                )}
              </h3>
              <ul className="plain" aria-label={title}>
                {g.items.map((n) => (
                  <li key={n.index}>
                    <Link to={`/saes/${encodeURIComponent(n.sae_id)}/features/${n.index}`}>
                      {n.sae_id === saeId ? `#${n.index}` : `${n.sae_id} #${n.index}`}
                    </Link>{" "}
                    <span className="note">{g.kind === "decoder" ? "cosine" : "correlation"}</span>{" "}
                    {fmt(n.similarity, 3)}
                  </li>
                ))}
              </ul>
            </div>
          );
        })
      )}
    </section>
  );
}

function LensList({ title, tokens }: { title: string; tokens: LensToken[] }) {
  return (
    <div>
      <h3>{title}</h3>
      <table>
        <tbody>
          {tokens.map((t, i) => (
            <tr key={i}>
              <td>
                <code>{showToken(t.token)}</code>
              </td>
              <td className="num">{fmt(t.value, 3)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
