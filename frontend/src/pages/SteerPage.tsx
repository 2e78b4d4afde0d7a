import { useEffect, useRef, useState, type FormEvent } from "react";
import { Link, useLocation, useNavigate } from "react-router";
import { api, type Sae } from "../api/client";
import {
  DEFAULT_SETTINGS,
  LIMITS,
  MODES,
  parseNumber,
  parseSteerQuery,
  POSITIONS,
  steerQuery,
  steerRequest,
  validFeature,
  type SteerFeature,
  type SteerMode,
  type SteerPositions,
  type SteerSettings,
} from "../api/steer";
import { useApi } from "../api/useApi";
import { blames, ErrorMessage } from "../components/ErrorMessage";
import { SteerOutput, useSteer } from "../components/SteerOutput";
import { MODE_HELP, POSITION_LABELS } from "../components/SteerPanel";

/** One feature row as typed (numbers as text, so that half-typed values survive). */
interface Row {
  key: number;
  sae_id: string;
  feature: string;
  mode: SteerMode;
  strength: string;
  relative: boolean;
  positions: SteerPositions;
  from_token: string;
}

interface Draft {
  prompt: string;
  rows: Row[];
  max: string;
  temperature: string;
  topP: string;
  seed: string;
  frozen: boolean;
}

let nextKey = 1;
function newRow(sae_id = ""): Row {
  return { key: nextKey++, sae_id, feature: "", mode: "add", strength: "4", relative: true, positions: "both", from_token: "1" };
}

function draftOf(settings: SteerSettings): Draft {
  const rows = settings.features.map((f) => ({
    key: nextKey++,
    sae_id: f.sae_id,
    feature: String(f.feature),
    mode: f.mode,
    strength: String(f.strength),
    relative: f.relative,
    positions: f.positions,
    from_token: String(f.from_token),
  }));
  return {
    prompt: settings.prompt,
    rows: rows.length ? rows : [newRow()],
    max: String(settings.max_new_tokens),
    temperature: String(settings.temperature),
    topP: String(settings.top_p),
    seed: String(settings.seed),
    frozen: settings.frozen_attention,
  };
}

const absolute = (mode: SteerMode) => mode === "ablate" || mode === "scale";

function featureOf(row: Row): SteerFeature | undefined {
  const feature = parseNumber(row.feature);
  const strength = row.mode === "ablate" ? 0 : parseNumber(row.strength);
  const from = parseNumber(row.from_token);
  if (feature === undefined || strength === undefined || from === undefined) return undefined;
  const f: SteerFeature = {
    sae_id: row.sae_id,
    feature,
    mode: row.mode,
    strength,
    relative: absolute(row.mode) ? false : row.relative,
    positions: row.positions,
    from_token: from,
  };
  return validFeature(f) ? f : undefined;
}

function inRange(text: string, min: number, max: number, integer: boolean, open = false): number | undefined {
  const value = parseNumber(text);
  if (value === undefined || (integer && !Number.isInteger(value))) return undefined;
  return (open ? value > min : value >= min) && value <= max ? value : undefined;
}

/** The draft's valid settings (what the URL holds) and what is wrong with it. */
function check(draft: Draft) {
  const features = draft.rows.map(featureOf);
  const max = inRange(draft.max, 1, LIMITS.maxTokens, true);
  const temperature = inRange(draft.temperature, 0, LIMITS.temperature, false);
  const topP = inRange(draft.topP, 0, 1, false, true);
  const seed = inRange(draft.seed, 0, 2 ** 31 - 1, true);
  const settings: SteerSettings = {
    prompt: draft.prompt,
    features: features.filter((f): f is SteerFeature => f !== undefined),
    max_new_tokens: max ?? DEFAULT_SETTINGS.max_new_tokens,
    temperature: temperature ?? DEFAULT_SETTINGS.temperature,
    top_p: topP ?? DEFAULT_SETTINGS.top_p,
    seed: seed ?? DEFAULT_SETTINGS.seed,
    frozen_attention: draft.frozen,
  };
  const bad = {
    max: max === undefined,
    temperature: temperature === undefined,
    topP: topP === undefined,
    seed: seed === undefined,
  };
  const incomplete = features.filter((f) => f === undefined).length;
  const ready = draft.prompt.length > 0 && incomplete === 0 && settings.features.length > 0 && !Object.values(bad).some(Boolean);
  return { settings, features, bad, incomplete, ready };
}

