import { useState, type FormEvent } from "react";
import { Link } from "react-router";
import {
  DEFAULT_PROMPT,
  DEFAULT_SETTINGS,
  LIMITS,
  MODES,
  normalizeFeature,
  parseNumber,
  steerQuery,
  steerRequest,
  type SteerFeature,
  type SteerMode,
  type SteerPositions,
  type SteerSettings,
} from "../api/steer";
import { fmt } from "../format";
import { SteerOutput, useSteer } from "./SteerOutput";

export const POSITION_LABELS: Record<SteerPositions, string> = {
  both: "prompt and generated",
  prompt: "prompt only",
  generated: "generated only",
};

export const MODE_HELP: Record<SteerMode, string> = {
  add: "adds strength × the feature's direction",
  clamp: "sets the activation to the strength",
  ablate: "sets the activation to 0",
  scale: "multiplies the activation by the factor",
};

/** Steer generation with this one feature: the default and the steered continuation side by side. */
export function SteerPanel({ saeId, feature, maxActivation }: { saeId: string; feature: number; maxActivation?: number | null }) {
  const [prompt, setPrompt] = useState(DEFAULT_PROMPT);
  const [mode, setMode] = useState<SteerMode>("add");
  const [strength, setStrength] = useState(4);
  const [positions, setPositions] = useState<SteerPositions>("both");
  const [maxTokens, setMaxTokens] = useState(String(DEFAULT_SETTINGS.max_new_tokens));
  const [temperature, setTemperature] = useState(String(DEFAULT_SETTINGS.temperature));
  const { state, run, stop, busy } = useSteer();

  const relative = mode === "add" || mode === "clamp";
  const max = parseNumber(maxTokens);
  const temp = parseNumber(temperature);
  const maxOk = max !== undefined && Number.isInteger(max) && max >= 1 && max <= LIMITS.maxTokens;
  const tempOk = temp !== undefined && temp >= 0 && temp <= LIMITS.temperature;
  const steered: SteerFeature = normalizeFeature({
    sae_id: saeId,
    feature,
    mode,
    strength,
    relative,
    positions,
    from_token: 1,
  });
  const settings: SteerSettings = {
    ...DEFAULT_SETTINGS,
    prompt,
    features: [steered],
    max_new_tokens: maxOk ? max : DEFAULT_SETTINGS.max_new_tokens,
    temperature: tempOk ? temp : DEFAULT_SETTINGS.temperature,
  };
  const ready = prompt.length > 0 && maxOk && tempOk;

  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (!ready || busy) return;
    void run(steerRequest(settings));
  };

  const id = `steer-${feature}`;
  const absolute = relative && typeof maxActivation === "number" && maxActivation > 0 ? strength * maxActivation : null;
  return (
    <section className="card steer-panel" aria-labelledby={`${id}-heading`}>
      <h2 id={`${id}-heading`}>Steer</h2>
      <form onSubmit={submit} className="steer-form">
        <label htmlFor={`${id}-prompt`}>Prompt</label>
        <textarea
          id={`${id}-prompt`}
          rows={2}
          maxLength={LIMITS.prompt}
          value={prompt}
          onChange={(e) => setPrompt(e.target.value)}
          required
        />
        <div className="inline-form">
          <label htmlFor={`${id}-mode`}>Mode</label>
          <select id={`${id}-mode`} value={mode} onChange={(e) => setMode(e.target.value as SteerMode)} title={MODE_HELP[mode]}>
            {MODES.map((m) => (
              <option key={m} value={m}>
                {m}
              </option>
            ))}
          </select>
          <label htmlFor={`${id}-strength`}>
            {mode === "scale" ? "Factor" : relative ? "Strength (× max activation)" : "Strength"}
          </label>
          <input
            id={`${id}-strength`}
            type="range"
            min={-10}
            max={10}
            step={0.5}
            value={mode === "ablate" ? 0 : strength}
            disabled={mode === "ablate"}
            onChange={(e) => setStrength(Number(e.target.value))}
          />
          <output htmlFor={`${id}-strength`} className="steer-strength">
            {mode === "ablate"
              ? "0 (ablated)"
              : mode === "scale"
                ? `× ${strength}`
                : `${strength}${absolute !== null ? ` = ${fmt(absolute, 2)}` : ""}`}
          </output>
        </div>
        <div className="inline-form">
          <label htmlFor={`${id}-positions`}>Positions</label>
          <select id={`${id}-positions`} value={positions} onChange={(e) => setPositions(e.target.value as SteerPositions)}>
            {(Object.keys(POSITION_LABELS) as SteerPositions[]).map((p) => (
              <option key={p} value={p}>
                {POSITION_LABELS[p]}
              </option>
            ))}
          </select>
          <label htmlFor={`${id}-max`}>Max tokens</label>
          <input
            id={`${id}-max`}
            type="number"
            className="narrow"
            min={1}
            max={LIMITS.maxTokens}
            value={maxTokens}
            aria-invalid={!maxOk || undefined}
            onChange={(e) => setMaxTokens(e.target.value)}
          />
          <label htmlFor={`${id}-temperature`}>Temperature</label>
          <input
            id={`${id}-temperature`}
            type="number"
            className="narrow"
            min={0}
            max={LIMITS.temperature}
            step={0.1}
            value={temperature}
            aria-invalid={!tempOk || undefined}
            onChange={(e) => setTemperature(e.target.value)}
          />
        </div>
        <div className="inline-form">
          <button type="submit" disabled={!ready || busy}>
            {busy ? "Steering…" : "Steer"}
          </button>
          <button type="button" onClick={stop} disabled={!busy}>
            Stop
          </button>
          <Link to={`/steer?${steerQuery(settings)}`}>Open in steer page</Link>
        </div>
        <p className="note">
          {mode}: {MODE_HELP[mode]}. Needs an API token with the “compute” scope (set it in the header).
        </p>
      </form>
      <SteerOutput state={state} idPrefix={id} />
    </section>
  );
}
