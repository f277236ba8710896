// End-to-end: the built panel served by a real API (with a real gateway) in Debian's Chromium.
// Run by tests/frontend/test_panel.py, which starts the services and passes:
//   PANEL_URL (the API's base URL), PANEL_USERS (JSON {admin|trader|viewer: [username, password]}),
//   PANEL_SHOTS (folder for a screenshot of each page), CHROMIUM (default /usr/bin/chromium).
import { mkdirSync } from "node:fs";
import { launchChromium, screenshot, signIn as signInAs, waitKillState } from "./common.mjs";

const base = process.env.PANEL_URL;
const users = JSON.parse(process.env.PANEL_USERS ?? "{}");
const shots = process.env.PANEL_SHOTS ?? "e2e-shots";
if (!base || !users.admin || !users.trader || !users.viewer) throw new Error("PANEL_URL and PANEL_USERS are required");
mkdirSync(shots, { recursive: true });

const browser = await launchChromium();
const steps = [];
function step(name) {
  steps.push(name);
  console.log(`e2e: ${name}`);
}

async function signIn(page, role) {
  const [username, password] = users[role];
  await signInAs(page, base, username, password, role);
}

async function signOut(page) {
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("button", { name: "Sign in" }).waitFor();
}

async function killState(page) {
  return (await page.getByTestId("global-state").textContent())?.trim();
}

const shot = (page, name) => screenshot(page, shots, name);

