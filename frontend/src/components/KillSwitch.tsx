import { useEffect, useState, type FormEvent } from "react";
import { ok, type Api } from "../api/client";
import { atLeast, type Role } from "../api/session";
import type { components } from "../api/schema";
import { usePoll } from "../context";
import { fmtNs, tone } from "../format";
import { Modal } from "./Modal";

type KillState = components["schemas"]["KillSwitchState"];
type ScopeState = components["schemas"]["ScopeState"];

const POLL_MS = 3_000;

/**
 * The header's kill switch: the global trading state at a glance (Alt+K opens it), and a dialog
 * with every scope's state and who changed it when. Engage needs the trader role and a reason;
 * release needs the admin role, a reason and a second, explicit confirmation.
 */
export function KillSwitch({ api, role }: { api: Api; role: Role }) {
  const [open, setOpen] = useState(false);
  const { data, error, reload } = usePoll(() => ok(api.GET("/kill-switch")), POLL_MS, [api]);

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.altKey && e.key.toLowerCase() === "k") {
        e.preventDefault();
        setOpen(true);
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, []);

  const state = data?.global_state ?? (error ? "UNKNOWN" : "…");
  const others = data?.scopes.filter((s) => s.scope !== "global" && s.state !== "ACTIVE").length ?? 0;
  return (
    <>
      <button
        className={`kill-pill ${tone(state)}`}
        onClick={() => setOpen(true)}
        aria-haspopup="dialog"
        aria-label={`Kill switch: trading ${state}${others ? `, ${others} scope(s) restricted` : ""}. Open (Alt+K)`}
        title={error ?? "Kill switch (Alt+K)"}
      >
        <span className={`dot ${tone(state)}`} aria-hidden="true" />
        <span className="kill-label">Trading</span>
        <strong data-testid="global-state">{state}</strong>
        {others > 0 && <span className="chip warn">+{others}</span>}
      </button>
      {open && (
        <KillSwitchDialog api={api} role={role} state={data} error={error} onChanged={reload} onClose={() => setOpen(false)} />
      )}
    </>
  );
}

export function KillSwitchDialog({
  api,
  role,
  state,
  error,
  onChanged,
  onClose,
}: {
  api: Api;
  role: Role;
  state: KillState | undefined;
  error: string | null;
  onChanged: () => void;
  onClose: () => void;
}) {
  const canEngage = atLeast(role, "trader");
  const canRelease = atLeast(role, "admin");
  const [scope, setScope] = useState("global");
  const [action, setAction] = useState<"halt" | "reduce">("halt");
  const [reason, setReason] = useState("");
  const [releasing, setReleasing] = useState<ScopeState | null>(null);
  const [releaseReason, setReleaseReason] = useState("");
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<{ tone: "good" | "bad"; text: string } | null>(null);

  async function run(what: () => Promise<{ scope: string; state: string; detail: string }>) {
    setBusy(true);
    setResult(null);
    try {
      const r = await what();
      setResult({ tone: "good", text: `${r.scope}: ${r.state}${r.detail ? ` — ${r.detail}` : ""}` });
      setReason("");
      setReleasing(null);
      setReleaseReason("");
    } catch (e) {
      setResult({ tone: "bad", text: (e as Error).message });
    } finally {
      setBusy(false);
      onChanged();
    }
  }

  function engage(e: FormEvent) {
    e.preventDefault();
    void run(() => ok(api.POST("/kill-switch/engage", { body: { scope: scope.trim(), action, reason: reason.trim() } })));
  }

  function release(e: FormEvent) {
    e.preventDefault();
    if (!releasing) return;
    const s = releasing.scope;
    void run(() => ok(api.POST("/kill-switch/release", { body: { scope: s, reason: releaseReason.trim() } })));
  }

  const scopes = state?.scopes ?? [];
  return (
    <Modal title="Kill switch" onClose={onClose}>
      {error && <p className="notice bad">Could not read the kill switch: {error}</p>}
      <table className="grid" aria-label="Trading state per scope">
        <thead>
          <tr>
            <th>Scope</th>
            <th>State</th>
            <th>Changed by</th>
            <th>When</th>
            <th>Reason</th>
            <th>
              <span className="sr-only">Release</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {scopes.length === 0 && (
            <tr>
              <td colSpan={6} className="muted">
                global — ACTIVE (never changed)
              </td>
            </tr>
          )}
          {scopes.map((s) => (
            <tr key={s.scope}>
              <td>{s.scope}</td>
              <td>
                <span className={`chip ${tone(s.state)}`}>{s.state}</span>
              </td>
              <td>{s.actor || "—"}</td>
              <td>{fmtNs(s.changed_at)}</td>
              <td className="wrap">{s.reason || "—"}</td>
              <td>
                {s.state !== "ACTIVE" && (
                  <button
                    className="ghost"
                    disabled={!canRelease || busy}
                    title={canRelease ? `Release ${s.scope}` : "Releasing needs the admin role"}
                    onClick={() => setReleasing(s)}
                  >
                    Release…
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>

      {releasing && (
        <form className="panel-section confirm" onSubmit={release} aria-label="Confirm release">
          <h3>
            Release <code>{releasing.scope}</code> back to ACTIVE?
          </h3>
          <p className="muted">Trading resumes on this scope at once.</p>
          <label>
            Reason
            <input value={releaseReason} onChange={(e) => setReleaseReason(e.target.value)} maxLength={500} required />
          </label>
          <div className="row">
            <button className="danger" type="submit" disabled={busy || !releaseReason.trim()}>
              Yes, release {releasing.scope}
            </button>
            <button type="button" className="ghost" onClick={() => setReleasing(null)}>
              Cancel
            </button>
          </div>
        </form>
      )}

      <form className="panel-section" onSubmit={engage} aria-label="Engage the kill switch">
        <h3>Engage</h3>
        {!canEngage && <p className="notice">Engaging needs the trader role (you are {role}).</p>}
        <fieldset disabled={!canEngage || busy}>
          <div className="row">
            <label>
              Scope
              <input
                value={scope}
                onChange={(e) => setScope(e.target.value)}
                placeholder="global, strategy:NAME or symbol:SYM"
                pattern="global|strategy:[A-Za-z0-9._\-]{1,64}|symbol:[A-Za-z0-9._\-/:]{1,64}"
                required
              />
            </label>
            <label>
              Action
              <select value={action} onChange={(e) => setAction(e.target.value as "halt" | "reduce")}>
                <option value="halt">Halt (cancel open orders)</option>
                <option value="reduce">Reduce only</option>
              </select>
            </label>
          </div>
          <label>
            Reason (required)
            <input value={reason} onChange={(e) => setReason(e.target.value)} maxLength={500} required />
          </label>
          <button className="danger" type="submit" disabled={!canEngage || busy || !reason.trim()}>
            {action === "halt" ? "Halt" : "Reduce only"} {scope || "…"}
          </button>
        </fieldset>
      </form>
      {result && (
        <p className={`notice ${result.tone}`} role="status">
          {result.text}
        </p>
      )}
    </Modal>
  );
}
