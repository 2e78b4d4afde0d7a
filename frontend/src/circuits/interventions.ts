// Before/after rows of an intervention's top logits. Pure.
import type { TokenLogit } from "../api/client";

export interface LogitRow {
  tokenId: number;
  token: string;
  before: number | null;
  after: number | null;
  /** after - before; null when the token is in only one of the two top-k lists. */
  delta: number | null;
}

/** One row per token in either list: the tokens of `before` in its order, then those only in `after`. */
export function compareLogits(before: readonly TokenLogit[], after: readonly TokenLogit[]): LogitRow[] {
  const afterById = new Map(after.map((t) => [t.token_id, t]));
  const beforeIds = new Set(before.map((t) => t.token_id));
  const rows: LogitRow[] = before.map((b) => {
    const a = afterById.get(b.token_id);
    return {
      tokenId: b.token_id,
      token: b.token,
      before: b.probability,
      after: a ? a.probability : null,
      delta: a ? a.probability - b.probability : null,
    };
  });
  for (const a of after) {
    if (!beforeIds.has(a.token_id))
      rows.push({ tokenId: a.token_id, token: a.token, before: null, after: a.probability, delta: null });
  }
  return rows;
}
