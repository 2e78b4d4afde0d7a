import { useState, type FormEvent } from "react";
import { api, type FeatureChange, type GraphNode, type InterventionResult } from "../api/client";
import { blames, ErrorMessage, FieldError } from "../components/ErrorMessage";
import { Empty } from "../components/Status";
import { pct, showToken } from "../format";
import { describeNode } from "./describe";
import { compareLogits } from "./interventions";

type Mode = FeatureChange["mode"];
interface Setting {
  value: string;
  mode: Mode;
}
const DEFAULT: Setting = { value: "0", mode: "scale" };
export const TOP_K = 10;

/** Scale or clamp the pinned features and compare the top logits before and after (compute scope). */
export function InterventionPanel({
  graphId,
  features,
  tokens,
}: {
  graphId: string;
  /** The pinned feature nodes. */
  features: GraphNode[];
  tokens: string[];
}) {
  const [settings, setSettings] = useState<Record<string, Setting>>({});
  const [result, setResult] = useState<InterventionResult | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [freeze, setFreeze] = useState(false);
  const setting = (id: string) => settings[id] ?? DEFAULT;
  const change = (id: string, next: Partial<Setting>) =>
    setSettings((prev) => ({ ...prev, [id]: { ...(prev[id] ?? DEFAULT), ...next } }));

  const invalid = features.filter((n) => !Number.isFinite(Number(setting(n.id).value)) || setting(n.id).value.trim() === "");
  const run = async (e: FormEvent) => {
    e.preventDefault();
    if (!features.length || invalid.length) return;
    setBusy(true);
    setError(null);
    const changes: FeatureChange[] = features.map((n) => ({
      layer: n.layer,
      position: n.position,
      feature: n.feature ?? 0,
      value: Number(setting(n.id).value),
      mode: setting(n.id).mode,
    }));
    try {
      setResult(await api.intervene(graphId, { changes, top_k: TOP_K, freeze_active_set: freeze }));
    } catch (err) {
      setResult(null);
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  const rows = result ? compareLogits(result.before, result.after) : [];
  return (
    <section className="intervention card" aria-labelledby="intervention-heading">
      <h2 id="intervention-heading">Intervene</h2>
      {features.length === 0 ? (
        <Empty>Pin feature nodes (click them in the graph, or “Pin” in the node list) to scale or clamp them.</Empty>
      ) : (
        <form onSubmit={run}>
          <p className="note">
            Scale multiplies the feature's activation (0 ablates it); clamp sets it to the value. Needs an API token
            with the “compute” scope (set it in the header).
          </p>
          <table className="intervention-table">
            <thead>
              <tr>
                <th scope="col">Feature</th>
                <th scope="col">Value</th>
                <th scope="col">Mode</th>
              </tr>
            </thead>
            <tbody>
              {features.map((n) => {
                const s = setting(n.id);
                const label = describeNode(n, tokens);
                return (
                  <tr key={n.id}>
                    <td>
                      L{n.layer} #{n.feature} <small className="note">@{n.position} {showToken(tokens[n.position] ?? "")}</small>
                    </td>
                    <td>
                      <input
                        type="number"
                        step="any"
                        className="value-input"
                        aria-label={`Value for ${label}`}
                        value={s.value}
                        aria-invalid={invalid.includes(n) || undefined}
                        onChange={(e) => change(n.id, { value: e.target.value })}
                      />
                    </td>
                    <td>
                      <select
                        aria-label={`Mode for ${label}`}
                        value={s.mode}
                        onChange={(e) => change(n.id, { mode: e.target.value as Mode })}
                      >
                        <option value="scale">scale</option>
                        <option value="clamp">clamp</option>
                      </select>
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
          <label className="checkbox">
            <input type="checkbox" checked={freeze} onChange={(e) => setFreeze(e.target.checked)} /> Keep each
            transcoder's active features (the graph's linear model; otherwise TopK transcoders reselect, which can
            flip features on or off)
          </label>
          <FieldError error={error} field="changes" id="intervention-changes-error" />
          {!blames(error, "changes") && <ErrorMessage error={error} />}
          <p>
            <button type="submit" disabled={busy || invalid.length > 0}>
              {busy ? "Running…" : "Run"}
            </button>
          </p>
        </form>
      )}
      {result && (
        <table className="logit-diff" aria-label="Top logits before and after">
          <thead>
            <tr>
              <th scope="col">Token</th>
              <th scope="col" className="num">
                Before
              </th>
              <th scope="col" className="num">
                After
              </th>
              <th scope="col" className="num">
                Δ
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.map((r) => (
              <tr key={r.tokenId}>
                <td>
                  <code>{showToken(r.token)}</code>
                </td>
                <td className="num">{r.before === null ? "—" : pct(r.before)}</td>
                <td className="num">{r.after === null ? "—" : pct(r.after)}</td>
                <td className={`num ${r.delta === null ? "" : r.delta >= 0 ? "up" : "down"}`}>
                  {r.delta === null ? "—" : `${r.delta >= 0 ? "+" : "−"}${Math.abs(r.delta * 100).toFixed(2)} pp`}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {result && <p className="note">“—”: not among the top {TOP_K} on that side.</p>}
    </section>
  );
}
