import { render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { fakeApi } from "../test/fakeApi";
import { ModelsAndStrategies } from "./ModelsPage";

function model(version: number, state: string) {
  return {
    id: version, name: "momo", version, kind: "onnx", state, features: ["ret_1", "vol_20"], metrics: {}, onnx_sha256: "x", path: "p",
    reason: "", created_at: null, created_by: "api:ops", promoted_at: null, promoted_by: null, retired_at: null, retired_by: null,
  };
}

function strategy(name: string, enabled: boolean) {
  return {
    name, enabled, enabled_in_file: true, running: true, allocation: 0.5, sizing: "fixed", detectors: ["breakout"], counters: {},
    fusion: null, models: [], stops: null, switch: null, symbols: "*",
  };
}

const RISK = {
  risk_file: "config/risk.yaml", global: { max_gross_notional: "1000000" }, defaults: { max_order_qty: "100" },
  symbols: { AAA: { max_order_qty: "10" } }, overrides: { AAA: ["max_order_qty"] }, kill_triggers: { max_daily_loss: "5000" },
  changes: [{ key: "defaults.max_order_qty", value: "100", actor: "api:ops", reason: "calm day", changed_at: "2026-01-01T00:00:00Z" }],
  changes_unknown: null,
};

function routes() {
  return {
    "GET /models": [model(2, "promoted"), model(3, "registered")],
    "GET /strategies": { strategies: [strategy("trend", true), strategy("meanrev", false)] },
    "GET /risk": RISK,
    "POST /models/momo/3/promote": { changed: true, previous_state: "registered", model: model(3, "promoted"), replaced: model(2, "registered") },
    "DELETE /models/momo/3": { changed: true, previous_state: "registered", model: model(3, "deleted"), replaced: null },
    "POST /strategies/trend/disable": { name: "trend", enabled: false, applied: true, detail: "", request_id: "r" },
    "PUT /risk": { ok: true, key: "symbols.AAA.max_order_qty", detail: "symbols.AAA.max_order_qty: 10 -> 5", request_id: "r", via: "bus" },
    "POST /models": { status: 201, body: { model: model(4, "registered"), promoted: false } },
  };
}

describe("Models & strategies page", () => {
  it("disables a trader's admin actions with a tooltip saying why, but lets them disable a strategy", async () => {
    const { api, calls } = fakeApi(routes());
    render(<ModelsAndStrategies api={api} role="trader" />);
    const promote = await screen.findByRole("button", { name: "Promote momo v3" });
    expect(promote).toBeDisabled();
    expect(promote).toHaveAttribute("title", "Needs the admin role (you are trader)");
    expect(screen.getByRole("button", { name: "Delete momo v3" })).toBeDisabled();
    expect(await screen.findByRole("button", { name: "Enable meanrev" })).toBeDisabled();
    expect(screen.getByRole("button", { name: "Upload" })).toBeDisabled();
    expect(screen.getByText(/Changing limits needs the admin role/)).toBeInTheDocument();

    await userEvent.click(screen.getByRole("button", { name: "Disable trend" }));
    const dialog = screen.getByRole("dialog");
    const confirm = within(dialog).getByRole("button", { name: "Disable trend" });
    expect(confirm).toBeDisabled(); // no reason yet
    await userEvent.type(within(dialog).getByLabelText("Reason (required)"), "spread too wide");
    await userEvent.click(confirm);
    expect(calls.filter((c) => c.method !== "GET")).toEqual([{ method: "POST", path: "/strategies/trend/disable", query: {}, body: { reason: "spread too wide" } }]);
    expect(await screen.findByRole("status")).toHaveTextContent("trend: disabled");
  });

  it("lets a viewer change nothing", async () => {
    const { api } = fakeApi(routes());
    render(<ModelsAndStrategies api={api} role="viewer" />);
    expect(await screen.findByRole("button", { name: "Disable trend" })).toBeDisabled();
    expect(screen.getByRole("button", { name: "Disable trend" })).toHaveAttribute("title", "Needs the trader role (you are viewer)");
  });

  it("lets an admin promote and delete a version with a reason", async () => {
    const { api, writes } = fakeApi(routes());
    render(<ModelsAndStrategies api={api} role="admin" />);
    // the promoted version cannot be promoted again nor deleted (the API answers 409)
    expect(await screen.findByRole("button", { name: "Delete momo v2" })).toBeDisabled();
    await userEvent.click(screen.getByRole("button", { name: "Promote momo v3" }));
    await userEvent.type(screen.getByLabelText("Reason (required)"), "better sharpe");
    await userEvent.click(within(screen.getByRole("dialog")).getByRole("button", { name: "Promote momo v3" }));
    expect(await screen.findByRole("status")).toHaveTextContent("momo v3: registered → promoted");

    await userEvent.click(screen.getByRole("button", { name: "Delete momo v3" }));
    await userEvent.type(screen.getByLabelText("Reason (required)"), "superseded");
    await userEvent.click(within(screen.getByRole("dialog")).getByRole("button", { name: "Delete momo v3" }));
    await waitFor(() => expect(screen.queryByRole("dialog")).toBeNull());
    expect(writes()).toEqual([
      { method: "POST", path: "/models/momo/3/promote", query: {}, body: { reason: "better sharpe" } },
      { method: "DELETE", path: "/models/momo/3", query: { reason: "superseded" }, body: null },
    ]);
  });

  it("uploads a model as multipart form data", async () => {
    const { api, writes } = fakeApi(routes());
    render(<ModelsAndStrategies api={api} role="admin" />);
    await userEvent.upload(screen.getByLabelText("Model file (.onnx)"), new File([new Uint8Array([1, 2, 3])], "momo.onnx"));
    await userEvent.type(screen.getByLabelText("Name"), "momo");
    await userEvent.type(screen.getByLabelText(/^Features/), "ret_1,vol_20");
    await userEvent.type(screen.getByLabelText("Upload reason"), "first cut");
    await userEvent.click(screen.getByRole("button", { name: "Upload" }));
    expect(await screen.findByRole("status")).toHaveTextContent("momo v4 registered");
    // a file part (its name does not survive jsdom's FormData going through Node's Request: a browser keeps it)
    expect(writes()).toEqual([
      { method: "POST", path: "/models", query: {}, body: { file: expect.stringMatching(/^file:/), name: "momo", features: "ret_1,vol_20", reason: "first cut", promote: "false" } },
    ]);
  });

  it("shows the limits and lets an admin change one", async () => {
    const { api, writes } = fakeApi(routes());
    render(<ModelsAndStrategies api={api} role="admin" />);
    const limits = await screen.findByRole("table", { name: "Limits in force" });
    await waitFor(() => expect(limits).toHaveTextContent("symbols.AAA.max_order_qty"));
    expect(limits).toHaveTextContent("kill_triggers.max_daily_loss");
    expect(screen.getByRole("table", { name: "Risk changes" })).toHaveTextContent("calm day");
    await userEvent.click(screen.getByRole("button", { name: "Edit symbols.AAA.max_order_qty" }));
    expect(screen.getByLabelText("Key")).toHaveValue("symbols.AAA.max_order_qty");
    await userEvent.clear(screen.getByLabelText("Value"));
    await userEvent.type(screen.getByLabelText("Value"), "5");
    await userEvent.type(screen.getByLabelText("Why (required)"), "thin book");
    await userEvent.click(screen.getByRole("button", { name: "Apply" }));
    expect(await screen.findByRole("status")).toHaveTextContent("10 -> 5");
    expect(writes()).toEqual([{ method: "PUT", path: "/risk", query: {}, body: { key: "symbols.AAA.max_order_qty", value: "5", reason: "thin book" } }]);
  });
});
