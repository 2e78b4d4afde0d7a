import { useEffect, useRef, useState, type FormEvent } from "react";
import { api, type AttentionExplanation, type AttentionRequest, type NodeContribution } from "../api/client";
import { blames, ErrorMessage, FieldError } from "../components/ErrorMessage";
import { fmt } from "../format";
import { quoted } from "./describe";
import {
  ATTENTION_FIELDS,
  ATTENTION_TOP_K_MAX,
  decodeNodeId,
  describeAttention,
  largest,
  signed,
  unlisted,
  validateAttention,
  type AttentionDraft,
  type AttentionField,
} from "./attention";

const LABELS: Record<AttentionField, string> = {
  layer: "Layer",
  head: "Head",
  query_position: "Query position",
  key_position: "Key position",
  top_k: "Nodes listed",
};

/** Why a head attended from a query position to a key position: its pre-softmax score split into
 * the graph's nodes through the query and through the key (compute scope). */
export function AttentionPanel({
  graphId,
  tokens,
  nLayers,
  initial,
  inGraph,
  selected = null,
  onSelectNode,
  onClose,
}: {
  graphId: string;
  tokens: string[];
  nLayers: number;
  /** The form's starting values (from a clicked link, or defaults). */
  initial: AttentionDraft;
  /** Whether a node id is one of the graph's nodes (then its row selects it). */
  inGraph: (id: string) => boolean;
  /** The graph's inspected node, marked in the tables. */
  selected?: string | null;
  onSelectNode: (id: string) => void;
  onClose: () => void;
}) {
  const [draft, setDraft] = useState(initial);
  const [result, setResult] = useState<{ request: AttentionRequest; explanation: AttentionExplanation } | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const ref = useRef<HTMLElement>(null);
  useEffect(() => ref.current?.scrollIntoView?.({ block: "nearest" }), []);

  const { request, errors } = validateAttention(draft, { nLayers, nPositions: tokens.length });
  const run = async (e: FormEvent) => {
    e.preventDefault();
    if (!request) return;
    setBusy(true);
    setError(null);
    try {
      setResult({ request, explanation: await api.explainAttention(graphId, request) });
    } catch (err) {
      setResult(null);
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  const position = (field: AttentionField) => {
    if ((field !== "query_position" && field !== "key_position") || errors[field]) return null;
    return <small className="note">{quoted(tokens[Number(draft[field])])}</small>;
  };
  const blamed = ATTENTION_FIELDS.some((f) => blames(error, f));
  return (
    <section className="attention card" aria-labelledby="attention-heading" data-testid="attention-panel" ref={ref}>
      <div className="card-head">
        <h2 id="attention-heading">Explain attention</h2>
        <button type="button" onClick={onClose} aria-label="Close the attention panel">
          ×
        </button>
      </div>
      <form onSubmit={run}>
        <p className="note">
          Splits one head's pre-softmax attention score, from the query position to the key position, into the graph's
          nodes through the query and through the key. Needs an API token with the “compute” scope.
        </p>
        <div className="attention-fields">
          {ATTENTION_FIELDS.map((field) => {
            const id = `attention-${field}`;
            const problem = errors[field];
            const invalid = Boolean(problem) || blames(error, field);
            return (
              <div key={field} className="stack">
                <label htmlFor={id}>
                  {LABELS[field]} {position(field)}
                </label>
                <input
                  id={id}
                  type="number"
                  step={1}
                  min={field === "top_k" ? 1 : 0}
                  max={
                    field === "layer"
                      ? nLayers - 1
                      : field === "top_k"
                        ? ATTENTION_TOP_K_MAX
                        : field === "head"
                          ? undefined
                          : tokens.length - 1
                  }
                  value={draft[field]}
                  aria-invalid={invalid || undefined}
                  aria-describedby={invalid ? `${id}-error` : undefined}
                  onChange={(e) => setDraft((d) => ({ ...d, [field]: e.target.value }))}
                />
                {problem ? (
                  <span id={`${id}-error`} className="field-error">
                    {problem}
                  </span>
                ) : (
                  <FieldError error={error} field={field} id={`${id}-error`} />
                )}
              </div>
            );
          })}
        </div>
        {!blamed && <ErrorMessage error={error} />}
        <p>
          <button type="submit" disabled={busy || !request}>
            {busy ? "Explaining…" : "Explain attention"}
          </button>
        </p>
      </form>
      {result && (
        <AttentionResult
          {...result}
          tokens={tokens}
          inGraph={inGraph}
          selected={selected}
          onSelectNode={onSelectNode}
        />
      )}
    </section>
  );
}

function AttentionResult({
  request,
  explanation: x,
  tokens,
  inGraph,
  selected,
  onSelectNode,
}: {
  request: AttentionRequest;
  explanation: AttentionExplanation;
  tokens: string[];
  inGraph: (id: string) => boolean;
  selected: string | null;
  onSelectNode: (id: string) => void;
}) {
  const scale = largest(x.query_side, x.key_side);
  const pairScale = largest(x.pairs);
  const node = (id: string) => {
    const { label } = decodeNodeId(id, tokens);
    return inGraph(id) ? (
      <button type="button" className="link" title={`${id}: select it in the graph`} onClick={() => onSelectNode(id)}>
        {label}
      </button>
    ) : (
      <span title={`${id}: not in the pruned graph`}>
        {label} <small className="note">(not in graph)</small>
      </span>
    );
  };
  // nodes that cannot reach the head (later layers, later positions) come back with exactly 0
  const side = (name: string, listed: NodeContribution[], bias: number) => {
    const rows = listed.filter((c) => c.contribution !== 0);
    return (
      <table className="attention-table" aria-label={name}>
        <thead>
          <tr>
            <th scope="col">Node</th>
            <th scope="col" className="num">
              Contribution
            </th>
          </tr>
        </thead>
        <tbody>
          {rows.map((c) => (
            <tr key={c.node_id} className={c.node_id === selected ? "current" : undefined} data-testid="attention-node">
              <td>{node(c.node_id)}</td>
              <Contribution value={c.contribution} scale={scale} />
            </tr>
          ))}
          {rows.length === 0 && (
            <tr>
              <td colSpan={2} className="empty">
                No node contributes on this side.
              </td>
            </tr>
          )}
        </tbody>
        <tfoot>
          <tr>
            <td>Other nodes</td>
            <td className="num">{signed(unlisted(x.score, bias, rows))}</td>
          </tr>
          <tr>
            <td>Bias (no node)</td>
            <td className="num">{signed(bias)}</td>
          </tr>
        </tfoot>
      </table>
    );
  };
  const pairs = x.pairs.filter((p) => p.contribution !== 0);
  return (
    <div className="attention-result" aria-live="polite">
      <h3>{describeAttention(request, tokens)}</h3>
      <dl className="metrics compact">
        <div>
          <dt>Score (pre-softmax)</dt>
          <dd data-testid="attention-score">{fmt(x.score)}</dd>
        </div>
      </dl>
      <p className="note">
        Each side's nodes, other nodes and bias add up to the score. Blue raises it, red lowers it. Nodes that contribute
        nothing (later layers, later positions) are left out.
      </p>
      <h3>Through the query</h3>
      {side("Query-side nodes", x.query_side, x.query_bias)}
      <h3>Through the key</h3>
      {side("Key-side nodes", x.key_side, x.key_bias)}
      <h3>Top pairs (query node × key node)</h3>
      <table className="attention-table" aria-label="Top node pairs">
        <thead>
          <tr>
            <th scope="col">Query node</th>
            <th scope="col">Key node</th>
            <th scope="col" className="num">
              Contribution
            </th>
          </tr>
        </thead>
        <tbody>
          {pairs.map((p) => (
            <tr key={`${p.query_node_id}|${p.key_node_id}`} data-testid="attention-pair">
              <td>{node(p.query_node_id)}</td>
              <td>{node(p.key_node_id)}</td>
              <Contribution value={p.contribution} scale={pairScale} />
            </tr>
          ))}
          {pairs.length === 0 && (
            <tr>
              <td colSpan={3} className="empty">
                No pair contributes.
              </td>
            </tr>
          )}
        </tbody>
      </table>
    </div>
  );
}

function Contribution({ value, scale }: { value: number; scale: number }) {
  const share = scale > 0 ? Math.min(1, Math.abs(value) / scale) : 0;
  return (
    <td className="num contribution">
      <span className={`bar ${value >= 0 ? "bar-pos" : "bar-neg"}`} style={{ width: `${(share * 100).toFixed(1)}%` }} />
      <span className="bar-value">{signed(value)}</span>
    </td>
  );
}
