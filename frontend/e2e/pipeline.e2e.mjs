// End-to-end against the whole pipeline replaying real files: the built panel served by a real API, the four
// services and a job worker running, Debian's Chromium driving the panel.
// Run by tests/frontend/test_panel.py (test_panel_against_the_pipeline_replaying_a_real_file), which starts
// the services and passes, besides the pipeline's environment (REDIS_URL, DATABASE_URL, AITRADER_HOME ...):
//   PANEL_URL, PANEL_USERS (JSON {admin: [username, password], ...}), PANEL_SHOTS (screenshots),
//   PANEL_PYTHON (the interpreter for `python -m backend.cli replay|report`), PANEL_ROOT (the checkout),
//   PANEL_DAY1 / PANEL_DAY2 (JSON lists of tick files: replayed before / while the kill switch is engaged),
//   PANEL_BACKTEST (a tick file for the worker's backtest), PANEL_MODEL (an .onnx file), PANEL_FEATURES (its inputs),
//   CHROMIUM (default /usr/bin/chromium).
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { launchChromium, screenshot, signIn, waitKillState } from "./common.mjs";

const env = process.env;
const base = env.PANEL_URL;
const users = JSON.parse(env.PANEL_USERS ?? "{}");
const shots = env.PANEL_SHOTS ?? "e2e-shots";
for (const k of ["PANEL_URL", "PANEL_PYTHON", "PANEL_ROOT", "PANEL_DAY1", "PANEL_DAY2", "PANEL_BACKTEST", "PANEL_MODEL", "PANEL_FEATURES"]) {
  if (!env[k]) throw new Error(`${k} is required`);
}
if (!users.admin) throw new Error("PANEL_USERS needs an admin");
mkdirSync(shots, { recursive: true });

function cli(...args) {
  const out = execFileSync(env.PANEL_PYTHON, ["-m", "backend.cli", ...args], { cwd: env.PANEL_ROOT, env, encoding: "utf8", timeout: 300_000 });
  return JSON.parse(out);
}
/** Replay real files at full speed through the running pipeline, then wait until every stage has drained. */
function replayAndDrain(files) {
  const replay = cli("replay", ...files, "--json", "--no-progress");
  const report = cli("report", "--json", "--wait-idle", "180");
  if (!report.idle) throw new Error(`the pipeline did not drain: ${JSON.stringify(report.consumer_groups)}`);
  return { replay, report };
}
const accepted = (rep) => rep.orders - (rep.orders_by_status.REJECTED ?? 0);

const browser = await launchChromium();
let n = 0;
function step(name) {
  n += 1;
  console.log(`e2e: ${name}`);
}
const shot = (page, name) => screenshot(page, shots, name, 300);
async function statText(page, id) {
  return (await page.getByTestId(id).locator("strong").textContent())?.trim() ?? "";
}

