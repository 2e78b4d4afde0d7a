import { fmt } from "../format";
import { TokenShading } from "./TokenShading";

/** An analysis example: a context with the feature's activation at every token. */
export interface Example {
  max_activation: number;
  context?: number;
  tokens?: string[];
  token_ids?: number[];
  activations: number[];
}

/** Contexts shaded by activation (against `max`), with their peak value; optionally the peak outlined. */
export function ExampleList({
  examples,
  max,
  highlightPeak = false,
  label = "Context",
}: {
  examples: Example[];
  max?: number | null;
  highlightPeak?: boolean;
  label?: string;
}) {
  return (
    <ol className="examples">
      {examples.map((e, i) => (
        <li key={i}>
          <span className="example-value">{fmt(e.max_activation, 2)}</span>
          <TokenShading
            tokens={e.tokens ?? (e.token_ids ?? []).map(String)}
            values={e.activations}
            max={max ?? undefined}
            highlight={highlightPeak ? e.activations.indexOf(Math.max(...e.activations)) : undefined}
            label={highlightPeak ? `${label} ${i + 1}` : undefined}
          />
        </li>
      ))}
    </ol>
  );
}
