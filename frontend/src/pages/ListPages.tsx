import { ok } from "../api/client";
import { useApp, usePoll } from "../context";
import { fmtNum, tone } from "../format";

/** Read-only lists for the pages whose actions come later (issue 7): what the API holds today. */

function Failure({ error }: { error: string | null }) {
  return error ? <p className="notice bad">{error}</p> : null;
}

function Empty({ cols, text }: { cols: number; text: string }) {
  return (
    <tr>
      <td colSpan={cols} className="muted">
        {text}
      </td>
    </tr>
  );
}

export function BacktestsPage() {
  const { api } = useApp();
  const { data, error } = usePoll(() => ok(api.GET("/backtests")), 5_000, [api]);
  return (
    <div className="page">
      <section className="glass card" aria-labelledby="bt-h">
        <h2 id="bt-h">Backtests</h2>
        <Failure error={error} />
        <table className="grid">
          <thead>
            <tr>
              <th className="num">#</th>
              <th>Label</th>
              <th>Status</th>
              <th className="num">Ticks</th>
              <th className="num">Orders</th>
              <th className="num">Fills</th>
              <th className="num">Duration</th>
              <th>By</th>
              <th>Created</th>
            </tr>
          </thead>
          <tbody>
            {data?.length === 0 && <Empty cols={9} text="No backtests yet (aitrader backtest or POST /backtests)." />}
            {data?.map((b) => (
              <tr key={b.id}>
                <td className="num">{b.id}</td>
                <td>{b.label || b.files.join(", ")}</td>
                <td>
                  <span className={`chip ${tone(b.status)}`}>{b.status}</span>
                </td>
                <td className="num">{b.ticks.toLocaleString()}</td>
                <td className="num">{b.orders.toLocaleString()}</td>
                <td className="num">{b.fills.toLocaleString()}</td>
                <td className="num">{fmtNum(b.duration_s, 1)} s</td>
                <td>{b.created_by}</td>
                <td>{b.created_at ?? "—"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
    </div>
  );
}

export function ModelsPage() {
  const { api } = useApp();
  const models = usePoll(() => ok(api.GET("/models")), 10_000, [api]);
  const strategies = usePoll(() => ok(api.GET("/strategies")), 10_000, [api]);
  return (
    <div className="page">
      <section className="glass card" aria-labelledby="models-h">
        <h2 id="models-h">Models</h2>
        <Failure error={models.error} />
        <table className="grid">
          <thead>
            <tr>
              <th>Name</th>
              <th className="num">Version</th>
              <th>Kind</th>
              <th>State</th>
              <th className="num">Features</th>
              <th>Created</th>
              <th>By</th>
            </tr>
          </thead>
          <tbody>
            {models.data?.length === 0 && <Empty cols={7} text="No models registered." />}
            {models.data?.map((m) => (
              <tr key={m.id}>
                <td>{m.name}</td>
                <td className="num">{m.version}</td>
                <td>{m.kind}</td>
                <td>
                  <span className={`chip ${m.state === "promoted" ? "good" : m.state === "registered" ? "idle" : "warn"}`}>{m.state}</span>
                </td>
                <td className="num">{m.features.length}</td>
                <td>{m.created_at ?? "—"}</td>
                <td>{m.created_by}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
      <section className="glass card" aria-labelledby="strat-h">
        <h2 id="strat-h">Strategies</h2>
        <Failure error={strategies.error} />
        <table className="grid">
          <thead>
            <tr>
              <th>Name</th>
              <th>Enabled</th>
              <th>Running</th>
              <th className="num">Allocation</th>
              <th>Sizing</th>
              <th>Detectors</th>
            </tr>
          </thead>
          <tbody>
            {strategies.data?.strategies.length === 0 && <Empty cols={6} text="No strategies configured." />}
            {strategies.data?.strategies.map((s) => (
              <tr key={s.name}>
                <td>{s.name}</td>
                <td>
                  <span className={`chip ${s.enabled ? "good" : "idle"}`}>{s.enabled ? "on" : "off"}</span>
                </td>
                <td>{s.running ? "yes" : "no"}</td>
                <td className="num">{fmtNum(s.allocation, 2)}</td>
                <td>{s.sizing}</td>
                <td className="wrap">{s.detectors.join(", ")}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
    </div>
  );
}

export function JobsPage() {
  const { api } = useApp();
  const { data, error } = usePoll(() => ok(api.GET("/jobs")), 3_000, [api]);
  return (
    <div className="page">
      <section className="glass card" aria-labelledby="jobs-h">
        <h2 id="jobs-h">Jobs</h2>
        <Failure error={error} />
        <table className="grid">
          <thead>
            <tr>
              <th className="num">#</th>
              <th>Type</th>
              <th>Status</th>
              <th className="num">Progress</th>
              <th>Note</th>
              <th>By</th>
              <th>Created</th>
            </tr>
          </thead>
          <tbody>
            {data?.length === 0 && <Empty cols={7} text="No jobs yet." />}
            {data?.map((j) => (
              <tr key={j.id}>
                <td className="num">{j.id}</td>
                <td>{j.type}</td>
                <td>
                  <span className={`chip ${tone(j.status)}`}>{j.status}</span>
                </td>
                <td className="num">{Math.round(j.progress * 100)} %</td>
                <td className="wrap">{j.error || j.progress_note}</td>
                <td>{j.created_by}</td>
                <td>{j.created_at ?? "—"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
    </div>
  );
}
