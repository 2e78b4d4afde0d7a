// The evaluation suite's figures as the dashboard shows them: the SAE record's metrics (eval.json
// of its training run) overlaid by its stored suite report (lm-saes eval --suite ... --sae-id).
import type { Sae, SaeEvals, Universality } from "./api/client";
import { num } from "./format";

/** The stored suite report of an SAE record (the store validated it as an EvalReport on write). */
export function evalsOf(sae: Pick<Sae, "evals">): SaeEvals | null {
  const evals = sae.evals;
  return evals && typeof evals === "object" ? (evals as SaeEvals) : null;
}

export interface Headline {
  l0?: number;
  explained_variance?: number;
  ce_loss_recovered?: number;
  kl_divergence?: number;
  dead_fraction?: number;
  /** absorption suite: mean (partial) and full absorption rates */
  absorption?: number;
  full_absorption?: number;
  /** probing suite: sparse probes on the best k features, and a dense probe */
  sparse_probe: Record<string, number | undefined>;
  dense_probe?: number;
  /** universality suite: the share of this SAE's live features with a partner in the compared one */
  partner_fraction?: number;
  compared_id?: string | null;
}

export const PROBE_KS = ["1", "2", "5", "20"] as const;

const field = (obj: unknown, key: string): unknown =>
  obj && typeof obj === "object" ? (obj as Record<string, unknown>)[key] : undefined;

/** One row of the comparison table: the suite's core figures where it ran, else the record's. */
export function headline(sae: Pick<Sae, "metrics" | "evals">): Headline {
  const evals = evalsOf(sae);
  const core = evals?.core ?? null;
  const metric = (key: string) => num(field(core, key)) ?? num(field(sae.metrics, key));
  const sparse = field(evals?.probing, "mean_sparse_accuracy");
  return {
    l0: metric("l0"),
    explained_variance: metric("explained_variance"),
    ce_loss_recovered: metric("ce_loss_recovered"),
    kl_divergence: metric("kl_divergence"),
    dead_fraction: metric("dead_fraction"),
    absorption: num(field(evals?.absorption, "mean_absorption_rate")),
    full_absorption: num(field(evals?.absorption, "mean_full_absorption_rate")),
    sparse_probe: Object.fromEntries(PROBE_KS.map((k) => [k, num(field(sparse, k))])),
    dense_probe: num(field(evals?.probing, "mean_dense_accuracy")),
    partner_fraction: evals?.universality ? num(evals.universality.partner_fraction) : undefined,
    compared_id: evals?.universality ? evals.compared_id : undefined,
  };
}

/** One direction of a universality comparison: `from`'s live features against `to`. */
export interface Side {
  from: string;
  to: string;
  features: number;
  alive: number;
  mean_max_correlation: number;
  partner_fraction: number;
}

export interface PairSummary {
  /** The SAE whose report holds the comparison (lm-saes eval --sae it --compare the other). */
  measuredBy: string;
  tokens: number;
  sides: [Side, Side];
  decoder_mean_max_cosine: number;
  decoder_matched_cosine: number;
}

function sides(u: Universality, a: string, b: string): [Side, Side] {
  return [
    {
      from: a,
      to: b,
      features: u.features_a,
      alive: u.alive_a,
      mean_max_correlation: u.mean_max_correlation,
      partner_fraction: u.partner_fraction,
    },
    {
      from: b,
      to: a,
      features: u.features_b,
      alive: u.alive_b,
      mean_max_correlation: u.mean_max_correlation_b,
      partner_fraction: u.partner_fraction_b,
    },
  ];
}

/** The stored universality comparison of SAEs `a` and `b`, seen from `a` (either report may hold it). */
export function pairSummary(a: Pick<Sae, "id" | "evals">, b: Pick<Sae, "id" | "evals">): PairSummary | null {
  for (const [mine, other, flip] of [
    [a, b, false],
    [b, a, true],
  ] as const) {
    const evals = evalsOf(mine);
    const u = evals?.universality;
    if (!u || evals?.compared_id !== other.id) continue;
    const [first, second] = sides(u, mine.id, other.id);
    return {
      measuredBy: mine.id,
      tokens: u.tokens,
      sides: flip ? [second, first] : [first, second],
      decoder_mean_max_cosine: u.decoder_mean_max_cosine,
      decoder_matched_cosine: u.decoder_matched_cosine,
    };
  }
  return null;
}
