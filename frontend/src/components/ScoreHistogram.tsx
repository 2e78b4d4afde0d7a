import { api, type ScoreDistribution } from "../api/client";
import { useApi } from "../api/useApi";
import { fmt } from "../format";
import { HistogramChart, type Bin } from "./Charts";
import { ErrorMessage } from "./ErrorMessage";
import { Empty, Loading } from "./Status";

/** The gateway's score histogram as labeled bins ("0.50–0.55"). */
export function scoreBins(dist: Pick<ScoreDistribution, "edges" | "counts">): Bin[] {
  return dist.counts.map((count, i) => ({
    label: `${fmt(dist.edges[i], 2)}–${fmt(dist.edges[i + 1], 2)}`,
    count,
  }));
}

/** How the SAE's explanations score (autointerp): a histogram of its features' summary scores. */
export function ScoreHistogram({ saeId }: { saeId: string }) {
  const { data, error, loading, reload } = useApi((signal) => api.scores(saeId, signal), [saeId]);
  if (loading) return <Loading what="Loading explanation scores" />;
  if (error) return <ErrorMessage error={error} onRetry={reload} />;
  if (!data || data.scored === 0) return <Empty>No explained features yet (run autointerp on this SAE).</Empty>;
  return (
    <div>
      <HistogramChart bins={scoreBins(data)} title="Explanation scores (features per bin)" xLabel="summary score" />
      <p className="note">
        {data.scored} of {data.total} features explained and scored · mean {fmt(data.mean, 3)} (0.5 is chance).
      </p>
    </div>
  );
}
