// What the panel's browser scripts share (panel.e2e.mjs, pipeline.e2e.mjs, bench.mjs): Debian's Chromium with
// the flags these machines need, the sign-in form, the kill switch's global state, full-page screenshots.
import { join } from "node:path";
import { chromium } from "playwright-core";

export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
  });
}

/** Fill the login form (the caller clicks "Sign in": the benchmark times from the click). */
export async function fillSignIn(page, username, password) {
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
}

export async function signIn(page, base, username, password, role) {
  await page.goto(`${base}/`); // the API redirects / to /ui/
  await fillSignIn(page, username, password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText(`${username} ${role}`).waitFor();
}

export async function waitKillState(page, want) {
  await page.waitForFunction((w) => document.querySelector('[data-testid="global-state"]')?.textContent?.trim() === w, want, {
    timeout: 15_000,
  });
}

export async function screenshot(page, dir, name, settleMs = 0) {
  if (settleMs) await page.waitForTimeout(settleMs);
  await page.screenshot({ path: join(dir, `${name}.png`), fullPage: true });
}
