import { afterEach, describe, expect, it, vi } from "vitest";
import { Session } from "./session";

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}

const pair = (n: number, expiresIn = 900) => ({
  access_token: `a${n}`, refresh_token: `r${n}`, token_type: "bearer", expires_in: expiresIn, refresh_expires_in: 28800, role: "viewer",
});

afterEach(() => vi.useRealTimers());

describe("Session", () => {
  it("rotates the refresh token before the access token expires", async () => {
    vi.useFakeTimers();
    const sent: string[] = [];
    let n = 1;
    const session = new Session((async (url: string, init?: RequestInit) => {
      if (url === "/auth/refresh") sent.push(JSON.parse(String(init?.body)).refresh_token);
      return json(200, pair(n++, 60));
    }) as unknown as typeof fetch);
    await session.login("ops", "pw");
    expect(session.current?.access).toBe("a1");
    await vi.advanceTimersByTimeAsync(30_000); // 60 s life, refreshed 30 s before it ends
    expect(sent).toEqual(["r1"]);
    expect(session.current?.access).toBe("a2");
    await vi.advanceTimersByTimeAsync(30_000);
    expect(sent).toEqual(["r1", "r2"]); // each refresh token used once
  });

  it("refreshes once on a 401 and retries the request with the new token", async () => {
    const seen: string[] = [];
    let n = 1;
    const session = new Session((async (input: RequestInfo) => {
      if (typeof input === "string") return json(200, pair(n++)); // login, refresh
      seen.push(input.headers.get("Authorization") ?? "");
      return seen.length === 1 ? json(401, { error: { code: "unauthorized", message: "expired" } }) : json(200, []);
    }) as unknown as typeof fetch);
    await session.login("ops", "pw");
    const res = await session.authedFetch(new Request("http://x/orders"));
    expect(res.status).toBe(200);
    expect(seen).toEqual(["Bearer a1", "Bearer a2"]);
  });

  it("ends the session as expired when the refresh is refused", async () => {
    const session = new Session((async (url: string) =>
      url === "/auth/login" ? json(200, pair(1)) : json(401, { error: { code: "refresh_token_reused", message: "reused" } })) as unknown as typeof fetch);
    const events: (string | null)[] = [];
    session.subscribe((_s, why) => events.push(why));
    await session.login("ops", "pw");
    expect(await session.refresh()).toBe(false);
    expect(session.current).toBeNull();
    expect(events).toEqual([null, "expired"]);
    expect(sessionStorage.getItem("aitrader.session")).toBeNull();
  });
});
