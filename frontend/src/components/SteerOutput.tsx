import { useCallback, useEffect, useRef, useState } from "react";
import type { ApiError } from "../api/client";
import { steer, type SteerChange, type SteerRequest, type SteerRun, type SteerToken } from "../api/steer";
import { fmt, pct, showToken } from "../format";
import { ErrorMessage } from "./ErrorMessage";

export type SteerPhase = "idle" | "connecting" | "streaming" | "done" | "stopped" | "error";

export interface RunOutput {
  tokens: SteerToken[];
  finish: string | null;
}

export interface SteerState {
  phase: SteerPhase;
  /** The prompt the shown runs continue. */
  prompt: string;
  changes: SteerChange[];
  runs: Record<SteerRun, RunOutput>;
  /** Whether the default run was asked for (compare). */
  compare: boolean;
  error: unknown;
  /** The stream closed without its `end` event. */
  cut: boolean;
}

const EMPTY_RUN: RunOutput = { tokens: [], finish: null };
const IDLE: SteerState = {
  phase: "idle",
  prompt: "",
  changes: [],
  runs: { steered: EMPTY_RUN, default: EMPTY_RUN },
  compare: true,
  error: null,
  cut: false,
};

/** Run steered generations one at a time: `run` aborts the one streaming, `stop` aborts it too. */
export function useSteer() {
  const [state, setState] = useState<SteerState>(IDLE);
  const controller = useRef<AbortController | null>(null);

  useEffect(() => () => controller.current?.abort(), []);

  const stop = useCallback(() => {
    const current = controller.current;
    if (!current) return;
    current.abort();
    controller.current = null;
    setState((s) => (s.phase === "connecting" || s.phase === "streaming" ? { ...s, phase: "stopped" } : s));
  }, []);

  const run = useCallback(async (body: SteerRequest) => {
    controller.current?.abort();
    const mine = new AbortController();
    controller.current = mine;
    setState({ ...IDLE, phase: "connecting", prompt: body.prompt, compare: body.compare !== false });
    const update = (change: (s: SteerState) => SteerState) => {
      if (!mine.signal.aborted) setState(change);
    };
    let ended = false;
    let failed: ApiError | null = null;
    try {
      await steer(
        body,
        {
          onStart: (start) => update((s) => ({ ...s, phase: "streaming", changes: start?.changes ?? [] })),
          onToken: (token) =>
            update((s) => {
              const run = token.run === "default" ? "default" : "steered";
              const before = s.runs[run];
              const next = { tokens: [...before.tokens, token], finish: token.finish_reason ?? before.finish };
              return { ...s, phase: "streaming", runs: { ...s.runs, [run]: next } };
            }),
          onEnd: () => {
            ended = true;
          },
          onError: (error) => {
            failed = error;
          },
        },
        mine.signal,
      );
      update((s) => ({ ...s, phase: failed ? "error" : "done", error: failed, cut: !ended && !failed }));
    } catch (error) {
      if (mine.signal.aborted || (error as Error)?.name === "AbortError") return;
      update((s) => ({ ...s, phase: "error", error }));
    } finally {
      if (controller.current === mine) controller.current = null;
    }
  }, []);

  return { state, run, stop, busy: state.phase === "connecting" || state.phase === "streaming" };
}

const FINISH: Record<string, string> = {
  length: "reached the token limit",
  stop: "hit a stop string",
  eos: "end of text",
};

/** The status line, the resolved changes and the two runs side by side (Default, Steered). */
export function SteerOutput({ state, idPrefix }: { state: SteerState; idPrefix: string }) {
  if (state.phase === "idle") return null;
  const live = state.phase === "connecting" || state.phase === "streaming";
  return (
    <div className="steer-output">
      <p className="stream-state" role="status" aria-live="polite" aria-label="Steering status">
        {state.phase === "connecting"
          ? "Starting…"
          : state.phase === "streaming"
            ? "Generating…"
            : state.phase === "stopped"
              ? "Stopped."
              : state.phase === "error"
                ? "Failed."
                : state.cut
                  ? "The stream closed early."
                  : "Done."}
      </p>
      <ErrorMessage error={state.error} />
      {state.changes.length > 0 && (
        <ul className="plain steer-changes" aria-label="Applied changes">
          {state.changes.map((c, i) => (
            <li key={i}>
              <code>
                {c.sae} #{c.feature}
              </code>{" "}
              {c.mode}
              {c.mode === "ablate" ? "" : ` ${fmt(c.value)}`} · positions {c.positions}
              {c.from_token > 1 ? ` from token ${c.from_token}` : ""}
            </li>
          ))}
        </ul>
      )}
      <div className={`steer-runs${state.compare ? "" : " single"}`} aria-busy={live}>
        {state.compare && <RunColumn title="Default" id={`${idPrefix}-default`} prompt={state.prompt} run={state.runs.default} />}
        <RunColumn title="Steered" id={`${idPrefix}-steered`} prompt={state.prompt} run={state.runs.steered} />
      </div>
    </div>
  );
}

function RunColumn({ title, id, prompt, run }: { title: string; id: string; prompt: string; run: RunOutput }) {
  return (
    <section className="steer-run" aria-labelledby={id}>
      <h3 id={id}>{title}</h3>
      <p className="steer-text" data-testid={`${title.toLowerCase()}-text`}>
        <span className="steer-prompt">{prompt}</span>
        {run.tokens.map((t) => (
          <span key={t.index} className="steer-token" title={`${showToken(t.token)} · p = ${pct(t.probability)}`}>
            {t.text}
          </span>
        ))}
      </p>
      <p className="note">
        {run.tokens.length} token{run.tokens.length === 1 ? "" : "s"}
        {run.finish ? ` · finished: ${run.finish} (${FINISH[run.finish] ?? run.finish})` : ""}
      </p>
    </section>
  );
}
