import type { components } from "../api/schema";

type StageLatency = components["schemas"]["StageLatency"];
type Bucket = components["schemas"]["LatencyBucket"];

const LABELS: Record<string, string> = {
  tick_to_signal: "Tick → signal",
  signal_to_intent: "Signal → intent",
  intent_to_fill: "Intent → fill",
  tick_to_fill: "Tick → fill",
};

/** A latency in µs as people read it: 850 µs, 3.20 ms, 1.50 s. */
export function fmtUs(us: number): string {
  if (us < 1_000) return `${Math.round(us)} µs`;
  if (us < 1_000_000) return `${(us / 1_000).toFixed(us < 10_000 ? 2 : 1)} ms`;
  return `${(us / 1_000_000).toFixed(2)} s`;
}

/** A bucket edge on the axis: 1 µs … 500 µs, 1 ms … 500 ms, 1 s … */
function edge(us: number): string {
  if (us < 1_000) return `${us}µs`;
  if (us < 1_000_000) return `${us / 1_000}ms`;
  return `${us / 1_000_000}s`;
}

const W = 260;
const H = 84;
const AXIS = 14;
const MIN_SLOTS = 8;

/**
 * Bars of a stage's buckets on a log count scale (one slow outlier stays visible next to a million fast ones);
 * buckets wholly above p99 are amber, wholly above p999 red.
 */
export function Histogram({ stage, buckets, marks }: { stage: string; buckets: Bucket[]; marks: { p50: number; p99: number; p999: number } }) {
  const top = Math.max(...buckets.map((b) => b.count), 1);
  const bw = W / Math.max(buckets.length, MIN_SLOTS); // a few buckets stay bars, not blocks
  const x0 = (W - bw * buckets.length) / 2;
  const h = (c: number) => (c <= 0 ? 0 : Math.max(2, ((H - AXIS) * Math.log10(c + 1)) / Math.log10(top + 1)));
  const labelEvery = Math.ceil(buckets.length / 6);
  return (
    <svg className="latency-hist" viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`${LABELS[stage] ?? stage} latency histogram`}>
      {buckets.map((b, i) => {
        // a bucket starting above p99 holds only the slowest 1 %, above p999 the slowest 0.1 %
        const tail = b.ge_us > marks.p999 ? "tail" : b.ge_us > marks.p99 ? "p99" : "body";
        return (
          <g key={b.ge_us} data-testid="latency-bar">
            <title>{`${fmtUs(b.ge_us)} – ${b.lt_us === null ? "…" : fmtUs(b.lt_us)}: ${b.count.toLocaleString()}`}</title>
            <rect className={`bar ${tail}`} x={x0 + i * bw + 1} y={H - AXIS - h(b.count)} width={Math.max(1, bw - 2)} height={h(b.count)} rx={1.5} />
            {i % labelEvery === 0 && (
              <text x={x0 + i * bw + 1} y={H - 2} className="axis">
                {edge(b.ge_us)}
              </text>
            )}
          </g>
        );
      })}
    </svg>
  );
}

/** Per pipeline stage: p50 / p99 / p999 / max and the histogram of every latency recorded (merged over instances). */
export function LatencyHistograms({ stages }: { stages: StageLatency[] }) {
  return (
    <div className="latency-grid">
      {stages.map((s) => (
        <article key={s.stage} className="latency-stage" aria-label={`${LABELS[s.stage] ?? s.stage} latency`}>
          <header className="card-head">
            <h3>{LABELS[s.stage] ?? s.stage}</h3>
            <span className="muted small">
              {s.count.toLocaleString()} recorded{s.instances > 1 ? ` · ${s.instances} instances` : ""}
            </span>
          </header>
          {s.count === 0 ? (
            <p className="muted small">No latencies recorded yet.</p>
          ) : (
            <>
              <dl className="latency-figures">
                {(["p50", "p99", "p999", "max"] as const).map((k) => (
                  <div key={k}>
                    <dt>{k}</dt>
                    <dd data-testid={`${s.stage}-${k}`}>{fmtUs(s[k])}</dd>
                  </div>
                ))}
              </dl>
              <Histogram stage={s.stage} buckets={s.buckets} marks={s} />
            </>
          )}
          {s.unreadable > 0 && <p className="notice bad small">{s.unreadable} saved histogram(s) could not be read.</p>}
        </article>
      ))}
    </div>
  );
}
