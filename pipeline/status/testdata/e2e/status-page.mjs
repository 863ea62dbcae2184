// Drives the status page in the system's Chromium for TestStatusPageInChromium
// (pipeline/status/browser_test.go): open the page, wait for the stream in
// the list, press Play, wait for the video to play WATCH_MS of media over
// HTTP-FLV, switch to HLS and wait again, and take a screenshot of each. It prints one JSON report on stdout; the Go test
// judges it. A step that does not happen in time exits 1 with the reason.
//
// Settings come from the environment:
//   STATUS_URL    the page (http://127.0.0.1:PORT/ on the API listener)
//   STREAM        the stream path to find and play
//   CHROMIUM      the browser's executable (never a downloaded one)
//   SHOTS         a directory for status-flv.png and status-hls.png
//   WATCH_MS      how much media each player must play (default 5000)
import { chromium } from "playwright-core";
import path from "node:path";

const env = (k, d) => {
  const v = process.env[k] || d;
  if (v === undefined) {
    console.error(`status-page.mjs: ${k} is not set`);
    process.exit(2);
  }
  return v;
};
const url = env("STATUS_URL");
const stream = env("STREAM");
const executablePath = env("CHROMIUM");
const shots = env("SHOTS");
const watchMs = Number(env("WATCH_MS", "5000"));
const stepMs = 30000; // bound on each step that waits for the page

const report = { console: [], errors: [], failedRequests: [], players: {} };

const args = ["--autoplay-policy=no-user-gesture-required", "--mute-audio", "--disable-gpu"];
// Chromium refuses to start its sandbox as root (CI containers).
if (process.getuid && process.getuid() === 0) args.push("--no-sandbox");

const browser = await chromium.launch({ executablePath, headless: true, args, timeout: stepMs });
let failure = "";
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(stepMs);
  page.on("console", (m) => {
    const loc = m.location();
    const entry = `${m.type()}: ${m.text()}${loc && loc.url ? ` (${loc.url}:${loc.lineNumber})` : ""}`;
    report.console.push(entry);
    if (m.type() === "error") report.errors.push(entry);
  });
  page.on("pageerror", (e) => report.errors.push(`pageerror: ${e.stack || e.message}`));
  page.on("crash", () => report.errors.push("the page crashed"));
  page.on("requestfailed", (r) => report.failedRequests.push(`${r.method()} ${r.url()}: ${r.failure() && r.failure().errorText}`));

  await page.goto(url, { waitUntil: "load" });
  const row = page.locator(`#streams tbody tr[data-path="${stream}"]`);
  await row.locator("td.state", { hasText: "live" }).waitFor();
  report.row = (await row.innerText()).replace(/\s+/g, " ").trim();

  // watch waits for the video to play watchMs of media, for at most
  // three times as long (the test machine may be busy), and records how
  // far currentTime moved and in how much wall time. Playback counts from
  // the moment currentTime has moved by half a second in the video element
  // on the page now: a live player may set currentTime to the live edge
  // before it has anything to show.
  const watch = async (proto) => {
    await page.waitForFunction(() => {
      const v = document.querySelector("#video");
      if (!v || v.paused || v.readyState < 3) return false;
      const w = window.__watch;
      if (!w || w.video !== v) {
        window.__watch = { video: v, start: v.currentTime, stalls: 0 };
        v.addEventListener("waiting", () => window.__watch.video === v && window.__watch.stalls++);
        return false;
      }
      return v.currentTime - w.start >= 0.5;
    }, null, { timeout: stepMs, polling: 100 });
    const from = await page.evaluate(() => document.querySelector("#video").currentTime);
    const t0 = Date.now();
    try {
      await page.waitForFunction((target) => document.querySelector("#video").currentTime >= target,
        from + watchMs / 1000, { timeout: 3 * watchMs, polling: 100 });
    } catch (e) {
      // Not reached in time: the report says how far it got.
    }
    const res = await page.evaluate(() => {
      const v = document.querySelector("#video");
      return {
        to: v.currentTime,
        width: v.videoWidth,
        height: v.videoHeight,
        paused: v.paused,
        stalls: window.__watch.stalls,
        status: document.querySelector("#player-status").textContent,
        url: document.querySelector("#player-url").textContent,
      };
    });
    report.players[proto] = { from, wallSeconds: (Date.now() - t0) / 1000, ...res };
    await page.screenshot({ path: path.join(shots, `status-${proto}.png`), fullPage: true });
  };

  await row.locator("button.play").click();
  await watch("flv");
  await page.locator('input[name="proto"][value="hls"]').check();
  await page.waitForFunction(() => document.querySelector("#player-url").textContent.endsWith("/index.m3u8"));
  await watch("hls");
  report.node = await page.locator("#node").innerText();
  // The list has been polled for over ten seconds by now: the row has a
  // bitrate and its chart a line.
  report.rowAfter = (await row.innerText()).replace(/\s+/g, " ").trim();
  report.chartPoints = await row.locator("td.chart polyline").evaluateAll((els) =>
    els.length ? els[0].getAttribute("points").trim().split(/\s+/).length : 0);
} catch (e) {
  failure = e.message;
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(report) + "\n");
if (failure) {
  console.error(failure);
  process.exit(1);
}
