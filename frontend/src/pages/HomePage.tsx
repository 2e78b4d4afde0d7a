import { Link } from "react-router";
import { api, type Model, type Sae } from "../api/client";
import { useApi } from "../api/useApi";
import { ErrorMessage } from "../components/ErrorMessage";
import { Empty, Loading } from "../components/Status";
import { fmt, pct } from "../format";

export function HomePage() {
  const { data, error, loading, reload } = useApi(
    async (signal) => {
      const [models, saes] = await Promise.all([api.models(signal), api.saes(undefined, signal)]);
      return { models, saes };
    },
    [],
  );
  if (loading) return <Loading what="Loading models and SAEs" />;
  if (error) return <ErrorMessage error={error} onRetry={reload} />;
  const { models, saes } = data!;
  const names = [...new Set([...models.map((m) => m.name), ...saes.map((s) => s.model)])];
  if (names.length === 0)
    return (
      <Empty>
        No models or SAEs yet. Train and analyze one (<Link to="/jobs">Jobs</Link>), then come back.
      </Empty>
    );
  return (
    <div>
      <h1>Models and SAEs</h1>
      {names.map((name) => (
        <ModelSection
          key={name}
          model={models.find((m) => m.name === name)}
          name={name}
          saes={saes.filter((s) => s.model === name)}
        />
      ))}
    </div>
  );
}

function ModelSection({ model, name, saes }: { model?: Model; name: string; saes: Sae[] }) {
  return (
    <section className="card" aria-label={`Model ${name}`}>
      <h2>
        {name}{" "}
        <small>
          {model?.n_layers != null && `${model.n_layers} layers`}
          {model?.d_model != null && ` · d_model ${model.d_model}`}
        </small>
      </h2>
      {saes.length === 0 ? (
        <Empty>No SAEs for this model.</Empty>
      ) : (
        <table>
          <thead>
            <tr>
              <th scope="col">SAE</th>
              <th scope="col">Architecture</th>
              <th scope="col">Hook</th>
              <th scope="col">d_sae</th>
              <th scope="col">L0</th>
              <th scope="col">Explained variance</th>
              <th scope="col">CE recovered</th>
              <th scope="col">Dead fraction</th>
            </tr>
          </thead>
          <tbody>
            {saes.map((s) => (
              <tr key={s.id}>
                <td>
                  <Link to={`/saes/${encodeURIComponent(s.id)}`}>{s.id}</Link>
                </td>
                <td>{s.architecture ?? "—"}</td>
                <td>
                  <code>{s.hook_in ?? "—"}</code>
                </td>
                <td>{s.d_sae ?? "—"}</td>
                <td>{fmt(s.metrics?.l0, 2)}</td>
                <td>{fmt(s.metrics?.explained_variance)}</td>
                <td>{fmt(s.metrics?.ce_loss_recovered)}</td>
                <td>{pct(s.metrics?.dead_fraction)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
