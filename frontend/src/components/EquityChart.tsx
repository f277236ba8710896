import type { components } from "../api/schema";

type Point = components["schemas"]["EquityPoint"];

export interface Curve {
  name: string;
  points: Point[];
}

const COLOURS = ["var(--accent)", "var(--warn)"];
const W = 760;
const H_EQ = 220;
const H_DD = 110;
const PAD = { l: 64, r: 12, t: 10, b: 22 };

/**
 * Equity over time and its drawdown below, one line per curve (a run, or two compared), in SVG:
 * a few hundred points need no charting library. Each curve keeps its own market time, so the
 * x axis is the fraction of each run elapsed; two runs over different files still line up.
 */
export function EquityChart({ curves }: { curves: Curve[] }) {
  const shown = curves.filter((c) => c.points.length > 1);
  if (shown.length === 0) return <p className="muted">No equity points.</p>;
  const eq = shown.flatMap((c) => c.points.map((p) => p.equity));
  const dd = shown.flatMap((c) => c.points.map((p) => p.drawdown));
  return (
    <figure className="chart" aria-label={`Equity and drawdown: ${shown.map((c) => c.name).join(" vs ")}`}>
      <Panel title="Equity" curves={shown} pick={(p) => p.equity} lo={Math.min(...eq)} hi={Math.max(...eq)} height={H_EQ} fmt={(v) => v.toLocaleString(undefined, { maximumFractionDigits: 0 })} />
      <Panel title="Drawdown" curves={shown} pick={(p) => p.drawdown} lo={Math.min(...dd, -0.01)} hi={0} height={H_DD} fmt={(v) => `${(v * 100).toFixed(1)} %`} area />
      <figcaption className="legend">
        {shown.map((c, i) => (
          <span key={c.name}>
            <span className="swatch" style={{ background: COLOURS[i % COLOURS.length] }} aria-hidden="true" /> {c.name}
          </span>
        ))}
      </figcaption>
    </figure>
  );
}

function Panel(props: {
  title: string;
  curves: Curve[];
  pick: (p: Point) => number;
  lo: number;
  hi: number;
  height: number;
  fmt: (v: number) => string;
  area?: boolean;
}) {
  const { curves, pick, height, fmt } = props;
  const lo = props.lo === props.hi ? props.lo - 1 : props.lo;
  const hi = props.hi;
  const x = (i: number, n: number) => PAD.l + (i / (n - 1)) * (W - PAD.l - PAD.r);
  const y = (v: number) => PAD.t + ((hi - v) / (hi - lo)) * (height - PAD.t - PAD.b);
  const ticks = [hi, (hi + lo) / 2, lo];
  return (
    <>
      <div className="chart-title">{props.title}</div>
      <svg viewBox={`0 0 ${W} ${height}`} role="img" aria-label={props.title} className="chart-panel">
        {ticks.map((t) => (
          <g key={t}>
            <line x1={PAD.l} x2={W - PAD.r} y1={y(t)} y2={y(t)} className="chart-grid" />
            <text x={PAD.l - 6} y={y(t) + 4} textAnchor="end" className="chart-axis">
              {fmt(t)}
            </text>
          </g>
        ))}
        {curves.map((c, k) => {
          const n = c.points.length;
          const line = c.points.map((p, i) => `${i ? "L" : "M"}${x(i, n).toFixed(1)},${y(pick(p)).toFixed(1)}`).join("");
          const colour = COLOURS[k % COLOURS.length];
          return (
            <g key={c.name} data-testid={`curve-${props.title.toLowerCase()}`}>
              {props.area && <path d={`${line}L${x(n - 1, n)},${y(0)}L${x(0, n)},${y(0)}Z`} fill={colour} opacity={0.15} />}
              <path d={line} fill="none" stroke={colour} strokeWidth={1.6} />
            </g>
          );
        })}
      </svg>
    </>
  );
}
