import { lazy, Suspense, useCallback, useMemo, useState } from "react";
import { Link, useParams } from "react-router";
import { api, type Graph, type GraphNode } from "../api/client";
import { useApi } from "../api/useApi";
import { defaultDraft, draftFromLink, type AttentionDraft } from "../circuits/attention";
import { AttentionPanel } from "../circuits/AttentionPanel";
import { describeNode } from "../circuits/describe";
import { ExportLink } from "../circuits/ExportLink";
import { InterventionPanel } from "../circuits/InterventionPanel";
import { layoutGraph } from "../circuits/layout";
import { NodeDetails } from "../circuits/NodeDetails";
import { usePinned } from "../circuits/pins";
import { defaultPruning, pinnedSubgraph, PRUNE_MAX, PRUNE_MIN, pruneGraph } from "../circuits/prune";
import { ErrorMessage } from "../components/ErrorMessage";
import { Empty, Loading } from "../components/Status";
import { fmt, pct, showToken } from "../format";

// React Flow ships only with this page.
const GraphView = lazy(() => import("../circuits/GraphView"));

export function CircuitPage() {
  const graphId = useParams().graphId!;
  const { data, error, loading, reload } = useApi((signal) => api.circuit(graphId, signal), [graphId]);
  const crumbs = (
    <nav aria-label="Breadcrumb" className="crumbs">
      <Link to="/circuits">Circuits</Link> › {graphId}
    </nav>
  );
  if (loading)
    return (
      <div>
        {crumbs}
        <Loading what="Loading graph" />
      </div>
    );
  if (error || !data)
    return (
      <div>
        {crumbs}
        <ErrorMessage error={error} onRetry={reload} />
      </div>
    );
  return (
    <div>
      {crumbs}
      <CircuitView key={data.id} graph={data} />
    </div>
  );
}

function byLayerThenPosition(a: GraphNode, b: GraphNode): number {
  return a.layer - b.layer || a.position - b.position || (b.influence ?? 0) - (a.influence ?? 0);
}

