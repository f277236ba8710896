import type { components } from "./schema";

export type TokenPair = components["schemas"]["TokenPair"];
export type Role = "viewer" | "trader" | "admin";

const RANK: Record<Role, number> = { viewer: 0, trader: 1, admin: 2 };
const STORAGE_KEY = "aitrader.session";
/** Refresh this long before the access token expires (or at 80 % of its life when that is shorter). */
const REFRESH_MARGIN_MS = 30_000;

export interface SessionState {
  username: string;
  role: Role;
  access: string;
  refresh: string;
  /** ms since the epoch */
  accessExpiresAt: number;
  refreshExpiresAt: number;
}

/** Why the user is on the login screen: signed out by choice, or the session could not be kept. */
export type SignedOutReason = "signed_out" | "expired";

export function atLeast(role: Role | undefined, least: Role): boolean {
  return role !== undefined && RANK[role] >= RANK[least];
}

export class ApiFailure extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The API's one error shape ({"error": {code, message, ...}}) turned into an ApiFailure. */
export async function failureOf(res: Response): Promise<ApiFailure> {
  try {
    const body = await res.json();
    if (body?.error?.message) return new ApiFailure(res.status, body.error.code, body.error.message);
  } catch {
    /* not JSON: fall through */
  }
  return new ApiFailure(res.status, "http_" + res.status, `${res.status} ${res.statusText || "error"}`);
}

type Listener = (s: SessionState | null, why: SignedOutReason | null) => void;

/**
 * The login's tokens. Kept in sessionStorage — per tab, so two tabs never present the same
 * single-use refresh token (the API would revoke the family as stolen) — and refreshed before the
 * access token expires. When a refresh fails the session ends with reason "expired" and the
 * panel shows the login form saying so.
 */
export class Session {
  private state: SessionState | null = null;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private inflight: Promise<boolean> | null = null;
  private listeners = new Set<Listener>();

  constructor(private fetchImpl: typeof fetch = (...a) => fetch(...a)) {
    const saved = sessionStorage.getItem(STORAGE_KEY);
    if (saved) {
      try {
        const s = JSON.parse(saved) as SessionState;
        if (s.refreshExpiresAt > Date.now()) this.set(s);
        else sessionStorage.removeItem(STORAGE_KEY);
      } catch {
        sessionStorage.removeItem(STORAGE_KEY);
      }
    }
  }

  get current(): SessionState | null {
    return this.state;
  }

  subscribe(fn: Listener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  async login(username: string, password: string): Promise<void> {
    const res = await this.fetchImpl("/auth/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username, password }),
    });
    if (!res.ok) throw await failureOf(res);
    this.accept(username, (await res.json()) as TokenPair);
  }

  /** Exchange the refresh token for a new pair (one at a time); false when the session is over. */
  refresh(): Promise<boolean> {
    if (!this.state) return Promise.resolve(false);
    this.inflight ??= this.doRefresh().finally(() => {
      this.inflight = null;
    });
    return this.inflight;
  }

  async logout(): Promise<void> {
    const s = this.state;
    this.end("signed_out");
    if (s) {
      await this.fetchImpl("/auth/logout", { method: "POST", headers: { Authorization: `Bearer ${s.access}` } }).catch(
        () => undefined,
      );
    }
  }

  /** The session could not be kept (a refresh refused, a token rejected after a refresh). */
  expire(): void {
    if (this.state) this.end("expired");
  }

  /** fetch with the access token; on a 401 refresh once and retry, and end the session when that fails. */
  authedFetch = async (input: Request): Promise<Response> => {
    const retry = input.clone();
    const res = await this.fetchImpl(this.withToken(input));
    if (res.status !== 401 || !this.state) return res;
    if (!(await this.refresh())) return res;
    const again = await this.fetchImpl(this.withToken(retry));
    if (again.status === 401) this.expire();
    return again;
  };

  private withToken(req: Request): Request {
    if (this.state) req.headers.set("Authorization", `Bearer ${this.state.access}`);
    return req;
  }

  private async doRefresh(): Promise<boolean> {
    const s = this.state;
    if (!s) return false;
    let res: Response;
    try {
      res = await this.fetchImpl("/auth/refresh", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: s.refresh }),
      });
    } catch {
      // API unreachable: keep the session and try again shortly (the token may still be valid)
      this.schedule(5_000);
      return false;
    }
    if (!res.ok) {
      this.expire();
      return false;
    }
    this.accept(s.username, (await res.json()) as TokenPair);
    return true;
  }

  private accept(username: string, t: TokenPair): void {
    const now = Date.now();
    this.set({
      username,
      role: t.role as Role,
      access: t.access_token,
      refresh: t.refresh_token,
      accessExpiresAt: now + t.expires_in * 1000,
      refreshExpiresAt: now + t.refresh_expires_in * 1000,
    });
  }

  private set(s: SessionState): void {
    this.state = s;
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(s));
    const life = s.accessExpiresAt - Date.now();
    this.schedule(Math.max(1_000, Math.min(life - REFRESH_MARGIN_MS, life * 0.8)));
    this.emit(null);
  }

  private schedule(ms: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.refresh(), ms);
  }

  private end(why: SignedOutReason): void {
    clearTimeout(this.timer);
    this.state = null;
    sessionStorage.removeItem(STORAGE_KEY);
    this.emit(why);
  }

  private emit(why: SignedOutReason | null): void {
    for (const fn of this.listeners) fn(this.state, why);
  }
}
