import { api, type EvalDensity, type FeatureSummary } from "../api/client";
import { useApi } from "../api/useApi";
import { HistogramChart, type Bin } from "./Charts";
import { ErrorMessage } from "./ErrorMessage";
import { Empty, Loading } from "./Status";

const PAGE = 200;
export const MAX_FEATURES = 16384;

/** log10(density) bins, with dead features (density 0) in their own bin. */
export function densityBins(features: Pick<FeatureSummary, "density">[], width = 0.5): Bin[] {
  const live = features.map((f) => f.density).filter((d) => d > 0);
  const dead = features.length - live.length;
  const bins: Bin[] = [{ label: "dead", count: dead }];
  if (!live.length) return bins;
  const logs = live.map((d) => Math.log10(d));
  const lo = Math.floor(Math.min(...logs) / width) * width;
  const hi = Math.max(...logs);
  const n = Math.max(1, Math.ceil((hi - lo) / width + 1e-9));
  const counts = new Array<number>(n).fill(0);
  for (const l of logs) counts[Math.min(n - 1, Math.floor((l - lo) / width))] += 1;
  counts.forEach((count, i) => bins.push({ label: `1e${(lo + i * width).toFixed(1)}`, count }));
  return bins;
}

/** The evaluation's own histogram (log10 edges, dead latents apart) as labeled bins. */
export function evalDensityBins(histogram: EvalDensity): Bin[] {
  const bins: Bin[] = [{ label: "dead", count: histogram.dead }];
  histogram.counts.forEach((count, i) =>
    bins.push({ label: `1e${(histogram.log10_edges[i] ?? Number.NaN).toFixed(1)}`, count }),
  );
  return bins;
}

/** Feature densities: over the analyzed text (fetched page by page), or, given the evaluation's
 * `histogram`, over its held-out tokens. */
export function DensityHistogram({
  saeId,
  dSae,
  histogram,
}: {
  saeId: string;
  dSae?: number | null;
  histogram?: EvalDensity | null;
}) {
  if (histogram) {
    const live = histogram.counts.reduce((sum, c) => sum + c, 0);
    return (
      <div>
        <HistogramChart
          bins={evalDensityBins(histogram)}
          title="Feature density on held-out tokens (log10 bins)"
          xLabel="density"
        />
        <p className="note">
          {live + histogram.dead} latents, {histogram.dead} never fired on the evaluation's tokens.
        </p>
      </div>
    );
  }
  return <AnalyzedDensity saeId={saeId} dSae={dSae} />;
}

/** Fetches feature summaries page by page (up to MAX_FEATURES) and bins their densities. */
function AnalyzedDensity({ saeId, dSae }: { saeId: string; dSae?: number | null }) {
  const { data, error, loading, reload } = useApi(
    async (signal) => {
      const first = await api.features(saeId, { sort: "index", limit: PAGE, offset: 0 }, signal);
      const total = Math.min(first.total, MAX_FEATURES);
      const offsets: number[] = [];
      for (let o = PAGE; o < total; o += PAGE) offsets.push(o);
      const items = [...first.items];
      for (let i = 0; i < offsets.length; i += 4) {
        const pages = await Promise.all(
          offsets.slice(i, i + 4).map((offset) => api.features(saeId, { sort: "index", limit: PAGE, offset }, signal)),
        );
        pages.forEach((p) => items.push(...p.items));
      }
      return { items, total: first.total };
    },
    [saeId],
  );
  if (loading) return <Loading what="Loading feature densities" />;
  if (error) return <ErrorMessage error={error} onRetry={reload} />;
  if (!data || data.items.length === 0) return <Empty>No analyzed features yet.</Empty>;
  return (
    <div>
      <HistogramChart bins={densityBins(data.items)} title="Feature density (log10 bins)" xLabel="density" />
      <p className="note">
        {data.items.length} of {data.total} analyzed features
        {dSae ? ` (d_sae ${dSae})` : ""}
        {data.total > data.items.length ? `; the first ${data.items.length} are shown` : ""}.
      </p>
    </div>
  );
}
