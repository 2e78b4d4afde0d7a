import { Link } from "react-router";
import { api, ApiError, type Feature, type GraphNode } from "../api/client";
import { useApi } from "../api/useApi";
import { ErrorMessage } from "../components/ErrorMessage";
import { ExampleList, type Example } from "../components/Examples";
import { Loading } from "../components/Status";
import { fmt, pct } from "../format";
import { describeNode, quoted } from "./describe";

const EXAMPLES_SHOWN = 5;
const cache = new Map<string, Promise<Feature>>();

/** GET /saes/{sae}/features/{index}, shared between hovers; failures other than 404 are retried next time. */
export function loadFeature(saeId: string, index: number): Promise<Feature> {
  const key = `${saeId}/${index}`;
  let promise = cache.get(key);
  if (!promise) {
    promise = api.feature(saeId, index);
    cache.set(key, promise);
    promise.catch((error: unknown) => {
      if (!(error instanceof ApiError && error.status === 404)) cache.delete(key);
    });
    if (cache.size > 500) cache.delete(cache.keys().next().value!);
  }
  return promise;
}

/** A node's layer, position, activation, influence; for features, the SAE analysis' top contexts. */
export function NodeDetails({
  node,
  tokens,
  saes,
  pinned,
  onTogglePin,
  hovered = false,
}: {
  node: GraphNode;
  tokens: string[];
  saes: Record<string, string>;
  pinned: boolean;
  onTogglePin: (id: string) => void;
  hovered?: boolean;
}) {
  const saeId = node.kind === "feature" ? saes[String(node.layer)] : undefined;
  return (
    <section className="node-details card" aria-labelledby="node-details-heading">
      <h2 id="node-details-heading">
        {describeNode(node, tokens)} {hovered && <small>(hover)</small>}
      </h2>
      <dl className="metrics compact">
        <div>
          <dt>Kind</dt>
          <dd>{node.kind}</dd>
        </div>
        {node.kind !== "token" && node.kind !== "logit" && (
          <div>
            <dt>Layer</dt>
            <dd>{node.layer}</dd>
          </div>
        )}
        {node.kind === "feature" && (
          <div>
            <dt>Feature</dt>
            <dd>{node.feature ?? "—"}</dd>
          </div>
        )}
        <div>
          <dt>Position</dt>
          <dd>
            {node.position} {quoted(tokens[node.position])}
          </dd>
        </div>
        {node.activation != null && (
          <div>
            <dt>Activation</dt>
            <dd>{fmt(node.activation)}</dd>
          </div>
        )}
        {node.kind === "logit" ? (
          <div>
            <dt>Probability</dt>
            <dd>{pct(node.probability ?? undefined)}</dd>
          </div>
        ) : (
          <div>
            <dt>Influence</dt>
            <dd>{fmt(node.influence, 4)}</dd>
          </div>
        )}
        {(node.kind === "feature" || node.kind === "error") && (
          <div>
            <dt>Cumulative</dt>
            <dd>{fmt(node.cumulative)}</dd>
          </div>
        )}
      </dl>
      <button type="button" aria-pressed={pinned} onClick={() => onTogglePin(node.id)}>
        {pinned ? "Unpin" : "Pin"}
      </button>
      {node.kind === "error" && (
        <p className="note">The transcoder's reconstruction error at this layer and position: what the replacement misses.</p>
      )}
      {node.kind === "feature" && node.feature != null && (
        <FeatureExamples saeId={saeId} index={node.feature} activation={node.activation ?? undefined} />
      )}
    </section>
  );
}

function FeatureExamples({ saeId, index, activation }: { saeId?: string; index: number; activation?: number }) {
  const { data, error, loading, reload } = useApi(
    () => (saeId ? loadFeature(saeId, index) : Promise.resolve(null)),
    [saeId, index],
  );
  if (!saeId) return <p className="empty">Not analyzed: no SAE describes this layer's features.</p>;
  const link = (
    <Link to={`/saes/${encodeURIComponent(saeId)}/features/${index}`}>
      feature {index} of {saeId}
    </Link>
  );
  if (loading) return <Loading what="Loading top activations" />;
  if (error instanceof ApiError && error.status === 404)
    return <p className="empty">Not analyzed: {saeId} has no analysis of feature {index}.</p>;
  if (error) return <ErrorMessage error={error} onRetry={reload} />;
  const f = data!;
  const top = ((f.top_examples ?? []) as unknown as Example[]).slice(0, EXAMPLES_SHOWN);
  return (
    <div className="feature-examples">
      <h3>Top activations ({link})</h3>
      <p className="note">
        Density {pct(f.density, 3)} · max activation {fmt(f.max_activation)}
        {activation !== undefined && ` · here ${fmt(activation)}`}
      </p>
      {top.length ? (
        <ExampleList examples={top} max={f.max_activation} highlightPeak label="Top context" />
      ) : (
        <p className="empty">This feature never fired on the analyzed text.</p>
      )}
    </div>
  );
}
