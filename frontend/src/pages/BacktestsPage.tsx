import { useEffect, useState, type FormEvent } from "react";
import type { Api } from "../api/client";
import { ok } from "../api/client";
import type { components } from "../api/schema";
import { atLeast, type Role } from "../api/session";
import { EquityChart, type Curve } from "../components/EquityChart";
import { useApp, usePoll, useSession } from "../context";
import { fmtNum, tone } from "../format";
import { Empty, Failure, messageOf } from "./common";

type Job = components["schemas"]["JobOut"];
type Backtest = components["schemas"]["BacktestOut"];
type Payload = components["schemas"]["BacktestPayload"];

const FINISHED = new Set(["completed", "failed", "cancelled"]);
/** Points asked of /equity per run: enough for a chart as wide as the page. */
const CHART_POINTS = 600;

/** Launch a backtest and watch its job, list the runs, open one or compare two. */
export function BacktestsPage() {
  const { api } = useApp();
  const { user } = useSession();
  return user ? <Backtests api={api} role={user.role} /> : null;
}

export function Backtests({ api, role, jobPollMs = 1_000 }: { api: Api; role: Role; jobPollMs?: number }) {
  const list = usePoll(() => ok(api.GET("/backtests", { params: { query: { limit: 100 } } })), 5_000, [api]);
  const [job, setJob] = useState<Job | null>(null);
  const [open, setOpen] = useState<number[]>([]);

  function toggle(id: number) {
    setOpen((o) => (o.includes(id) ? o.filter((x) => x !== id) : [...o, id].slice(-2)));
  }

  return (
    <div className="page">
      <LaunchForm api={api} role={role} onLaunched={setJob} />
      {job && (
        <JobWatch
          api={api}
          job={job}
          everyMs={jobPollMs}
          onFinished={(j) => {
            list.reload();
            const id = Number((j.result as { backtest_id?: number } | null)?.backtest_id);
            if (j.status === "completed" && Number.isInteger(id)) setOpen([id]);
          }}
        />
      )}
      <section className="glass card" aria-labelledby="bt-h">
        <div className="card-head">
          <h2 id="bt-h">Runs</h2>
          <span className="muted">Tick two runs to compare them.</span>
        </div>
        <Failure error={list.error} />
        <table className="grid">
          <thead>
            <tr>
              <th>Compare</th>
              <th className="num">#</th>
              <th>Label</th>
              <th>Status</th>
              <th className="num">Return</th>
              <th className="num">Max DD</th>
              <th className="num">Ticks</th>
              <th className="num">Fills</th>
              <th className="num">Duration</th>
              <th>By</th>
              <th>Created</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {list.data?.length === 0 && <Empty cols={12} text="No backtests yet: launch one above (or aitrader backtest)." />}
            {list.data?.map((b) => (
              <tr key={b.id}>
                <td>
                  <input type="checkbox" aria-label={`Select run #${b.id}`} checked={open.includes(b.id)} onChange={() => toggle(b.id)} />
                </td>
                <td className="num">{b.id}</td>
                <td>{b.label || b.files.join(", ")}</td>
                <td>
                  <span className={`chip ${tone(b.status)}`}>{b.status}</span>
                </td>
                <td className="num">{pct(b.metrics?.total_return)}</td>
                <td className="num">{pct(b.metrics?.max_drawdown)}</td>
                <td className="num">{b.ticks.toLocaleString()}</td>
                <td className="num">{b.fills.toLocaleString()}</td>
                <td className="num">{fmtNum(b.duration_s, 1)} s</td>
                <td>{b.created_by}</td>
                <td>{b.created_at ?? "—"}</td>
                <td>
                  <button className="ghost" onClick={() => setOpen([b.id])} aria-label={`Open run #${b.id}`}>
                    Open
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
      {open.length > 0 && <RunView api={api} ids={open} runs={list.data ?? []} />}
    </div>
  );
}

/** "KEY=value" lines to the payload's config (values stay text: the worker reads them as settings do env). */
export function parseConfig(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [n, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const eq = line.indexOf("=");
    if (eq <= 0) throw new Error(`config line ${n + 1}: expected AITRADER_NAME=value, got "${line}"`);
    out[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  }
  return out;
}

function LaunchForm({ api, role, onLaunched }: { api: Api; role: Role; onLaunched: (j: Job) => void }) {
  const allowed = atLeast(role, "trader");
  const [source, setSource] = useState<"synthetic" | "files">("synthetic");
  const [ticks, setTicks] = useState("20000");
  const [symbols, setSymbols] = useState("4");
  const [files, setFiles] = useState("");
  const [config, setConfig] = useState("");
  const [label, setLabel] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function launch(e: FormEvent) {
    e.preventDefault();
    setError(null);
    try {
      const body: Payload = { label, seed: 7, symbols: Number(symbols), synthetic: 0, config: parseConfig(config) };
      if (source === "synthetic") body.synthetic = Number(ticks);
      else body.files = files.split("\n").map((f) => f.trim()).filter(Boolean);
      setBusy(true);
      onLaunched(await ok(api.POST("/backtests", { body })));
    } catch (err) {
      setError(messageOf(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <section className="glass card" aria-labelledby="launch-h">
      <h2 id="launch-h">Launch a backtest</h2>
      {!allowed && <p className="notice warn">Launching needs the trader role (you are {role}).</p>}
      <form onSubmit={launch}>
        <fieldset disabled={!allowed || busy}>
          <div className="row">
            <label className="check">
              <input type="radio" name="source" checked={source === "synthetic"} onChange={() => setSource("synthetic")} /> Synthetic ticks
            </label>
            <label className="check">
              <input type="radio" name="source" checked={source === "files"} onChange={() => setSource("files")} /> Tick files
            </label>
          </div>
          {source === "synthetic" ? (
            <div className="row">
              <label>
                Ticks
                <input type="number" min={1} value={ticks} onChange={(e) => setTicks(e.target.value)} required />
              </label>
              <label>
                Symbols
                <input type="number" min={1} value={symbols} onChange={(e) => setSymbols(e.target.value)} required />
              </label>
            </div>
          ) : (
            <label>
              Files on the worker (one path a line)
              <textarea value={files} onChange={(e) => setFiles(e.target.value)} required placeholder="/data/ticks/2024-01-02.parquet" />
            </label>
          )}
          <label>
            Config (AITRADER_NAME=value, one a line; optional)
            <textarea value={config} onChange={(e) => setConfig(e.target.value)} placeholder="AITRADER_STRATEGY_FILE=config/strategies.yaml" />
          </label>
          <div className="row">
            <label>
              Label
              <input value={label} onChange={(e) => setLabel(e.target.value)} maxLength={200} />
            </label>
            <button className="primary" type="submit">
              Launch
            </button>
          </div>
        </fieldset>
      </form>
      <Failure error={error} />
    </section>
  );
}

/** The launched job's progress, polled until it finishes. */
function JobWatch({ api, job, everyMs, onFinished }: { api: Api; job: Job; everyMs: number; onFinished: (j: Job) => void }) {
  const [now, setNow] = useState(job);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    setNow(job);
    let live = true;
    let timer: ReturnType<typeof setTimeout>;
    const step = async () => {
      try {
        const j = await ok(api.GET("/jobs/{job_id}", { params: { path: { job_id: job.id } } }));
        if (!live) return;
        setNow(j);
        setError(null);
        if (FINISHED.has(j.status)) return onFinished(j);
      } catch (e) {
        if (live) setError(messageOf(e));
      }
      if (live) timer = setTimeout(step, everyMs);
    };
    timer = setTimeout(step, 0);
    return () => {
      live = false;
      clearTimeout(timer);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [api, job.id, everyMs]);
  return (
    <section className="glass card" aria-labelledby="watch-h" aria-live="polite">
      <h2 id="watch-h">Job #{now.id}</h2>
      <div className="row">
        <span className={`chip ${tone(now.status)}`} data-testid="job-status">
          {now.status}
        </span>
        <span>{Math.round(now.progress * 100)} %</span>
        <span className="muted">{now.error || now.progress_note}</span>
      </div>
      <progress className="progress" max={1} value={now.progress} aria-label={`Job #${now.id} progress`} />
      <Failure error={error} />
    </section>
  );
}

interface Loaded {
  id: number;
  run: components["schemas"]["BacktestDetail"] | null;
  curve: Curve | null;
  error: string | null;
}

/** One run, or two side by side: the metrics as rows with a column per run, and their curves on one chart. */
function RunView({ api, ids, runs }: { api: Api; ids: number[]; runs: Backtest[] }) {
  const [loaded, setLoaded] = useState<Loaded[]>([]);
  const statusKey = ids.map((id) => runs.find((r) => r.id === id)?.status).join(",");
  useEffect(() => {
    let live = true;
    void Promise.all(ids.map((id) => load(api, id))).then((l) => live && setLoaded(l));
    return () => {
      live = false;
    };
  }, [api, ids.join(","), statusKey]); // eslint-disable-line react-hooks/exhaustive-deps

  const keys = [...new Set(loaded.flatMap((l) => Object.keys(l.run?.metrics ?? {})))].sort();
  const title = ids.map((id) => `#${id}`).join(" vs ");
  return (
    <section className="glass card" aria-labelledby="run-h">
      <h2 id="run-h">{ids.length > 1 ? `Compare ${title}` : `Run ${title}`}</h2>
      {loaded.map((l) => (l.error ? <Failure key={l.id} error={`#${l.id}: ${l.error}`} /> : null))}
      <div className="run-view">
        <table className="grid" aria-label="Metrics">
          <thead>
            <tr>
              <th>Metric</th>
              {loaded.map((l) => (
                <th key={l.id} className="num">
                  #{l.id} {l.run?.label}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {keys.length === 0 && <Empty cols={loaded.length + 1} text="No metrics (the run has not completed)." />}
            {keys.map((k) => (
              <tr key={k}>
                <td>{k}</td>
                {loaded.map((l) => (
                  <td key={l.id} className="num">
                    {metric(l.run?.metrics?.[k])}
                  </td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
        <EquityChart curves={loaded.flatMap((l) => (l.curve ? [l.curve] : []))} />
      </div>
    </section>
  );
}

async function load(api: Api, id: number): Promise<Loaded> {
  try {
    const run = await ok(api.GET("/backtests/{backtest_id}", { params: { path: { backtest_id: id } } }));
    if (run.status !== "completed") return { id, run, curve: null, error: null };
    const eq = await ok(api.GET("/backtests/{backtest_id}/equity", { params: { path: { backtest_id: id }, query: { max_points: CHART_POINTS } } }));
    return { id, run, curve: { name: `#${id} ${run.label}`.trim(), points: eq.series }, error: null };
  } catch (e) {
    return { id, run: null, curve: null, error: messageOf(e) };
  }
}

function pct(v: unknown): string {
  return typeof v === "number" ? `${(v * 100).toFixed(2)} %` : "—";
}

function metric(v: unknown): string {
  if (typeof v === "number") return Number.isInteger(v) ? v.toLocaleString() : v.toLocaleString(undefined, { maximumFractionDigits: 4 });
  if (v === null || v === undefined) return "—";
  return typeof v === "object" ? JSON.stringify(v) : String(v);
}