const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
try {
  page.setDefaultTimeout(20_000);
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));

  const [username, password] = users.admin;
  await signIn(page, base, username, password, "admin");
  await page.getByTestId("live-status").filter({ hasText: "Live" }).waitFor();
  await waitKillState(page, "ACTIVE");
  step("admin signed in; the socket is live; trading ACTIVE");
  const equityBefore = await statText(page, "equity");

  // day 1: a real file through the real pipeline while the Live page watches
  const day1 = replayAndDrain(JSON.parse(env.PANEL_DAY1));
  if (day1.report.fills === 0) throw new Error(`day 1 gave no fills: ${JSON.stringify(day1.report)}`);
  step(`replayed ${day1.replay.ticks} real ticks: ${day1.report.signals} signals, ${day1.report.orders} orders, ${day1.report.fills} fills`);
  const blotter = page.locator("section[aria-labelledby=blotter-h] tbody");
  await blotter.locator("tr", { has: page.locator(".chip", { hasText: /^fill$/ }) }).first().waitFor();
  // a fill's market time is the replayed tick's (2013-10-07 UTC), not the wall clock it arrived at
  const fillTime = (await blotter.locator("tr", { has: page.locator(".chip", { hasText: /^fill$/ }) }).first()
    .locator("td").first().textContent())?.trim();
  if (!/^2013-10-07 \d\d:\d\d:\d\d\.\d{3}$/.test(fillTime ?? "")) {
    throw new Error(`the blotter's market time of a fill is ${JSON.stringify(fillTime)}, not on 2013-10-07 UTC`);
  }
  step(`the blotter shows a fill at market time ${fillTime} UTC`);
  // the blotter draws its newest 150 rows, which a busy replay fills with orders and fills: filter to find signals
  const kind = (k) => page.getByRole("checkbox", { name: k, exact: true });
  await kind("orders").uncheck();
  await kind("fills").uncheck();
  await blotter.locator("tr", { has: page.locator(".chip", { hasText: /^signal$/ }) }).first().waitFor();
  if ((await blotter.locator("tr", { has: page.locator(".chip", { hasText: /^(order|fill)$/ }) }).count()) !== 0) {
    throw new Error("the blotter's kind filter let orders or fills through");
  }
  await kind("orders").check();
  await kind("fills").check();
  await page.locator("section[aria-labelledby=pos-h] tbody tr", { hasText: "IBM" }).waitFor();
  await page.waitForFunction(
    (before) => {
      const s = document.querySelector('[data-testid="equity"] strong')?.textContent?.trim();
      return s && s !== before;
    },
    equityBefore,
  );
  // today's P&L is measured from the API's start-of-day snapshot, not this browser's first sight
  await page.getByTestId("today-pnl").getByText(/since (00:00 UTC|.*the API's first figure of the UTC day)/).waitFor();
  await page.locator("[data-testid=price-chart] canvas").first().waitFor(); // the lazily loaded chart drew
  // on market time: the replayed session's hours of 2013-10-07, not the second of wall clock the replay took
  await page.waitForFunction(() => {
    const c = document.querySelector('[data-testid="price-chart"]');
    const from = Date.parse(c?.dataset.from ?? ""), to = Date.parse(c?.dataset.to ?? "");
    return c?.dataset.from?.startsWith("2013-10-07") && to - from >= 3_600_000 && Number(c.dataset.points) >= 20;
  });
  const chart = await page.locator("[data-testid=price-chart]").evaluate((c) => ({ ...c.dataset }));
  step(`Live: the IBM chart draws ${chart.points} points on market time, ${chart.from} to ${chart.to}`);
  step(`Live: fills, signals and the IBM position arrived over the socket; equity ${await statText(page, "equity")}, today ${await statText(page, "today-pnl")}`);
  await shot(page, "10-live-real-file");

  // a reload keeps today's P&L: the start is the server's
  const todayBefore = await statText(page, "today-pnl");
  await page.reload();
  await page.getByTestId("live-status").filter({ hasText: "Live" }).waitFor();
  await page.waitForFunction((t) => document.querySelector('[data-testid="today-pnl"] strong')?.textContent?.trim() === t, todayBefore);
  step(`reloaded: today's P&L is still ${todayBefore} (the API's start-of-day snapshot)`);

  await page.getByRole("link", { name: "Health" }).click();
  for (const stage of ["tick_to_signal", "signal_to_intent", "intent_to_fill", "tick_to_fill"]) {
    await page.getByTestId(`${stage}-p99`).waitFor();
  }
  const bars = await page.locator("article[aria-label='Tick → fill latency'] [data-testid=latency-bar]").count();
  if (bars < 1) throw new Error("no tick_to_fill histogram bars");
  step(`Health: every stage's p50/p99/p999 and histogram (tick → fill p99 ${await page.getByTestId("tick_to_fill-p99").textContent()})`);
  await shot(page, "11-health-latency");

  // kill switch: engage, replay day 2, no order gets through
  await page.getByRole("link", { name: "Live" }).click();
  await page.keyboard.press("Alt+k");
  const dialog = page.getByRole("dialog", { name: "Kill switch" });
  await dialog.getByLabel("Reason (required)").fill("e2e: halt during the real replay");
  await dialog.getByRole("button", { name: /^Halt global/ }).click();
  await waitKillState(page, "HALTED");
  await page.keyboard.press("Escape");
  step("engaged the kill switch from the panel: HALTED");
  const day2 = replayAndDrain(JSON.parse(env.PANEL_DAY2));
  const blocked = day2.report.intents_blocked.trading_state ?? 0;
  if (accepted(day2.report) !== accepted(day1.report) || day2.report.fills !== day1.report.fills) {
    throw new Error(`orders got through the halt: ${JSON.stringify({ day1: day1.report.orders_by_status, day2: day2.report.orders_by_status })}`);
  }
  if (day2.report.signals <= day1.report.signals || blocked === 0) {
    throw new Error(`day 2 did not exercise the halt: ${day2.report.signals} signals, ${blocked} intents blocked`);
  }
  step(`halted: replayed ${day2.replay.ticks} more ticks, ${day2.report.signals - day1.report.signals} new signals, ` +
       `${blocked} intents blocked, no new order accepted (${accepted(day2.report)}) and no new fill (${day2.report.fills})`);
  await shot(page, "12-live-halted");

  await page.getByRole("button", { name: /Kill switch: trading HALTED/ }).click();
  await dialog.getByRole("button", { name: "Release…" }).click();
  await dialog.getByLabel("Reason", { exact: true }).fill("e2e: admin releases");
  await dialog.getByRole("button", { name: "Yes, release global" }).click();
  await waitKillState(page, "ACTIVE");
  await page.keyboard.press("Escape");
  step("released as admin after confirming: ACTIVE");

  // a backtest over a real file on the worker, and its equity curve
  await page.getByRole("link", { name: "Backtests" }).click();
  await page.getByLabel("Tick files").check();
  await page.getByLabel("Files on the worker (one path a line)").fill(env.PANEL_BACKTEST);
  await page.getByLabel("Label", { exact: true }).fill("e2e real file");
  await page.getByRole("button", { name: "Launch" }).click();
  await page.getByTestId("job-status").filter({ hasText: /^(completed|failed|cancelled)$/ }).waitFor({ timeout: 180_000 });
  const ended = (await page.getByTestId("job-status").textContent())?.trim();
  if (ended !== "completed") throw new Error(`the backtest job ended ${ended}: ${await page.locator("section[aria-labelledby=watch-h]").textContent()}`);
  await page.getByRole("heading", { name: /^Run #\d+$/ }).waitFor();
  await page.getByRole("table", { name: "Metrics" }).getByText("total_return").waitFor();
  await page.locator("[data-testid=curve-equity] path").first().waitFor();
  step("a backtest over the real file completed on the worker; metrics and equity curve shown");
  await shot(page, "13-backtest-real-file");

  // upload an ONNX model
  await page.getByRole("link", { name: "Models & strategies" }).click();
  await page.getByLabel("Model file (.onnx)").setInputFiles(env.PANEL_MODEL);
  await page.getByLabel("Name", { exact: true }).fill("e2e_mlp");
  await page.getByLabel("Features (comma-separated, input order)").fill(env.PANEL_FEATURES);
  await page.getByLabel("Upload reason").fill("e2e: upload from the panel");
  await page.getByRole("button", { name: "Upload" }).click();
  await page.getByText("e2e_mlp v1 registered").waitFor();
  await page.getByRole("button", { name: "Promote e2e_mlp v1" }).waitFor();
  step("uploaded an ONNX model from the panel: e2e_mlp v1 registered");
  await shot(page, "14-models-uploaded");

  if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join("; ")}`);
  console.log(`e2e: ${n} steps passed`);
} catch (e) {
  await shot(page, "failure").catch(() => undefined);
  throw e;
} finally {
  await browser.close();
}
