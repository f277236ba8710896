// The panel's measurements in headless Chromium, driven by benchmarks/panel.py (which starts the API and the
// pipeline and publishes the load). Reads PANEL_URL, PANEL_USER, PANEL_PASSWORD, BENCH_LOADS (cold loads),
// BENCH_IDLE_S (the quiet window), CHROMIUM. Prints one JSON line per result ("RESULT {...}"); prints
// "READY_LOAD" when the Live page is instrumented and waits for a line on stdin ("STOP") that ends the loaded window.
import { createInterface } from "node:readline";
import { fillSignIn, launchChromium } from "./common.mjs";

const env = process.env;
const base = env.PANEL_URL;
const loads = Number(env.BENCH_LOADS ?? 5);
const idleS = Number(env.BENCH_IDLE_S ?? 10);
const rl = createInterface({ input: process.stdin });
const lines = rl[Symbol.asyncIterator]();
const say = (msg) => console.error(`bench: ${msg}`);
const emit = (kind, data) => console.log(`RESULT ${JSON.stringify({ kind, ...data })}`);

const browser = await launchChromium();

async function signIn(page) {
  await fillSignIn(page, env.PANEL_USER, env.PANEL_PASSWORD);
  const t0 = await page.evaluate(() => performance.now());
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("link", { name: "Health" }).waitFor();
  const shell = await page.evaluate(() => performance.now());
  await page.getByTestId("live-status").filter({ hasText: "Live" }).waitFor({ timeout: 30_000 });
  const live = await page.evaluate(() => performance.now());
  return { login_to_shell_ms: shell - t0, login_to_socket_live_ms: live - t0 };
}

try {
  // 1. cold loads: a fresh context each (no cache), every byte counted from the network (CDP)
  for (let i = 0; i < loads; i++) {
    say(`cold load ${i + 1}/${loads}`);
    const ctx = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    const page = await ctx.newPage();
    const cdp = await ctx.newCDPSession(page);
    await cdp.send("Network.enable");
    await cdp.send("Network.setCacheDisabled", { cacheDisabled: true });
    const reqs = new Map();
    cdp.on("Network.responseReceived", (e) =>
      reqs.set(e.requestId, { url: e.response.url, encoding: e.response.headers["content-encoding"] ?? e.response.headers["Content-Encoding"] ?? "", status: e.response.status, wire: 0, body: 0 }));
    cdp.on("Network.dataReceived", (e) => {
      const r = reqs.get(e.requestId);
      if (r) r.body += e.dataLength;
    });
    cdp.on("Network.loadingFinished", (e) => {
      const r = reqs.get(e.requestId);
      if (r) r.wire = e.encodedDataLength;
    });
    await page.goto(`${base}/`); // redirected to /ui/
    say("login form shown");
    await page.getByLabel("Username").waitFor();
    await page.waitForFunction(() => {
      const u = document.querySelector("input[autocomplete=username], input[name=username]") ?? document.querySelector("input");
      return u && !u.disabled;
    });
    const t = await page.evaluate(() => {
      const nav = performance.getEntriesByType("navigation")[0];
      return {
        login_form_ms: performance.now(),
        response_start_ms: nav.responseStart,
        dom_interactive_ms: nav.domInteractive,
        dom_content_loaded_ms: nav.domContentLoadedEventEnd,
        load_event_ms: nav.loadEventEnd,
        fcp_ms: performance.getEntriesByName("first-contentful-paint")[0]?.startTime ?? null,
      };
    });
    await page.waitForLoadState("networkidle");
    say("network idle; signing in");
    const before = [...reqs.values()];
    const after = await signIn(page);
    await page.waitForLoadState("networkidle");
    const all = [...reqs.values()];
    const sum = (rs, k) => rs.reduce((a, r) => a + r[k], 0);
    const assets = before.filter((r) => r.url.includes("/ui/"));
    emit("load", {
      i, ...t, ...after,
      requests: before.length, wire_bytes: sum(before, "wire"), body_bytes: sum(before, "body"),
      encodings: [...new Set(assets.map((r) => r.encoding || "identity"))],
      assets: assets.map((r) => ({ url: r.url.replace(base, ""), wire: r.wire, body: r.body })),
      after_login_requests: all.length - before.length, after_login_wire_bytes: sum(all, "wire") - sum(before, "wire"),
      after_login_assets: all.slice(before.length).filter((r) => r.url.includes("/ui/")).map((r) => r.url.replace(base, "")),
    });
    await ctx.close();
  }

  // 2. responsiveness: the Live page open, quiet and then under the pipeline's load
  const ctx = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await ctx.newPage();
  const cdp = await ctx.newCDPSession(page);
  await cdp.send("Network.enable");
  let wsFrames = 0;
  let wsBytes = 0;
  cdp.on("Network.webSocketFrameReceived", (e) => {
    wsFrames += 1;
    wsBytes += e.response.payloadData.length;
  });
  await page.goto(`${base}/`);
  await signIn(page);
  await page.evaluate(() => {
    const w = window;
    w.__bench = { longtasks: [], frames: [], drift: [], inputDelay: [], inputToFrame: [] };
    new PerformanceObserver((l) => {
      for (const e of l.getEntries()) w.__bench.longtasks.push(e.duration);
    }).observe({ type: "longtask", buffered: false });
    const frame = (t) => {
      w.__bench.frames.push(t);
      requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
    let due = performance.now() + 50;
    const tick = () => {
      const now = performance.now();
      w.__bench.drift.push(now - due);
      due = now + 50;
      setTimeout(tick, 50);
    };
    setTimeout(tick, 50);
    document.addEventListener("keydown", (e) => {
      const start = e.timeStamp;
      w.__bench.inputDelay.push(performance.now() - start);
      requestAnimationFrame(() => w.__bench.inputToFrame.push(performance.now() - start));
    });
  });

  async function window_(label, stop) {
    await page.evaluate(() => {
      const b = window.__bench;
      for (const k of Object.keys(b)) b[k] = [];
    });
    const ws0 = [wsFrames, wsBytes];
    const t0 = Date.now();
    let presses = 0;
    let done = false;
    stop.then(() => (done = true));
    while (!done) {
      await page.keyboard.press("Shift"); // a key no control on the page reacts to: input delay only
      presses += 1;
      await Promise.race([new Promise((r) => setTimeout(r, 100)), stop]);
    }
    const secs = (Date.now() - t0) / 1000;
    const b = await page.evaluate(() => window.__bench);
    const gaps = b.frames.slice(1).map((t, i) => t - b.frames[i]);
    const rows = await page.locator("section[aria-labelledby=blotter-h] tbody tr").count();
    emit("window", {
      label, seconds: secs, presses,
      longtasks: b.longtasks, frame_gaps: gaps, frames: b.frames.length, drift: b.drift, input_delay: b.inputDelay,
      input_to_frame: b.inputToFrame, ws_frames: wsFrames - ws0[0], ws_bytes: wsBytes - ws0[1], blotter_rows: rows,
    });
  }

  say(`the Live page is instrumented; ${idleS} s quiet`);
  await window_("idle", new Promise((r) => setTimeout(r, idleS * 1000)));
  console.log("READY_LOAD");
  const stop = lines.next();
  await window_("load", stop);
  say("loaded window done");
  await page.screenshot({ path: env.BENCH_SHOT ?? "bench-live.png", fullPage: false });
} finally {
  rl.close(); // else the open stdin keeps node alive
  await browser.close();
}
