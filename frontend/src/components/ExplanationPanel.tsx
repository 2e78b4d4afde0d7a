import type { Explanation, ExplanationScore } from "../api/client";
import { fmt } from "../format";
import { Empty } from "./Status";

export const SCORERS: { key: string; label: string; what: string }[] = [
  { key: "detection", label: "Detection", what: "balanced accuracy: does a context hold the feature?" },
  { key: "fuzzing", label: "Fuzzing", what: "balanced accuracy: are the marked tokens the feature's?" },
  { key: "embedding", label: "Embedding", what: "AUROC: activating vs silent contexts by similarity" },
];

/** A feature's explanation (autointerp) and how well it predicts where the feature fires. */
export function ExplanationPanel({ explanation, score }: { explanation?: Explanation | null; score?: number | null }) {
  if (!explanation)
    return (
      <section aria-labelledby="explanation-heading" className="explanation">
        <h2 id="explanation-heading">Explanation</h2>
        <Empty>Not explained yet: run autointerp on this SAE.</Empty>
      </section>
    );
  const scores = (explanation.scores ?? {}) as Record<string, ExplanationScore | undefined>;
  const created = explanation.created ? new Date(explanation.created) : null;
  return (
    <section aria-labelledby="explanation-heading" className="explanation">
      <h2 id="explanation-heading">
        Explanation{" "}
        {typeof score === "number" && <small aria-label="Summary score">score {fmt(score, 2)}</small>}
      </h2>
      <blockquote className="explanation-text">{explanation.text}</blockquote>
      <p className="note">
        Explained by <strong>{explanation.model}</strong> · prompt {explanation.prompt_version}
        {created && !Number.isNaN(created.getTime()) ? ` · ${created.toISOString().slice(0, 16).replace("T", " ")}` : ""}
      </p>
      <table aria-label="Explanation scores">
        <thead>
          <tr>
            <th scope="col">Scorer</th>
            <th scope="col">Score</th>
            <th scope="col">Examples</th>
            <th scope="col">Positives</th>
            <th scope="col">Unreadable</th>
            <th scope="col">Scored by</th>
          </tr>
        </thead>
        <tbody>
          {SCORERS.map(({ key, label, what }) => {
            const s = scores[key];
            return (
              <tr key={key}>
                <th scope="row" title={what}>
                  {label}
                </th>
                {s ? (
                  <>
                    <td className="num">{fmt(s.value, 3)}</td>
                    <td className="num">{s.examples}</td>
                    <td className="num">{s.positives ?? 0}</td>
                    <td className="num">{s.failed ?? 0}</td>
                    <td>{s.model || (key === "embedding" ? "all-MiniLM-L6-v2" : "—")}</td>
                  </>
                ) : (
                  <td colSpan={5} className="empty">
                    not scored
                  </td>
                )}
              </tr>
            );
          })}
        </tbody>
      </table>
      <p className="note">The summary score is the mean of the detection and fuzzing scores (0.5 is chance).</p>
    </section>
  );
}
