import { useState, type FormEvent } from "react";
import type { Session, SignedOutReason } from "../api/session";

/** Username and password; says why when the last session ended on its own. */
export function LoginForm({ session, why }: { session: Session; why: SignedOutReason | null }) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await session.login(username.trim(), password);
    } catch (err) {
      setError((err as Error).message || "login failed");
      setPassword("");
    } finally {
      setBusy(false);
    }
  }

  return (
    <main className="login-screen">
      <form className="glass login-card" onSubmit={submit} aria-labelledby="login-title">
        <h1 id="login-title">AITrader</h1>
        <p className="muted">Control panel — sign in</p>
        {why === "expired" && (
          <p className="notice warn" role="status">
            Your session expired. Sign in again to continue.
          </p>
        )}
        <label>
          Username
          <input autoFocus autoComplete="username" value={username} onChange={(e) => setUsername(e.target.value)} required />
        </label>
        <label>
          Password
          <input
            type="password"
            autoComplete="current-password"
            value={password}
            onChange={(e) => setPassword(e.target.value)}
            required
          />
        </label>
        {error && (
          <p className="notice bad" role="alert">
            {error}
          </p>
        )}
        <button className="primary" type="submit" disabled={busy || !username || !password}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}
