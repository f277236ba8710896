import { render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { fakeApi } from "../test/fakeApi";
import { JobsAndSuggestions } from "./JobsPage";

function job(id: number, status: string, created_by: string) {
  return {
    id, type: "backtest", status, progress: status === "running" ? 0.4 : 0, progress_note: "replaying", error: "", payload: {}, result: null,
    attempts: 1, cancel_requested: false, created_at: null, created_by, finished_at: null, heartbeat_at: null, parent_id: null,
    started_at: null, task_id: "", worker: "",
  };
}

const RUN = {
  id: 5, job_id: 9, status: "completed", prompt: "scan my portfolio", provider: "offline", model: "rules", attempts: 1, context_digest: "d",
  created_at: null, created_by: "api:tina", error: "", finished_at: null, started_at: null, summary: "One position is too large.",
  suggestions: [{ symbol: "AAA", action: "reduce", size: "0.5", size_unit: "position_fraction", confidence: 0.72, rationale: "40 % of equity in one name" }],
};

function routes() {
  return {
    "GET /jobs": [job(3, "running", "api:tina"), job(2, "queued", "api:bob"), job(1, "completed", "api:tina")],
    "POST /jobs/3/cancel": { outcome: "requested", job: { ...job(3, "running", "api:tina"), cancel_requested: true } },
    "POST /suggestions": { status: 201, body: RUN },
  };
}

describe("Jobs & suggestions page", () => {
  it("lets a trader cancel their own running job, not another user's, nor a finished one", async () => {
    const { api, writes } = fakeApi(routes());
    render(<JobsAndSuggestions api={api} role="trader" username="tina" />);
    const mine = await screen.findByRole("button", { name: "Cancel job #3" });
    const theirs = screen.getByRole("button", { name: "Cancel job #2" });
    expect(theirs).toBeDisabled();
    expect(theirs).toHaveAttribute("title", "A trader cancels only their own jobs");
    expect(screen.queryByRole("button", { name: "Cancel job #1" })).toBeNull();
    await userEvent.click(mine);
    expect(await screen.findByRole("status")).toHaveTextContent("Job #3 stops at its next check point.");
    expect(writes()).toEqual([{ method: "POST", path: "/jobs/3/cancel", query: {}, body: null }]);
  });

  it("lets an admin cancel anyone's job and a viewer nobody's", async () => {
    const admin = fakeApi(routes());
    const { unmount } = render(<JobsAndSuggestions api={admin.api} role="admin" username="ops" />);
    expect(await screen.findByRole("button", { name: "Cancel job #2" })).toBeEnabled();
    unmount();
    const viewer = fakeApi(routes());
    render(<JobsAndSuggestions api={viewer.api} role="viewer" username="vic" />);
    expect(await screen.findByRole("button", { name: "Cancel job #3" })).toBeDisabled();
    expect(screen.getByRole("button", { name: "Cancel job #3" })).toHaveAttribute("title", "Needs the trader role (you are viewer)");
    expect(screen.getByRole("button", { name: "Ask" })).toBeDisabled();
    expect(screen.getByText(/Asking needs the trader role/)).toBeInTheDocument();
  });

  it("asks for suggestions and shows the structured answer", async () => {
    const { api, writes } = fakeApi(routes());
    render(<JobsAndSuggestions api={api} role="trader" username="tina" />);
    await userEvent.type(screen.getByLabelText("Prompt"), "scan my portfolio");
    await userEvent.click(screen.getByRole("button", { name: "Ask" }));
    const table = await screen.findByRole("table", { name: "Suggestions" });
    const row = within(table).getAllByRole("row")[1];
    for (const text of ["AAA", "reduce", "0.5", "position fraction", "72 %", "40 % of equity in one name"]) expect(row).toHaveTextContent(text);
    expect(screen.getByText("One position is too large.")).toBeInTheDocument();
    await waitFor(() => expect(writes()).toEqual([{ method: "POST", path: "/suggestions", query: {}, body: { prompt: "scan my portfolio" } }]));
  });
});
