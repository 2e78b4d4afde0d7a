// Pinned node ids live in the URL (?pinned=id1,id2) so a pinned subgraph can be shared.
import { useCallback, useMemo, useRef } from "react";
import { useSearchParams } from "react-router";

export const PINNED_PARAM = "pinned";

export function parsePinned(value: string | null): string[] {
  if (!value) return [];
  return [...new Set(value.split(",").map((s) => s.trim()).filter(Boolean))];
}

export function togglePinned(ids: readonly string[], id: string): string[] {
  return ids.includes(id) ? ids.filter((x) => x !== id) : [...ids, id];
}

/**
 * Pinned ids from the URL, and setters that rewrite ?pinned= (replacing the history entry);
 * ids that `isKnown` rejects (not in this graph) are left out of the URL at the next change.
 */
export function usePinned(isKnown: (id: string) => boolean = () => true): {
  pinned: string[];
  setPinned: (ids: string[]) => void;
  toggle: (id: string) => void;
} {
  const [params, setParams] = useSearchParams();
  const raw = params.get(PINNED_PARAM);
  const known = useRef(isKnown);
  known.current = isKnown;
  const pinned = useMemo(() => parsePinned(raw).filter((id) => known.current(id)), [raw]);
  const update = useCallback(
    (change: (ids: string[]) => string[]) =>
      setParams(
        (prev) => {
          const next = new URLSearchParams(prev);
          const ids = change(parsePinned(prev.get(PINNED_PARAM)).filter((id) => known.current(id)));
          if (ids.length) next.set(PINNED_PARAM, ids.join(","));
          else next.delete(PINNED_PARAM);
          return next;
        },
        { replace: true },
      ),
    [setParams],
  );
  const setPinned = useCallback((ids: string[]) => update(() => ids), [update]);
  const toggle = useCallback((id: string) => update((ids) => togglePinned(ids, id)), [update]);
  return { pinned, setPinned, toggle };
}