/** Steer generation with several features at once; the settings live in the URL (shareable). */
export function SteerPage() {
  const location = useLocation();
  const navigate = useNavigate();
  const [draft, setDraft] = useState<Draft>(() => draftOf(parseSteerQuery(location.search)));
  const saes = useApi((signal) => api.saes(undefined, signal), []);
  const { state, run, stop, busy } = useSteer();
  const { settings, features, bad, incomplete, ready } = check(draft);
  const query = steerQuery(settings);

  // The URL follows the draft (replacing the history entry); a navigation from elsewhere (a link,
  // back/forward) to other settings replaces the draft. Compared as parsed, since a browser may
  // re-encode the query it was given.
  const written = useRef<string | null>(null);
  useEffect(() => {
    const incoming = steerQuery(parseSteerQuery(location.search));
    if (written.current === null || incoming === written.current) return;
    written.current = incoming;
    setDraft(draftOf(parseSteerQuery(location.search)));
  }, [location.search]);
  useEffect(() => {
    written.current = query;
    if (location.search.replace(/^\?/, "") !== query) navigate({ search: `?${query}` }, { replace: true });
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [query]);

  // rows without an SAE get the first one listed
  const firstSae = saes.data?.[0]?.id;
  useEffect(() => {
    if (!firstSae) return;
    setDraft((d) =>
      d.rows.some((r) => !r.sae_id) ? { ...d, rows: d.rows.map((r) => (r.sae_id ? r : { ...r, sae_id: firstSae })) } : d,
    );
  }, [firstSae, draft.rows.length]);

  const set = (change: Partial<Draft>) => setDraft((d) => ({ ...d, ...change }));
  const setRow = (key: number, change: Partial<Row>) =>
    setDraft((d) => ({ ...d, rows: d.rows.map((r) => (r.key === key ? { ...r, ...change } : r)) }));
  const addRow = () =>
    setDraft((d) => (d.rows.length >= LIMITS.features ? d : { ...d, rows: [...d.rows, newRow(d.rows[d.rows.length - 1]?.sae_id ?? firstSae ?? "")] }));
  const removeRow = (key: number) =>
    setDraft((d) => ({ ...d, rows: d.rows.length > 1 ? d.rows.filter((r) => r.key !== key) : [newRow(firstSae ?? "")] }));

  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (!ready || busy) return;
    void run(steerRequest(settings));
  };

  const [copied, setCopied] = useState(false);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(window.location.href);
      setCopied(true);
    } catch {
      setCopied(false);
    }
  };

  return (
    <div>
      <h1>Steer generation</h1>
      <p className="note">
        Change several SAE features while the model continues a prompt, and compare with the default continuation.
        Strengths marked relative are in units of the feature's max activation. The address of this page holds the
        settings: share it to share them. Needs an API token with the “compute” scope.
      </p>
      <form onSubmit={submit} className="card steer-form">
        <h2>Features</h2>
        <ErrorMessage error={saes.error} onRetry={saes.reload} />
        <div className="table-scroll">
          <table className="steer-rows">
            <thead>
              <tr>
                <th scope="col">#</th>
                <th scope="col">SAE</th>
                <th scope="col">Feature</th>
                <th scope="col">Mode</th>
                <th scope="col">Strength</th>
                <th scope="col">Relative</th>
                <th scope="col">Positions</th>
                <th scope="col">From token</th>
                <th scope="col">
                  <span className="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {draft.rows.map((row, i) => (
                <FeatureRow
                  key={row.key}
                  row={row}
                  number={i + 1}
                  saes={saes.data ?? []}
                  valid={features[i] !== undefined}
                  blamed={blames(state.error, `features.${i}`)}
                  onChange={(change) => setRow(row.key, change)}
                  onRemove={() => removeRow(row.key)}
                />
              ))}
            </tbody>
          </table>
        </div>
        <p className="inline-form">
          <button type="button" onClick={addRow} disabled={draft.rows.length >= LIMITS.features}>
            Add feature
          </button>
          <span className="note">
            {draft.rows.length} of at most {LIMITS.features}
            {incomplete > 0 ? ` · ${incomplete} incomplete (not in the link; fill in or remove to steer)` : ""}
          </span>
        </p>
        <h2>Generation</h2>
        <div className="stack">
          <label htmlFor="steer-prompt">Prompt</label>
          <textarea
            id="steer-prompt"
            rows={3}
            maxLength={LIMITS.prompt}
            value={draft.prompt}
            onChange={(e) => set({ prompt: e.target.value })}
            aria-invalid={blames(state.error, "prompt") || undefined}
            required
          />
        </div>
        <div className="inline-form">
          <label htmlFor="steer-max">Max tokens</label>
          <input
            id="steer-max"
            type="number"
            className="narrow"
            min={1}
            max={LIMITS.maxTokens}
            value={draft.max}
            aria-invalid={bad.max || blames(state.error, "max_new_tokens") || undefined}
            onChange={(e) => set({ max: e.target.value })}
          />
          <label htmlFor="steer-temperature">Temperature</label>
          <input
            id="steer-temperature"
            type="number"
            className="narrow"
            min={0}
            max={LIMITS.temperature}
            step={0.1}
            value={draft.temperature}
            aria-invalid={bad.temperature || undefined}
            onChange={(e) => set({ temperature: e.target.value })}
          />
          <label htmlFor="steer-top-p">Top p</label>
          <input
            id="steer-top-p"
            type="number"
            className="narrow"
            min={0}
            max={1}
            step={0.05}
            value={draft.topP}
            aria-invalid={bad.topP || undefined}
            onChange={(e) => set({ topP: e.target.value })}
          />
          <label htmlFor="steer-seed">Seed</label>
          <input
            id="steer-seed"
            type="number"
            className="narrow"
            min={0}
            value={draft.seed}
            aria-invalid={bad.seed || undefined}
            onChange={(e) => set({ seed: e.target.value })}
          />
          <label>
            <input type="checkbox" checked={draft.frozen} onChange={(e) => set({ frozen: e.target.checked })} /> Frozen
            attention (the steered run keeps the default run's attention patterns)
          </label>
        </div>
        <div className="inline-form">
          <button type="submit" disabled={!ready || busy}>
            {busy ? "Steering…" : "Steer"}
          </button>
          <button type="button" onClick={stop} disabled={!busy}>
            Stop
          </button>
          <button type="button" onClick={copy}>
            Copy link
          </button>
          <span aria-live="polite" className="note">
            {copied ? "link copied" : ""}
          </span>
        </div>
      </form>
      <SteerOutput state={state} idPrefix="steer-page" />
    </div>
  );
}