const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
try {
  page.setDefaultTimeout(15_000);
  const consoleErrors = [];
  page.on("pageerror", (e) => consoleErrors.push(String(e)));

  // admin: the live page, its socket, the open orders with cancel, every page
  await page.goto(`${base}/`);
  await shot(page, "00-login");
  await signIn(page, "admin");
  step("admin signed in");
  await waitKillState(page, "ACTIVE");
  await page.getByTestId("live-status").filter({ hasText: "Live" }).waitFor(); // the socket's welcome arrived
  step("kill switch ACTIVE, socket live");
  const orderRows = page.locator("section[aria-labelledby=orders-h] tbody tr", { has: page.getByRole("button", { name: "Cancel" }) });
  await orderRows.first().waitFor();
  const before = await orderRows.count();
  await orderRows.first().getByRole("button", { name: "Cancel" }).click();
  await page.waitForFunction(
    (n) => document.querySelectorAll("section[aria-labelledby=orders-h] tbody tr button").length === n - 1,
    before,
  );
  step(`cancelled one of ${before} open orders from the panel`);
  await page.locator("section[aria-labelledby=blotter-h] tbody tr .chip").first().waitFor(); // the cancel's report, over the socket
  step("the blotter shows execution reports from the socket");
  await shot(page, "01-live");
  for (const [link, name] of [
    ["Health", "02-health"],
    ["Backtests", "03-backtests"],
    ["Models & strategies", "04-models"],
    ["Jobs & suggestions", "05-jobs"],
  ]) {
    await page.getByRole("link", { name: link }).click();
    await page.locator("main section").first().waitFor();
    if (link === "Health") await page.locator("article[aria-label='execution: healthy']").waitFor();
    if (link === "Backtests") {
      // a real job on the real worker: launch, watch it complete, see its metrics and equity curve
      await page.getByLabel("Ticks", { exact: true }).fill("5000");
      await page.getByLabel("Label", { exact: true }).fill("e2e synthetic");
      await page.getByRole("button", { name: "Launch" }).click();
      await page.getByTestId("job-status").filter({ hasText: "completed" }).waitFor({ timeout: 120_000 });
      await page.getByRole("heading", { name: /^Run #\d+$/ }).waitFor();
      await page.getByRole("table", { name: "Metrics" }).getByText("total_return").waitFor();
      await page.locator("[data-testid=curve-equity] path").first().waitFor();
      await page.locator("[data-testid=curve-drawdown] path").first().waitFor({ state: "attached" }); // a flat 0 when it never fell
      step("a trader-or-above launched a synthetic backtest; its job completed on the worker; metrics and equity curve shown");
    }
    await page.waitForTimeout(300);
    await shot(page, name);
  }
  step("every page rendered; the gateway shows healthy");
  await page.reload(); // a reload of a panel URL is the panel (SPA fallback), still signed in
  await page.getByText("Jobs", { exact: true }).first().waitFor();
  step("reload of /ui/jobs kept the page and the session");
  await signOut(page);

  // trader: engage with a reason; release is not theirs
  await signIn(page, "trader");
  await page.keyboard.press("Alt+k");
  const dialog = page.getByRole("dialog", { name: "Kill switch" });
  await dialog.waitFor();
  await dialog.getByLabel("Reason (required)").fill("e2e: trader halts");
  await dialog.getByRole("button", { name: /^Halt global/ }).click();
  await dialog.getByRole("status").filter({ hasText: "global: HALTED" }).waitFor();
  await waitKillState(page, "HALTED");
  await dialog.getByRole("cell", { name: "api:trader" }).waitFor();
  if (!(await dialog.getByRole("button", { name: "Release…" }).isDisabled())) throw new Error("a trader may not release");
  step("trader engaged the kill switch (HALTED, by api:trader); release disabled");
  await shot(page, "06-kill-switch-trader");
  await page.keyboard.press("Escape");
  await page.locator("section[aria-labelledby=orders-h]").getByText("No open orders.").waitFor();
  await page.locator("section[aria-labelledby=blotter-h] tbody tr", { hasText: "rest-0" }).filter({ hasText: "CANCELLED" }).waitFor();
  step("the halt cancelled the resting orders: gone from open orders, CANCELLED in the blotter");
  await signOut(page);

  // viewer: sees the state, cannot engage (the form is disabled and the API says 403)
  await signIn(page, "viewer");
  await waitKillState(page, "HALTED");
  await page.getByRole("button", { name: /Kill switch: trading HALTED/ }).click();
  await dialog.getByText("Engaging needs the trader role (you are viewer).").waitFor();
  if (!(await dialog.getByRole("button", { name: /^Halt/ }).isDisabled())) throw new Error("a viewer's engage is enabled");
  const status = await page.evaluate(async () => {
    const s = JSON.parse(sessionStorage.getItem("aitrader.session") ?? "{}");
    const r = await fetch("/kill-switch/engage", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${s.access}` },
      body: JSON.stringify({ scope: "global", action: "halt", reason: "viewer tries" }),
    });
    return r.status;
  });
  if (status !== 403) throw new Error(`the API answered ${status} to a viewer's engage`);
  step("viewer: engage disabled in the panel and refused by the API (403)");
  await shot(page, "07-kill-switch-viewer");
  await page.keyboard.press("Escape");
  await signOut(page);

  // admin: release with a confirmation, in the light theme
  await signIn(page, "admin");
  await page.getByRole("button", { name: "Switch to light theme" }).click();
  await page.getByRole("button", { name: /Kill switch: trading HALTED/ }).click();
  await dialog.getByRole("button", { name: "Release…" }).click();
  await dialog.getByLabel("Reason", { exact: true }).fill("e2e: admin releases");
  await dialog.getByRole("button", { name: "Yes, release global" }).click();
  await waitKillState(page, "ACTIVE");
  step("admin released after confirming: ACTIVE");
  await shot(page, "08-kill-switch-admin-light");
  await page.keyboard.press("Escape");
  await page.getByRole("link", { name: "Live" }).click();
  await shot(page, "09-live-light");
  if (consoleErrors.length) throw new Error(`page errors: ${consoleErrors.join("; ")}`);
  console.log(`e2e: ${steps.length} steps passed`);
} catch (e) {
  await shot(page, "failure").catch(() => undefined);
  throw e;
} finally {
  await browser.close();
}
