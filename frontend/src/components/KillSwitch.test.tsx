import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";
import createClient from "openapi-fetch";
import type { paths } from "../api/schema";
import type { Role } from "../api/session";
import { KillSwitchDialog } from "./KillSwitch";

const STATE = {
  global_state: "HALTED",
  scopes: [
    { scope: "global", state: "HALTED", reason: "bad prints", actor: "api:tina", changed_at: 1_700_000_000_000_000_000 },
    { scope: "symbol:AAA", state: "ACTIVE", reason: "ok again", actor: "api:ops", changed_at: 1_700_000_100_000_000_000 },
  ],
};

function setup(role: Role) {
  const calls: { url: string; body: unknown }[] = [];
  const fetchImpl = vi.fn(async (req: Request) => {
    const body = await req.json();
    calls.push({ url: new URL(req.url).pathname, body });
    return new Response(JSON.stringify({ ok: true, scope: body.scope, state: "HALTED", detail: "", via: "bus", request_id: "r" }), {
      status: 200,
      headers: { "Content-Type": "application/json" },
    });
  });
  const api = createClient<paths>({ baseUrl: "http://api", fetch: fetchImpl as unknown as typeof fetch });
  const onChanged = vi.fn();
  render(<KillSwitchDialog api={api} role={role} state={STATE} error={null} onChanged={onChanged} onClose={() => undefined} />);
  return { calls, onChanged };
}

describe("KillSwitchDialog", () => {
  it("shows every scope with who changed it", () => {
    setup("viewer");
    const table = screen.getByRole("table", { name: "Trading state per scope" });
    expect(table).toHaveTextContent("global");
    expect(table).toHaveTextContent("api:tina");
    expect(table).toHaveTextContent("bad prints");
    expect(table).toHaveTextContent("symbol:AAA");
  });

  it("lets a viewer do nothing", () => {
    setup("viewer");
    expect(screen.getByText(/Engaging needs the trader role/)).toBeInTheDocument();
    expect(screen.getByLabelText("Reason (required)")).toBeDisabled();
    expect(screen.getByRole("button", { name: /^Halt/ })).toBeDisabled();
    expect(screen.getByRole("button", { name: "Release…" })).toBeDisabled();
  });

  it("lets a trader engage with a reason, but not release", async () => {
    const { calls, onChanged } = setup("trader");
    const halt = screen.getByRole("button", { name: /^Halt/ });
    expect(halt).toBeDisabled(); // no reason yet
    await userEvent.type(screen.getByLabelText("Reason (required)"), "runaway strategy");
    await userEvent.click(halt);
    expect(calls).toEqual([{ url: "/kill-switch/engage", body: { scope: "global", action: "halt", reason: "runaway strategy" } }]);
    expect(onChanged).toHaveBeenCalled();
    expect(await screen.findByRole("status")).toHaveTextContent("global: HALTED");
    expect(screen.getByRole("button", { name: "Release…" })).toBeDisabled();
  });

  it("lets an admin release only after confirming with a reason", async () => {
    const { calls } = setup("admin");
    await userEvent.click(screen.getByRole("button", { name: "Release…" }));
    const confirm = screen.getByRole("button", { name: "Yes, release global" });
    expect(confirm).toBeDisabled();
    expect(calls).toEqual([]);
    await userEvent.type(screen.getByLabelText("Reason"), "feed fixed");
    await userEvent.click(confirm);
    expect(calls).toEqual([{ url: "/kill-switch/release", body: { scope: "global", reason: "feed fixed" } }]);
  });
});
