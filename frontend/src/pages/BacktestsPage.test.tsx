import { render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { fakeApi } from "../test/fakeApi";
import { Backtests, parseConfig } from "./BacktestsPage";

const JOB = {
  id: 41, type: "backtest", status: "queued", progress: 0, progress_note: "", error: "", payload: {}, result: null, attempts: 0,
  cancel_requested: false, created_at: null, created_by: "api:tina", finished_at: null, heartbeat_at: null, parent_id: null,
  started_at: null, task_id: "", worker: "",
};

function run(id: number, label: string, total_return: number) {
  return {
    id, label, status: "completed", files: ["synthetic:2000"], ticks: 2000, orders: 10, fills: 8, duration_s: 1.5, created_by: "api:tina",
    created_at: "2026-01-01T00:00:00Z", finished_at: null, config_digest: "d", error: "", job_id: id + 40, config: {},
    metrics: { total_return, max_drawdown: -0.05, sharpe: 1.25 },
  };
}

function curve(id: number, rise: number) {
  const series = Array.from({ length: 5 }, (_, i) => ({ ts: i, equity: 100_000 + i * rise, cash: 0, drawdown: i === 3 ? -0.01 : 0, gross_exposure: 0 }));
  return { backtest_id: id, points: series.length, series };
}

function routes() {
  let polls = 0;
  return {
    "GET /backtests": [run(2, "wide stops", 0.031), run(1, "base", -0.012)],
    "POST /backtests": { status: 202, body: JOB },
    "GET /jobs/41": () => {
      polls += 1;
      return polls < 2 ? { ...JOB, status: "running", progress: 0.5, progress_note: "replaying" } : { ...JOB, status: "completed", progress: 1, result: { backtest_id: 2 } };
    },
    "GET /backtests/1": run(1, "base", -0.012),
    "GET /backtests/2": run(2, "wide stops", 0.031),
    "GET /backtests/1/equity": curve(1, -10),
    "GET /backtests/2/equity": curve(2, 25),
  };
}

describe("Backtests page", () => {
  it("keeps a viewer from launching, with the reason", async () => {
    const { api, writes } = fakeApi(routes());
    render(<Backtests api={api} role="viewer" />);
    expect(screen.getByText(/Launching needs the trader role/)).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Launch" })).toBeDisabled();
    expect(writes()).toEqual([]);
  });

  it("launches a synthetic run with config, watches its job and opens the result", async () => {
    const { api, calls } = fakeApi(routes());
    render(<Backtests api={api} role="trader" jobPollMs={10} />);
    const ticks = screen.getByLabelText("Ticks");
    await userEvent.clear(ticks);
    await userEvent.type(ticks, "2000");
    await userEvent.type(screen.getByLabelText(/^Config/), "AITRADER_RISK_MAX_QTY=5\n# a comment\nAITRADER_X = on");
    await userEvent.type(screen.getByLabelText("Label"), "wide stops");
    await userEvent.click(screen.getByRole("button", { name: "Launch" }));

    const post = calls.find((c) => c.method === "POST");
    expect(post).toMatchObject({
      path: "/backtests",
      body: { synthetic: 2000, symbols: 4, label: "wide stops", config: { AITRADER_RISK_MAX_QTY: "5", AITRADER_X: "on" } },
    });
    expect(await screen.findByRole("heading", { name: "Job #41" })).toBeInTheDocument();
    await waitFor(() => expect(screen.getByTestId("job-status")).toHaveTextContent("completed"));
    // the finished job's backtest opens: its metrics and its curve
    expect(await screen.findByRole("heading", { name: "Run #2" })).toBeInTheDocument();
    const metrics = await screen.findByRole("table", { name: "Metrics" });
    await waitFor(() => expect(metrics).toHaveTextContent("sharpe"));
    expect(metrics).toHaveTextContent("0.031");
    expect(screen.getAllByTestId("curve-equity")).toHaveLength(1);
    expect(screen.getAllByTestId("curve-drawdown")).toHaveLength(1);
  });

  it("sends file paths instead of synthetic ticks", async () => {
    const { api, calls } = fakeApi(routes());
    render(<Backtests api={api} role="admin" jobPollMs={10} />);
    await userEvent.click(screen.getByLabelText("Tick files"));
    await userEvent.type(screen.getByLabelText(/^Files on the worker/), "/data/a.parquet\n\n/data/b.csv");
    await userEvent.click(screen.getByRole("button", { name: "Launch" }));
    const post = calls.find((c) => c.method === "POST");
    expect(post?.body).toMatchObject({ files: ["/data/a.parquet", "/data/b.csv"], synthetic: 0 });
  });

  it("compares two runs side by side", async () => {
    const { api } = fakeApi(routes());
    render(<Backtests api={api} role="viewer" />);
    await userEvent.click(await screen.findByLabelText("Select run #1"));
    await userEvent.click(screen.getByLabelText("Select run #2"));
    expect(await screen.findByRole("heading", { name: "Compare #1 vs #2" })).toBeInTheDocument();
    const metrics = screen.getByRole("table", { name: "Metrics" });
    await waitFor(() => expect(within(metrics).getAllByRole("columnheader")).toHaveLength(3));
    await waitFor(() => expect(screen.getAllByTestId("curve-equity")).toHaveLength(2));
    const totalReturn = within(metrics).getByText("total_return").closest("tr")!;
    expect(totalReturn).toHaveTextContent("-0.012");
    expect(totalReturn).toHaveTextContent("0.031");
  });

  it("refuses a config line without =", () => {
    expect(() => parseConfig("AITRADER_A=1\nnonsense")).toThrow(/line 2/);
  });
});
