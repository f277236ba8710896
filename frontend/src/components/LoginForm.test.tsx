import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";
import { Session } from "../api/session";
import { LoginForm } from "./LoginForm";

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}

const TOKENS = { access_token: "a1", refresh_token: "r1", token_type: "bearer", expires_in: 900, refresh_expires_in: 28800, role: "trader" };

describe("LoginForm", () => {
  it("signs in with the typed credentials and keeps the role", async () => {
    const fetchImpl = vi.fn(async () => json(200, TOKENS));
    const session = new Session(fetchImpl as unknown as typeof fetch);
    render(<LoginForm session={session} why={null} />);
    const submit = screen.getByRole("button", { name: "Sign in" });
    expect(submit).toBeDisabled();
    await userEvent.type(screen.getByLabelText("Username"), "ops");
    await userEvent.type(screen.getByLabelText("Password"), "a long real password{Enter}");
    expect(fetchImpl).toHaveBeenCalledWith("/auth/login", expect.objectContaining({ method: "POST" }));
    const [, init] = fetchImpl.mock.calls[0] as unknown as [string, RequestInit];
    expect(JSON.parse(String(init.body))).toEqual({ username: "ops", password: "a long real password" });
    expect(session.current).toMatchObject({ username: "ops", role: "trader", access: "a1" });
  });

  it("shows the API's message on a refused login and clears the password", async () => {
    const session = new Session((async () =>
      json(401, { error: { code: "invalid_credentials", message: "invalid username or password", request_id: "x", details: null } })) as unknown as typeof fetch);
    render(<LoginForm session={session} why={null} />);
    await userEvent.type(screen.getByLabelText("Username"), "ops");
    await userEvent.type(screen.getByLabelText("Password"), "wrong-password{Enter}");
    expect(await screen.findByRole("alert")).toHaveTextContent("invalid username or password");
    expect(screen.getByLabelText("Password")).toHaveValue("");
    expect(session.current).toBeNull();
  });

  it("says the session expired when that is why it is shown", () => {
    render(<LoginForm session={new Session(vi.fn() as unknown as typeof fetch)} why="expired" />);
    expect(screen.getByRole("status")).toHaveTextContent("Your session expired");
  });
});
