import { ok } from "../api/client";
import { useApp, usePoll } from "../context";
import { fmtNs, fmtNum, tone } from "../format";
import { LatencyHistograms } from "../components/LatencyHistograms";

const VERDICTS = ["healthy", "degraded", "unhealthy", "dead", "unknown"] as const;

/**
 * GET /status every 2 s: each service's verdict from its heartbeat age, stream lag, dead letters;
 * GET /status/latency every 2 s: each stage's latency percentiles and histogram.
 */
export function HealthPage() {
  const { api } = useApp();
  const { data, error } = usePoll(() => ok(api.GET("/status")), 2_000, [api]);
  const latency = usePoll(() => ok(api.GET("/status/latency")), 2_000, [api]);

  return (
    <div className="page">
      {error && <p className="notice bad">Could not read /status: {error}</p>}
      {data?.redis && (
        <p className="notice bad" role="alert">
          {data.redis} — every service shows unknown until Redis answers.
        </p>
      )}
      {data?.redis_memory?.warning && (
        <p className="notice bad" role="alert" data-testid="redis-memory-warning">
          {data.redis_memory.warning}
        </p>
      )}
      {data?.redis_memory?.max_bytes && (
        <p className="muted small" data-testid="redis-memory">
          Redis memory {fmtNum(data.redis_memory.used_bytes / 2 ** 20, 0)} of {fmtNum(data.redis_memory.max_bytes / 2 ** 20, 0)} MiB
          ({fmtNum((data.redis_memory.used_fraction ?? 0) * 100, 0)} %, {data.redis_memory.policy})
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

      <section className="glass card" aria-labelledby="lat-h">
        <div className="card-head">
          <h2 id="lat-h">Latency per stage</h2>
          <span className="muted small legend">
            <span><span className="swatch body" aria-hidden="true" /> up to p99</span>
            <span><span className="swatch p99" aria-hidden="true" /> above p99</span>
            <span><span className="swatch tail" aria-hidden="true" /> above p999</span>
            <span>counts on a log scale · since each service started</span>
          </span>
        </div>
        {latency.error && <p className="notice bad">Could not read /status/latency: {latency.error}</p>}
        {latency.data?.redis && <p className="notice bad">{latency.data.redis}</p>}
        <LatencyHistograms stages={latency.data?.stages ?? []} />
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
