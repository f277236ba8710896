import { useState, type FormEvent } from "react";
import type { Api } from "../api/client";
import { ok } from "../api/client";
import type { components } from "../api/schema";
import { atLeast, type Role } from "../api/session";
import { useApp, usePoll, useSession } from "../context";
import { fmtNum } from "../format";
import { Empty, Failure, messageOf, ReasonDialog, RoleButton } from "./common";

type Model = components["schemas"]["ModelOut"];
type Upload = components["schemas"]["Body_upload_model_models_post"];

/** A pending change that needs a reason: what the dialog says and the request it makes. */
interface Pending {
  title: string;
  confirm: string;
  danger?: boolean;
  run: (reason: string) => Promise<unknown>;
  reload: () => void;
}

/** The model registry (upload, promote, retire, delete), the strategies' switches, the risk limits. */
export function ModelsPage() {
  const { api } = useApp();
  const { user } = useSession();
  return user ? <ModelsAndStrategies api={api} role={user.role} /> : null;
}

export function ModelsAndStrategies({ api, role }: { api: Api; role: Role }) {
  const models = usePoll(() => ok(api.GET("/models")), 10_000, [api]);
  const strategies = usePoll(() => ok(api.GET("/strategies")), 10_000, [api]);
  const risk = usePoll(() => ok(api.GET("/risk")), 10_000, [api]);
  const [pending, setPending] = useState<Pending | null>(null);
  const [done, setDone] = useState<string | null>(null);

  function modelAction(m: Model, action: "promote" | "retire" | "delete") {
    const path = { name: m.name, version: m.version };
    const what = `${m.name} v${m.version}`;
    setPending({
      title: `${action[0].toUpperCase()}${action.slice(1)} ${what}`,
      confirm: `${action[0].toUpperCase()}${action.slice(1)} ${what}`,
      danger: action !== "promote",
      reload: models.reload,
      run: async (reason) => {
        const r =
          action === "delete"
            ? await ok(api.DELETE("/models/{name}/{version}", { params: { path, query: { reason } } }))
            : action === "promote"
              ? await ok(api.POST("/models/{name}/{version}/promote", { params: { path }, body: { reason } }))
              : await ok(api.POST("/models/{name}/{version}/retire", { params: { path }, body: { reason } }));
        setDone(r.changed ? `${what}: ${r.previous_state} → ${r.model.state}` : `${what} was already ${r.model.state}`);
      },
    });
  }

  function switchStrategy(name: string, enable: boolean) {
    setPending({
      title: `${enable ? "Enable" : "Disable"} ${name}`,
      confirm: `${enable ? "Enable" : "Disable"} ${name}`,
      danger: !enable,
      reload: strategies.reload,
      run: async (reason) => {
        const opts = { params: { path: { name } }, body: { reason } };
        const r = await ok(enable ? api.POST("/strategies/{name}/enable", opts) : api.POST("/strategies/{name}/disable", opts));
        setDone(`${name}: ${r.enabled ? "enabled" : "disabled"}${r.applied ? "" : " (applies when the engine starts)"}${r.detail ? ` — ${r.detail}` : ""}`);
      },
    });
  }

  const isAdmin = atLeast(role, "admin");
  return (
    <div className="page">
      {done && (
        <p className="notice good" role="status">
          {done}
        </p>
      )}
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
              <th>Reason</th>
              <th>By</th>
              <th>Actions</th>
            </tr>
          </thead>
          <tbody>
            {models.data?.length === 0 && <Empty cols={8} text="No models registered." />}
            {models.data?.map((m) => (
              <tr key={m.id}>
                <td>{m.name}</td>
                <td className="num">{m.version}</td>
                <td>{m.kind}</td>
                <td>
                  <span className={`chip ${m.state === "promoted" ? "good" : m.state === "registered" ? "idle" : "warn"}`}>{m.state}</span>
                </td>
                <td className="num" title={m.features.join(", ")}>
                  {m.features.length}
                </td>
                <td className="wrap">{m.reason}</td>
                <td>{m.created_by}</td>
                <td className="row">
                  <RoleButton role={role} least="admin" className="ghost" disabled={m.state === "promoted" || m.state === "deleted"} onClick={() => modelAction(m, "promote")} aria-label={`Promote ${m.name} v${m.version}`}>
                    Promote
                  </RoleButton>
                  <RoleButton role={role} least="admin" className="ghost" disabled={m.state === "retired" || m.state === "deleted"} onClick={() => modelAction(m, "retire")} aria-label={`Retire ${m.name} v${m.version}`}>
                    Retire
                  </RoleButton>
                  <RoleButton role={role} least="admin" className="ghost" disabled={m.state === "promoted" || m.state === "deleted"} onClick={() => modelAction(m, "delete")} aria-label={`Delete ${m.name} v${m.version}`}>
                    Delete
                  </RoleButton>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        <UploadForm api={api} allowed={isAdmin} role={role} onUploaded={(msg) => (setDone(msg), models.reload())} />
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
              <th>Last switch</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {strategies.data?.strategies.length === 0 && <Empty cols={8} text="No strategies configured." />}
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
                <td className="wrap">{s.switch ? `${s.switch.actor}: ${s.switch.reason}` : "—"}</td>
                <td>
                  {s.enabled ? (
                    <RoleButton role={role} least="trader" className="ghost" onClick={() => switchStrategy(s.name, false)} aria-label={`Disable ${s.name}`}>
                      Disable
                    </RoleButton>
                  ) : (
                    <RoleButton role={role} least="admin" className="ghost" onClick={() => switchStrategy(s.name, true)} aria-label={`Enable ${s.name}`}>
                      Enable
                    </RoleButton>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>

      <RiskView api={api} role={role} risk={risk.data} error={risk.error} onChanged={(msg) => (setDone(msg), risk.reload())} />

      {pending && <ReasonDialog {...pending} onDone={pending.reload} onClose={() => setPending(null)} />}
    </div>
  );
}

function UploadForm({ api, allowed, role, onUploaded }: { api: Api; allowed: boolean; role: Role; onUploaded: (msg: string) => void }) {
  const [file, setFile] = useState<File | null>(null);
  const [name, setName] = useState("");
  const [features, setFeatures] = useState("");
  const [classes, setClasses] = useState("");
  const [reason, setReason] = useState("");
  const [promote, setPromote] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function upload(e: FormEvent) {
    e.preventDefault();
    if (!file) return;
    setBusy(true);
    setError(null);
    const fields: Record<string, string | Blob> = { file, name, features, reason, promote: String(promote) };
    if (classes.trim()) fields.classes = classes;
    try {
      const r = await ok(
        api.POST("/models", {
          // the schema types the file as a string; the body really is multipart form data
          body: fields as unknown as Upload,
          bodySerializer: (b) => {
            const form = new FormData();
            // the file's name says its format (.onnx, .pkl ...): give it explicitly
            for (const [k, v] of Object.entries(b as unknown as Record<string, string | Blob>)) typeof v === "string" ? form.append(k, v) : form.append(k, v, file.name);
            return form;
          },
        }),
      );
      onUploaded(`${r.model.name} v${r.model.version} registered${r.promoted ? " and promoted" : ""}`);
    } catch (err) {
      setError(messageOf(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <form onSubmit={upload} aria-labelledby="upload-h">
      <h3 id="upload-h">Upload a model</h3>
      {!allowed && <p className="notice warn">Uploading needs the admin role (you are {role}).</p>}
      <fieldset disabled={!allowed || busy}>
        <div className="row">
          <label>
            Model file (.onnx)
            <input type="file" accept=".onnx,.pkl,.joblib,.pt,.pth" onChange={(e) => setFile(e.target.files?.[0] ?? null)} />
          </label>
          <label>
            Name
            <input value={name} onChange={(e) => setName(e.target.value)} required />
          </label>
          <label>
            Features (comma-separated, input order)
            <input value={features} onChange={(e) => setFeatures(e.target.value)} required />
          </label>
          <label>
            Classes (optional)
            <input value={classes} onChange={(e) => setClasses(e.target.value)} placeholder="-1,0,1" />
          </label>
        </div>
        <div className="row">
          <label>
            Upload reason
            <input value={reason} onChange={(e) => setReason(e.target.value)} required />
          </label>
          <label className="check">
            <input type="checkbox" checked={promote} onChange={(e) => setPromote(e.target.checked)} /> Promote now
          </label>
          <button className="primary" type="submit" disabled={!file}>
            Upload
          </button>
        </div>
      </fieldset>
      <Failure error={error} />
    </form>
  );
}

type Risk = components["schemas"]["RiskLimits"];

/** The limits in force (global, defaults, each symbol, kill triggers), the changes made, and an admin's edit. */
function RiskView({ api, role, risk, error, onChanged }: { api: Api; role: Role; risk: Risk | undefined; error: string | null; onChanged: (msg: string) => void }) {
  const allowed = atLeast(role, "admin");
  const [key, setKey] = useState("");
  const [value, setValue] = useState("");
  const [reason, setReason] = useState("");
  const [failure, setFailure] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const rows: [string, unknown][] = risk
    ? [
        ...Object.entries(risk.global).map(([k, v]) => [`global.${k}`, v] as [string, unknown]),
        ...Object.entries(risk.defaults).map(([k, v]) => [`defaults.${k}`, v] as [string, unknown]),
        ...Object.entries(risk.symbols).flatMap(([sym, lim]) => (risk.overrides[sym] ?? []).map((k) => [`symbols.${sym}.${k}`, lim[k]] as [string, unknown])),
        ...Object.entries(risk.kill_triggers).map(([k, v]) => [`kill_triggers.${k}`, v] as [string, unknown]),
      ]
    : [];

  async function change(reset: boolean) {
    setBusy(true);
    setFailure(null);
    try {
      const r = await ok(api.PUT("/risk", { body: { key: key.trim(), value: reset ? null : value, reason: reason.trim() } }));
      onChanged(r.detail || `${r.key} changed`);
      setValue("");
    } catch (e) {
      setFailure(messageOf(e));
    } finally {
      setBusy(false);
    }
  }

  return (
    <section className="glass card" aria-labelledby="risk-h">
      <div className="card-head">
        <h2 id="risk-h">Risk limits</h2>
        {risk && <span className="muted">{risk.risk_file}</span>}
      </div>
      <Failure error={error} />
      {risk?.changes_unknown && <p className="notice warn">Changes unknown: {risk.changes_unknown}</p>}
      <div className="two-col">
        <table className="grid" aria-label="Limits in force">
          <thead>
            <tr>
              <th>Key</th>
              <th className="num">Value</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {risk && rows.length === 0 && <Empty cols={3} text="No limits." />}
            {rows.map(([k, v]) => (
              <tr key={k}>
                <td>{k}</td>
                <td className="num">{typeof v === "object" ? JSON.stringify(v) : String(v)}</td>
                <td>
                  <RoleButton role={role} least="admin" className="ghost" onClick={() => (setKey(k), setValue(typeof v === "object" ? "" : String(v)))} aria-label={`Edit ${k}`}>
                    Edit
                  </RoleButton>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        <div>
          <form
            onSubmit={(e) => {
              e.preventDefault();
              void change(false);
            }}
            aria-label="Change a limit"
          >
            <h3>Change a limit</h3>
            {!allowed && <p className="notice warn">Changing limits needs the admin role (you are {role}).</p>}
            <fieldset disabled={!allowed || busy}>
              <label>
                Key
                <input value={key} onChange={(e) => setKey(e.target.value)} placeholder="symbols.AAPL.max_order_qty" required />
              </label>
              <label>
                Value
                <input value={value} onChange={(e) => setValue(e.target.value)} />
              </label>
              <label>
                Why (required)
                <input value={reason} onChange={(e) => setReason(e.target.value)} required />
              </label>
              <div className="row">
                <button className="primary" type="submit" disabled={!key.trim() || !value.trim() || !reason.trim()}>
                  Apply
                </button>
                <button type="button" className="ghost" disabled={!key.trim() || !reason.trim()} onClick={() => void change(true)}>
                  Back to the file's value
                </button>
              </div>
            </fieldset>
            <Failure error={failure} />
          </form>
          <h3>Changes while running</h3>
          <table className="grid" aria-label="Risk changes">
            <thead>
              <tr>
                <th>Key</th>
                <th>Value</th>
                <th>By</th>
                <th>Why</th>
                <th>At</th>
              </tr>
            </thead>
            <tbody>
              {risk?.changes.length === 0 && <Empty cols={5} text="None: the file's limits are in force." />}
              {risk?.changes.map((c) => (
                <tr key={`${c.key}@${c.changed_at}`}>
                  <td>{c.key}</td>
                  <td>{c.value}</td>
                  <td>{c.actor}</td>
                  <td className="wrap">{c.reason}</td>
                  <td>{c.changed_at}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </div>
    </section>
  );
}