export function CircuitView({ graph }: { graph: Graph }) {
  const byId = useMemo(() => new Map(graph.nodes.map((n) => [n.id, n])), [graph]);
  const { pinned: pinnedIds, setPinned, toggle } = usePinned((id) => byId.has(id));
  const [threshold, setThreshold] = useState(() => defaultPruning(graph.thresholds));
  const [pinnedOnly, setPinnedOnly] = useState(false);
  const [hovered, setHovered] = useState<string | null>(null);
  const [inspected, setInspected] = useState<string | null>(null);
  // The attention panel: open with these starting values; `key` renews it for each clicked link.
  const [attention, setAttention] = useState<{ draft: AttentionDraft; key: number } | null>(null);

  const pinnedSet = useMemo(() => new Set(pinnedIds), [pinnedIds]);
  const layout = useMemo(() => layoutGraph(graph.nodes, graph.tokens, graph.n_layers), [graph]);

  // the inspected node stays drawn (e.g. one picked from the attention panel that pruning hides)
  const kept = useMemo(
    () => (inspected && !pinnedSet.has(inspected) ? new Set([...pinnedSet, inspected]) : pinnedSet),
    [pinnedSet, inspected],
  );
  const shown = pinnedOnly
    ? pinnedSubgraph(graph.nodes, graph.links, pinnedSet)
    : pruneGraph(graph.nodes, graph.links, threshold, kept);
  // Same node set, same arrays: pinning a node that is already shown redraws only that node.
  const shownKey = shown.nodes.map((n) => n.id).join(",");
  // eslint-disable-next-line react-hooks/exhaustive-deps
  const visible = useMemo(() => shown, [shownKey, graph]);
  const sortedVisible = useMemo(() => [...visible.nodes].sort(byLayerThenPosition), [visible]);

  const onHover = useCallback((id: string | null) => setHovered(id), []);
  const onInspect = useCallback((id: string | null) => setInspected(id), []);
  const openAttention = useCallback(
    (draft: AttentionDraft) => setAttention((prev) => ({ draft, key: (prev?.key ?? 0) + 1 })),
    [],
  );
  const onLinkClick = useCallback(
    (source: string, target: string) => {
      const [s, t] = [byId.get(source), byId.get(target)];
      const draft = s && t ? draftFromLink(s, t, graph.n_layers) : null;
      if (draft) openAttention(draft);
    },
    [byId, graph.n_layers, openAttention],
  );
  const inGraph = useCallback((id: string) => byId.has(id), [byId]);
  // a hovered node that the slider just hid gets no mouseleave: forget it
  const hoveredShown = hovered && visible.nodes.some((n) => n.id === hovered) ? hovered : null;
  const detailId = hoveredShown ?? inspected;
  const detail = detailId ? byId.get(detailId) : undefined;
  const pinnedFeatures = pinnedIds.map((id) => byId.get(id)!).filter((n) => n.kind === "feature");

  return (
    <div className="circuit-page">
      <h1>
        {graph.prompt} <small>{graph.model}</small>
      </h1>
      <dl className="metrics">
        <div>
          <dt>Replacement score</dt>
          <dd>{fmt(graph.scores.replacement)}</dd>
        </div>
        <div>
          <dt>Completeness score</dt>
          <dd>{fmt(graph.scores.completeness)}</dd>
        </div>
        <div>
          <dt>Nodes shown</dt>
          <dd>
            {visible.nodes.length} / {graph.nodes.length}
          </dd>
        </div>
        <div>
          <dt>Links shown</dt>
          <dd>
            {visible.links.length} / {graph.links.length}
          </dd>
        </div>
        <div>
          <dt>Thresholds (node / edge)</dt>
          <dd>
            {fmt(graph.thresholds.node)} / {fmt(graph.thresholds.edge)}
          </dd>
        </div>
      </dl>
      <div className="top-logits" aria-label="Top output logits">
        <strong>Top logits:</strong>{" "}
        {graph.logits.map((l) => (
          <span key={l.token_id} className="logit-chip">
            <code>{showToken(l.token)}</code> {pct(l.probability)}
          </span>
        ))}
      </div>
      <p className="note">
        <ExportLink graphId={graph.id} />{" "}
        · transcoders <code>{graph.transcoders}</code> · layers {graph.layers?.join(", ") || "—"}
        {graph.seconds != null && ` · traced in ${fmt(graph.seconds, 1)} s`}
      </p>

      <div className="toolbar circuit-toolbar">
        <label htmlFor="prune">Pruning: cumulative influence ≤</label>
        <input
          id="prune"
          type="range"
          min={PRUNE_MIN}
          max={PRUNE_MAX}
          step={0.01}
          value={threshold}
          disabled={pinnedOnly}
          onChange={(e) => setThreshold(Number(e.target.value))}
          aria-valuetext={threshold.toFixed(2)}
        />
        <output htmlFor="prune">{threshold.toFixed(2)}</output>
        <label>
          <input type="checkbox" checked={pinnedOnly} onChange={(e) => setPinnedOnly(e.target.checked)} /> Show pinned
          only
        </label>
        <button type="button" onClick={() => setPinned([])} disabled={pinnedIds.length === 0}>
          Clear pins ({pinnedIds.length})
        </button>
        <span className="note">
          Blue links excite, red inhibit; width ∝ √|weight|. Hover a node for details, click to pin; click a link
          between two positions to explain its attention.
        </span>
      </div>

      <div className="circuit-layout">
        <div className="circuit-main">
          {graph.nodes.length === 0 ? (
            <Empty>This graph has no nodes.</Empty>
          ) : pinnedOnly && pinnedIds.length === 0 ? (
            <Empty>No pinned nodes: click nodes in the graph (or “Pin” in the node list) to pin them.</Empty>
          ) : (
            <Suspense fallback={<Loading what="Loading the graph view" />}>
              <GraphView
                layout={layout}
                tokens={graph.tokens}
                nodes={visible.nodes}
                links={visible.links}
                pinned={pinnedSet}
                inspected={inspected}
                focus={detailId}
                onHover={onHover}
                onInspect={onInspect}
                onTogglePin={toggle}
                onLinkClick={onLinkClick}
                fitKey={pinnedOnly ? "pinned" : "all"}
                fitTo={pinnedOnly ? pinnedIds : undefined}
              />
            </Suspense>
          )}
          <details className="node-list">
            <summary>Node list ({visible.nodes.length} shown): keyboard alternative to the graph</summary>
            <table>
              <thead>
                <tr>
                  <th scope="col">Node</th>
                  <th scope="col" className="num">
                    Influence
                  </th>
                  <th scope="col" className="num">
                    Cumulative
                  </th>
                  <th scope="col">Actions</th>
                </tr>
              </thead>
              <tbody>
                {sortedVisible.map((n) => {
                  const label = describeNode(n, graph.tokens);
                  return (
                    <tr key={n.id} className={n.id === inspected ? "current" : undefined}>
                      <td>{label}</td>
                      <td className="num">{n.kind === "logit" ? "—" : fmt(n.influence, 4)}</td>
                      <td className="num">{n.kind === "feature" || n.kind === "error" ? fmt(n.cumulative) : "—"}</td>
                      <td>
                        <button type="button" onClick={() => setInspected(n.id)} aria-label={`Details of ${label}`}>
                          Details
                        </button>{" "}
                        <button
                          type="button"
                          aria-pressed={pinnedSet.has(n.id)}
                          onClick={() => toggle(n.id)}
                          aria-label={`Pin ${label}`}
                        >
                          {pinnedSet.has(n.id) ? "Unpin" : "Pin"}
                        </button>
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </details>
        </div>
        <aside className="circuit-side" aria-label="Node details, attention and interventions">
          {attention ? (
            <AttentionPanel
              key={attention.key}
              graphId={graph.id}
              tokens={graph.tokens}
              nLayers={graph.n_layers}
              initial={attention.draft}
              inGraph={inGraph}
              selected={inspected}
              onSelectNode={setInspected}
              onClose={() => setAttention(null)}
            />
          ) : (
            <p className="attention-toggle">
              <button
                type="button"
                onClick={() => openAttention(defaultDraft({ nLayers: graph.n_layers, nPositions: graph.tokens.length }))}
              >
                Explain attention…
              </button>{" "}
              <span className="note">or click a link between two positions</span>
            </p>
          )}
          {detail ? (
            <NodeDetails
              node={detail}
              tokens={graph.tokens}
              saes={graph.saes ?? {}}
              pinned={pinnedSet.has(detail.id)}
              onTogglePin={toggle}
              hovered={hoveredShown !== null && hoveredShown !== inspected}
            />
          ) : (
            <p className="empty card">Hover a node to see its details; click it to pin it.</p>
          )}
          <InterventionPanel graphId={graph.id} features={pinnedFeatures} tokens={graph.tokens} />
          {pinnedIds.length > 0 && (
            <section className="card" aria-labelledby="pinned-heading">
              <h2 id="pinned-heading">Pinned ({pinnedIds.length})</h2>
              <ul className="plain pinned-list">
                {pinnedIds.map((id) => {
                  const n = byId.get(id)!;
                  return (
                    <li key={id}>
                      <button type="button" className="link" onClick={() => setInspected(id)}>
                        {describeNode(n, graph.tokens)}
                      </button>{" "}
                      <button type="button" onClick={() => toggle(id)} aria-label={`Unpin ${describeNode(n, graph.tokens)}`}>
                        ×
                      </button>
                    </li>
                  );
                })}
              </ul>
            </section>
          )}
        </aside>
      </div>
    </div>
  );
}