function FeatureRow({
  row,
  number,
  saes,
  valid,
  blamed,
  onChange,
  onRemove,
}: {
  row: Row;
  number: number;
  saes: Sae[];
  valid: boolean;
  blamed: boolean;
  onChange: (change: Partial<Row>) => void;
  onRemove: () => void;
}) {
  const label = (what: string) => `${what}, row ${number}`;
  const models = [...new Set(saes.map((s) => s.model))];
  const listed = saes.some((s) => s.id === row.sae_id);
  const index = parseNumber(row.feature);
  const badFeature = index === undefined || !Number.isInteger(index) || index < 0;
  const strength = parseNumber(row.strength);
  const badStrength = row.mode !== "ablate" && (strength === undefined || Math.abs(strength) > LIMITS.strength);
  const from = parseNumber(row.from_token);
  const badFrom = from === undefined || !Number.isInteger(from) || from < 1;
  return (
    <tr className={blamed ? "blamed" : !valid ? "incomplete" : undefined}>
      <td className="num">{number}</td>
      <td>
        <select
          className="sae-select"
          aria-label={label("SAE")}
          value={row.sae_id}
          aria-invalid={!row.sae_id || undefined}
          onChange={(e) => onChange({ sae_id: e.target.value })}
        >
          {!row.sae_id && <option value="">choose an SAE</option>}
          {row.sae_id && !listed && <option value={row.sae_id}>{row.sae_id} (not listed)</option>}
          {models.map((model) => (
            <optgroup key={model} label={model}>
              {saes
                .filter((s) => s.model === model)
                .map((s) => (
                  <option key={s.id} value={s.id}>
                    {s.id}
                  </option>
                ))}
            </optgroup>
          ))}
        </select>
      </td>
      <td>
        <input
          type="number"
          className="narrow"
          min={0}
          aria-label={label("Feature")}
          value={row.feature}
          aria-invalid={badFeature || undefined}
          onChange={(e) => onChange({ feature: e.target.value })}
        />{" "}
        {!badFeature && row.sae_id && (
          <Link to={`/saes/${encodeURIComponent(row.sae_id)}/features/${index}`} aria-label={`Feature ${index} of ${row.sae_id}`}>
            page
          </Link>
        )}
      </td>
      <td>
        <select
          aria-label={label("Mode")}
          value={row.mode}
          title={MODE_HELP[row.mode]}
          onChange={(e) => onChange({ mode: e.target.value as SteerMode })}
        >
          {MODES.map((m) => (
            <option key={m} value={m}>
              {m}
            </option>
          ))}
        </select>
      </td>
      <td>
        <input
          type="number"
          className="strength-input"
          step="any"
          aria-label={label(row.mode === "scale" ? "Factor" : "Strength")}
          value={row.mode === "ablate" ? "0" : row.strength}
          disabled={row.mode === "ablate"}
          aria-invalid={badStrength || undefined}
          onChange={(e) => onChange({ strength: e.target.value })}
        />
      </td>
      <td>
        <input
          type="checkbox"
          aria-label={label("Relative")}
          checked={!absolute(row.mode) && row.relative}
          disabled={absolute(row.mode)}
          onChange={(e) => onChange({ relative: e.target.checked })}
        />
      </td>
      <td>
        <select aria-label={label("Positions")} value={row.positions} onChange={(e) => onChange({ positions: e.target.value as SteerPositions })}>
          {POSITIONS.map((p) => (
            <option key={p} value={p}>
              {POSITION_LABELS[p]}
            </option>
          ))}
        </select>
      </td>
      <td>
        <input
          type="number"
          className="narrow"
          min={1}
          aria-label={label("From token")}
          value={row.from_token}
          aria-invalid={badFrom || undefined}
          onChange={(e) => onChange({ from_token: e.target.value })}
        />
      </td>
      <td>
        <button type="button" onClick={onRemove} aria-label={`Remove row ${number}`}>
          Remove
        </button>
      </td>
    </tr>
  );
}
