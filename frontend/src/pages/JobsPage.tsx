import { useState, type FormEvent } from "react";
import type { Api } from "../api/client";
import { ok } from "../api/client";
import type { components } from "../api/schema";
import { atLeast, type Role } from "../api/session";
import { useApp, usePoll, useSession } from "../context";
import { tone } from "../format";
import { Empty, Failure, messageOf, RoleButton } from "./common";

type Run = components["schemas"]["SuggestionRunOut"];

const ACTIVE = new Set(["queued", "running"]);

/** Every job with its progress and a cancel; suggestions asked for and read here (advice only: nothing trades). */
export function JobsPage() {
  const { api } = useApp();
  const { user } = useSession();
  return user ? <JobsAndSuggestions api={api} role={user.role} username={user.username} /> : null;
}

export function JobsAndSuggestions({ api, role, username }: { api: Api; role: Role; username: string }) {
  const jobs = usePoll(() => ok(api.GET("/jobs", { params: { query: { limit: 100 } } })), 3_000, [api]);
  const [note, setNote] = useState<string | null>(null);
  const [cancelError, setCancelError] = useState<string | null>(null);

  async function cancel(id: number) {
    setCancelError(null);
    try {
      const r = await ok(api.POST("/jobs/{job_id}/cancel", { params: { path: { job_id: id } } }));
      setNote(r.outcome === "cancelled" ? `Job #${id} cancelled.` : `Job #${id} stops at its next check point.`);
    } catch (e) {
      setCancelError(`#${id}: ${messageOf(e)}`);
    }
    jobs.reload();
  }

  return (
    <div className="page">
      <Suggestions api={api} role={role} onAsked={jobs.reload} />
      <section className="glass card" aria-labelledby="jobs-h">
        <h2 id="jobs-h">Jobs</h2>
        <Failure error={jobs.error ?? cancelError} />
        {note && (
          <p className="notice good" role="status">
            {note}
          </p>
        )}
        <table className="grid">
          <thead>
            <tr>
              <th className="num">#</th>
              <th>Type</th>
              <th>Status</th>
              <th>Progress</th>
              <th>Note</th>
              <th>By</th>
              <th>Created</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {jobs.data?.length === 0 && <Empty cols={8} text="No jobs yet." />}
            {jobs.data?.map((j) => {
              // a trader cancels their own jobs, an admin anyone's (the API checks the same)
              const own = j.created_by === `api:${username}`;
              const mayCancel = atLeast(role, "admin") || own;
              return (
                <tr key={j.id}>
                  <td className="num">{j.id}</td>
                  <td>{j.type}</td>
                  <td>
                    <span className={`chip ${tone(j.status)}`}>{j.cancel_requested && ACTIVE.has(j.status) ? `${j.status}, cancelling` : j.status}</span>
                  </td>
                  <td>
                    <progress className="progress" max={1} value={j.progress} aria-label={`Job #${j.id} progress`} /> {Math.round(j.progress * 100)} %
                  </td>
                  <td className="wrap">{j.error || j.progress_note}</td>
                  <td>{j.created_by}</td>
                  <td>{j.created_at ?? "—"}</td>
                  <td>
                    {ACTIVE.has(j.status) && (
                      <RoleButton
                        role={role}
                        least="trader"
                        className="ghost"
                        disabled={!mayCancel || j.cancel_requested}
                        title={mayCancel ? undefined : "A trader cancels only their own jobs"}
                        onClick={() => void cancel(j.id)}
                        aria-label={`Cancel job #${j.id}`}
                      >
                        Cancel
                      </RoleButton>
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </section>
    </div>
  );
}

function Suggestions({ api, role, onAsked }: { api: Api; role: Role; onAsked: () => void }) {
  const allowed = atLeast(role, "trader");
  const [prompt, setPrompt] = useState("");
  const [run, setRun] = useState<Run | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function ask(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      setRun(await ok(api.POST("/suggestions", { body: { prompt: prompt.trim() } })));
      onAsked();
    } catch (err) {
      setError(messageOf(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <section className="glass card" aria-labelledby="sugg-h">
      <h2 id="sugg-h">Suggestions</h2>
      <p className="muted">Advice only: a suggestion places no order.</p>
      {!allowed && <p className="notice warn">Asking needs the trader role (you are {role}).</p>}
      <form onSubmit={ask}>
        <fieldset disabled={!allowed || busy}>
          <label>
            Prompt
            <textarea value={prompt} onChange={(e) => setPrompt(e.target.value)} maxLength={2000} placeholder="scan my portfolio" />
          </label>
          <div className="row">
            <button className="primary" type="submit" disabled={!prompt.trim()}>
              {busy ? "Asking…" : "Ask"}
            </button>
          </div>
        </fieldset>
      </form>
      <Failure error={error} />
      {run && <Answer run={run} />}
    </section>
  );
}

function Answer({ run }: { run: Run }) {
  return (
    <div className="answer" aria-label="Answer">
      <div className="row">
        <span className={`chip ${tone(run.status)}`}>{run.status}</span>
        <span className="muted">
          run #{run.id} · {run.provider} {run.model} · {run.attempts} attempt{run.attempts === 1 ? "" : "s"}
        </span>
      </div>
      {run.error && <p className="notice bad">{run.error}</p>}
      {run.summary && <p>{run.summary}</p>}
      <table className="grid" aria-label="Suggestions">
        <thead>
          <tr>
            <th>Symbol</th>
            <th>Action</th>
            <th className="num">Size</th>
            <th>Unit</th>
            <th className="num">Confidence</th>
            <th>Rationale</th>
          </tr>
        </thead>
        <tbody>
          {run.suggestions.length === 0 && <Empty cols={6} text="No suggestions." />}
          {run.suggestions.map((s, i) => (
            <tr key={i}>
              <td>{s.symbol}</td>
              <td>
                <span className={`chip ${s.action === "buy" ? "good" : s.action === "hold" ? "idle" : "warn"}`}>{s.action}</span>
              </td>
              <td className="num">{s.size}</td>
              <td>{s.size_unit.replace("_", " ")}</td>
              <td className="num">{Math.round(s.confidence * 100)} %</td>
              <td className="wrap">{s.rationale}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
