import { ok } from "../api/client";
import { useApp, usePoll } from "../context";
import { fmtNs, fmtNum, tone } from "../format";

const VERDICTS = ["healthy", "degraded", "unhealthy", "dead", "unknown"] as const;

/** GET /status every 2 s: each service's verdict from its heartbeat age, stream lag, dead letters. */
export function HealthPage() {
  const { api } = useApp();
  const { data, error } = usePoll(() => ok(api.GET("/status")), 2_000, [api]);

  return (
    <div className="page">
      {error && <p className="notice bad">Could not read /status: {error}</p>}
      {data?.redis && (
        <p className="notice bad" role="alert">
          {data.redis} — every service shows unknown until Redis answers.
        </p>
      )}
      <section className="tiles" aria-label="Services">
        {(data?.services ?? []).map((s) => {
          const errored = s.instances.some((i) => i.status === "error");
          const t = errored ? "bad" : tone(s.verdict);
          const age = Math.min(...s.instances.map((i) => i.age_s));
          return (
            <article key={s.service} className={`glass tile ${t}`} aria-label={`${s.service}: ${s.verdict}`}>
              <header>
                <span className={`dot ${t}`} aria-hidden="true" />
                <h2>{s.service}</h2>
              </header>
              <strong className={`verdict ${t}`}>{errored ? `${s.verdict} · error` : s.verdict}</strong>
              <dl>
                <dt>Heartbeat</dt>
                <dd>{s.instances.length ? `${fmtNum(age, 1)} s ago` : "never seen"}</dd>
                <dt>Instances</dt>
                <dd>{s.instances.length}</dd>
                <dt>Errors</dt>
                <dd className={s.errors ? "neg" : ""}>{s.errors}</dd>
                <dt>Dead letters</dt>
                <dd className={s.dead_letters ? "neg" : ""}>{s.dead_letters}</dd>
              </dl>
              {s.instances
                .filter((i) => i.detail)
                .map((i) => (
                  <p key={i.instance} className="muted small">
                    {i.instance}: {i.detail}
                  </p>
                ))}
            </article>
          );
        })}
      </section>

      <div className="two-col">
        <section className="glass card" aria-labelledby="lag-h">
          <h2 id="lag-h">Stream lag</h2>
          <table className="grid">
            <thead>
              <tr>
                <th>Stream</th>
                <th>Group</th>
                <th className="num">Lag</th>
                <th className="num">Pending</th>
              </tr>
            </thead>
            <tbody>
              {(data?.consumer_groups ?? []).length === 0 && (
                <tr>
                  <td colSpan={4} className="muted">
                    No consumer groups yet.
                  </td>
                </tr>
              )}
              {(data?.consumer_groups ?? []).map((g) => (
                <tr key={`${g.stream}/${g.group}`}>
                  <td className="mono">{g.stream}</td>
                  <td>{g.group}</td>
                  <td className={`num ${g.lag > 1000 ? "neg" : ""}`}>{g.lag.toLocaleString()}</td>
                  <td className="num">{g.pending.toLocaleString()}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>

        <section className="glass card" aria-labelledby="dlq-h">
          <h2 id="dlq-h">
            Dead letters <span className={`chip ${data?.dead_letters.total ? "bad" : "good"}`}>{data?.dead_letters.total ?? 0}</span>
          </h2>
          <table className="grid">
            <thead>
              <tr>
                <th>Source stream</th>
                <th className="num">Entries</th>
              </tr>
            </thead>
            <tbody>
              {Object.entries(data?.dead_letters.by_stream ?? {}).map(([stream, n]) => (
                <tr key={stream}>
                  <td className="mono">{stream}</td>
                  <td className="num neg">{n}</td>
                </tr>
              ))}
              {Object.keys(data?.dead_letters.by_stream ?? {}).length === 0 && (
                <tr>
                  <td colSpan={2} className="muted">
                    None.
                  </td>
                </tr>
              )}
            </tbody>
          </table>
          <p className="muted small legend">
            {VERDICTS.map((v) => (
              <span key={v}>
                <span className={`dot ${tone(v)}`} aria-hidden="true" /> {v}
              </span>
            ))}
            {data && (
              <span>
                thresholds {data.thresholds.healthy_s}/{data.thresholds.degraded_s}/{data.thresholds.unhealthy_s} s · checked{" "}
                {fmtNs(data.checked_at_ns)}
              </span>
            )}
          </p>
        </section>
      </div>
    </div>
  );
}
