import { fmt, showToken } from "../format";

export interface TokenShadingProps {
  tokens: string[];
  values: number[];
  /** Activation that gets full intensity; defaults to the largest value shown. */
  max?: number;
  /** Position to outline (e.g. the peak). */
  highlight?: number;
  label?: string;
}

/** Opacity of a token's shading: proportional to its activation, clamped to [0, 1]. */
export function intensity(value: number, max: number): number {
  if (!(max > 0) || !(value > 0)) return 0;
  return Math.min(1, value / max);
}

/** Tokens shaded by activation (orange, alpha ∝ value); the value shows on hover (title). */
export function TokenShading({ tokens, values, max, highlight, label }: TokenShadingProps) {
  const top = max ?? Math.max(0, ...values.filter((v) => Number.isFinite(v)));
  return (
    <span className="tokens" aria-label={label}>
      {tokens.map((token, i) => {
        const value = values[i] ?? 0;
        const alpha = intensity(value, top);
        return (
          <span
            key={i}
            className={`token${i === highlight ? " token-peak" : ""}`}
            data-testid="token"
            data-intensity={alpha.toFixed(3)}
            title={`${JSON.stringify(token)}: ${fmt(value, 4)}`}
            style={{ backgroundColor: `rgba(255, 115, 0, ${alpha.toFixed(3)})` }}
          >
            {showToken(token)}
          </span>
        );
      })}
    </span>
  );
}
