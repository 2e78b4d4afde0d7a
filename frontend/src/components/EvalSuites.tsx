import { Link } from "react-router";
import type { SaeEvals } from "../api/client";
import { headline, PROBE_KS } from "../evals";
import { fmt, pct } from "../format";
import { DensityHistogram } from "./DensityHistogram";
import { Empty } from "./Status";

const enc = encodeURIComponent;

/** The SAE's stored evaluation suite report: each suite's latest run. */
export function EvalSuites({ saeId, evals }: { saeId: string; evals: SaeEvals | null }) {
  if (!evals)
    return (
      <Empty>
        No evaluation suite report yet. Run{" "}
        <code>lm-saes eval --suite core,universality --sae … --compare … --documents … --sae-id {saeId}</code>.
      </Empty>
    );
  const core = evals.core;
  const u = evals.universality;
  const h = headline({ metrics: {}, evals });
  const probes = PROBE_KS.filter((k) => h.sparse_probe[k] !== undefined);
  const seconds = Object.entries(evals.seconds ?? {});
  return (
    <div>
      {core && (
        <section aria-labelledby="eval-core-heading">
          <h3 id="eval-core-heading">Core ({core.tokens.toLocaleString()} held-out tokens)</h3>
          <dl className="metrics">
            {(
              [
                ["L0", fmt(core.l0, 2)],
                ["Explained variance", fmt(core.explained_variance)],
                ["MSE", fmt(core.mse, 4)],
                ["CE recovered", fmt(core.ce_loss_recovered)],
                ["Δ LM loss", fmt(core.delta_lm_loss, 4)],
                ["KL divergence", fmt(core.kl_divergence, 4)],
                ["Dead fraction", pct(core.dead_fraction)],
                ["Dense fraction", pct(core.dense_fraction)],
              ] as const
            ).map(([label, value]) => (
              <div key={label}>
                <dt>{label}</dt>
                <dd>{value}</dd>
              </div>
            ))}
          </dl>
          {core.density && <DensityHistogram saeId={saeId} histogram={core.density} />}
        </section>
      )}
      {u && (
        <section aria-labelledby="eval-universality-heading">
          <h3 id="eval-universality-heading">
            Universality against{" "}
            {evals.compared_id ? (
              <Link to={`/saes/${enc(evals.compared_id)}`}>{evals.compared_id}</Link>
            ) : (
              <code>{evals.compared_with ?? "another SAE"}</code>
            )}
          </h3>
          <p>
            {pct(u.partner_fraction)} of this SAE&apos;s {u.alive_a} live features have a partner (max activation
            correlation ≥ 0.7), mean max correlation {fmt(u.mean_max_correlation)}; from the other side{" "}
            {pct(u.partner_fraction_b)} of {u.alive_b}, {fmt(u.mean_max_correlation_b)}. Decoders: mean best cosine{" "}
            {fmt(u.decoder_mean_max_cosine)}, matched one to one {fmt(u.decoder_matched_cosine)}.
            {evals.compared_id && (
              <>
                {" "}
                <Link to={`/compare?a=${enc(saeId)}&b=${enc(evals.compared_id)}`}>Compare their features</Link>
              </>
            )}
          </p>
        </section>
      )}
      {(h.absorption !== undefined || h.full_absorption !== undefined) && (
        <section aria-labelledby="eval-absorption-heading">
          <h3 id="eval-absorption-heading">Absorption (first letters)</h3>
          <dl className="metrics">
            <div>
              <dt>Mean absorption rate</dt>
              <dd>{pct(h.absorption)}</dd>
            </div>
            <div>
              <dt>Mean full absorption rate</dt>
              <dd>{pct(h.full_absorption)}</dd>
            </div>
          </dl>
        </section>
      )}
      {(probes.length > 0 || h.dense_probe !== undefined) && (
        <section aria-labelledby="eval-probing-heading">
          <h3 id="eval-probing-heading">Sparse probing</h3>
          <dl className="metrics">
            {probes.map((k) => (
              <div key={k}>
                <dt>Best {k} features</dt>
                <dd>{fmt(h.sparse_probe[k])}</dd>
              </div>
            ))}
            <div>
              <dt>Dense probe</dt>
              <dd>{fmt(h.dense_probe)}</dd>
            </div>
          </dl>
        </section>
      )}
      {(evals.synthetic ?? []).length > 0 && (
        <section aria-labelledby="eval-synthetic-heading">
          <h3 id="eval-synthetic-heading">Synthetic ground truth</h3>
          <table aria-labelledby="eval-synthetic-heading">
            <thead>
              <tr>
                <th scope="col">Scenario</th>
                <th scope="col">Architecture</th>
                <th scope="col">d_sae</th>
                <th scope="col">L0 (true)</th>
                <th scope="col">MMCS</th>
                <th scope="col">MCC</th>
                <th scope="col">F1</th>
                <th scope="col">Recovered</th>
              </tr>
            </thead>
            <tbody>
              {evals.synthetic!.map((r, i) => (
                <tr key={i}>
                  <td>{r.scenario}</td>
                  <td>{r.architecture}</td>
                  <td className="num">{r.d_sae}</td>
                  <td className="num">
                    {fmt(r.l0, 2)} ({fmt(r.true_l0, 2)})
                  </td>
                  <td className="num">
                    {fmt(r.trained.mmcs)} <span className="note">vs {fmt(r.random.mmcs)}</span>
                  </td>
                  <td className="num">{fmt(r.trained.mcc)}</td>
                  <td className="num">{fmt(r.trained.f1)}</td>
                  <td className="num">{pct(r.trained.recovered_fraction)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      )}
      {seconds.length > 0 && (
        <p className="note">Wall time: {seconds.map(([suite, s]) => `${suite} ${fmt(s, 1)} s`).join(" · ")}</p>
      )}
    </div>
  );
}
