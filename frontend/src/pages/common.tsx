import { useState, type ButtonHTMLAttributes, type FormEvent } from "react";
import { atLeast, type Role } from "../api/session";
import { Modal } from "../components/Modal";

/** Shared pieces of the pages: an error line, an empty table row, a role-gated button. */

export function Failure({ error }: { error: string | null | undefined }) {
  return error ? <p className="notice bad">{error}</p> : null;
}

export function Empty({ cols, text }: { cols: number; text: string }) {
  return (
    <tr>
      <td colSpan={cols} className="muted">
        {text}
      </td>
    </tr>
  );
}

/**
 * A button that is disabled below `least`, its tooltip saying which role it needs (the API checks
 * again; this only spares a 403). Enabled, it keeps its own `disabled` and `title`.
 */
export function RoleButton({ role, least, ...rest }: { role: Role; least: Role } & ButtonHTMLAttributes<HTMLButtonElement>) {
  const allowed = atLeast(role, least);
  return <button {...rest} disabled={!allowed || rest.disabled} title={allowed ? rest.title : `Needs the ${least} role (you are ${role})`} />;
}

/** The error of an action as one line. */
export function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * A change that must say why (audited by the API): a dialog with a required reason and one
 * confirming button. `run` does the request; its error stays in the dialog, success closes it.
 */
export function ReasonDialog(props: { title: string; confirm: string; danger?: boolean; run: (reason: string) => Promise<unknown>; onDone: () => void; onClose: () => void }) {
  const [reason, setReason] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await props.run(reason.trim());
      props.onDone();
      props.onClose();
    } catch (err) {
      setError(messageOf(err));
    } finally {
      setBusy(false);
    }
  }
  return (
    <Modal title={props.title} onClose={props.onClose}>
      <form onSubmit={submit}>
        <fieldset disabled={busy}>
          <label>
            Reason (required)
            <input value={reason} onChange={(e) => setReason(e.target.value)} maxLength={500} />
          </label>
          <div className="row">
            <button type="submit" className={props.danger ? "danger" : "primary"} disabled={!reason.trim()}>
              {props.confirm}
            </button>
            <button type="button" className="ghost" onClick={props.onClose}>
              Cancel
            </button>
          </div>
        </fieldset>
      </form>
      <Failure error={error} />
    </Modal>
  );
}
