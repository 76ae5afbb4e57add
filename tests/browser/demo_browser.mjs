// Drives the demo page in headless Chromium over the DevTools protocol (--remote-debugging-pipe: no
// npm package needed): loads the page, clicks the first sentence, waits for the run to finish,
// checks that the results table has one row per hosted model with a prediction, a confidence and a
// speed-up, and saves a screenshot.
//   node demo_browser.mjs URL SCREENSHOT.png EXPECTED_MODELS [CHROMIUM]
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, shotPath, expectedArg, chromiumArg] = process.argv.slice(2);
const expected = Number(expectedArg);
const chromium = chromiumArg || process.env.CHROMIUM || "/usr/bin/chromium";
const profile = mkdtempSync(join(tmpdir(), "bert-demo-chromium-"));
const chrome = spawn(chromium, ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
  "--no-first-run", "--remote-debugging-pipe", "--user-data-dir=" + profile, "--window-size=1400,1100",
  "about:blank"], { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"] });
let chromeLog = "";
chrome.stderr.on("data", (d) => { chromeLog += d; });

function finish(code, msg) {
  if (msg) console.log(msg);
  try { chrome.kill("SIGKILL"); } catch {}
  try { rmSync(profile, { recursive: true, force: true }); } catch {}
  process.exit(code);
}
const overall = setTimeout(() => finish(1, "FAIL: timed out\n" + chromeLog.slice(-2000)), 90000);

// NUL-separated JSON messages: we write to the browser's fd 3 and read its fd 4.
const toChrome = chrome.stdio[3], fromChrome = chrome.stdio[4];
let nextId = 1, buffer = "";
const pending = new Map();
fromChrome.on("data", (chunk) => {
  buffer += chunk.toString("utf8");
  let i;
  while ((i = buffer.indexOf("\0")) >= 0) {
    const msg = JSON.parse(buffer.slice(0, i));
    buffer = buffer.slice(i + 1);
    if (msg.id && pending.has(msg.id)) {
      const { resolve, reject } = pending.get(msg.id);
      pending.delete(msg.id);
      msg.error ? reject(new Error(JSON.stringify(msg.error))) : resolve(msg.result);
    }
  }
});
chrome.on("exit", (code) => finish(1, "FAIL: chromium exited (" + code + ")\n" + chromeLog.slice(-2000)));
function send(method, params = {}, sessionId) {
  const id = nextId++;
  const msg = { id, method, params };
  if (sessionId) msg.sessionId = sessionId;
  toChrome.write(JSON.stringify(msg) + "\0");
  return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const { targetInfos } = await send("Target.getTargets");
  const page = targetInfos.find((t) => t.type === "page");
  if (!page) throw new Error("no page target");
  const { sessionId } = await send("Target.attachToTarget", { targetId: page.targetId, flatten: true });
  const evaluate = async (expression) =>
    (await send("Runtime.evaluate", { expression, returnByValue: true, awaitPromise: true }, sessionId)).result.value;
  const waitFor = async (expression, what, ms = 30000) => {
    for (const t0 = Date.now(); Date.now() - t0 < ms; await sleep(100)) if (await evaluate(expression)) return;
    throw new Error("timed out waiting for " + what);
  };
  await send("Page.enable", {}, sessionId);
  await send("Emulation.setDeviceMetricsOverride", { width: 1400, height: 1100, deviceScaleFactor: 1, mobile: false }, sessionId);
  await send("Page.navigate", { url }, sessionId);
  await waitFor("document.body && document.body.getAttribute('data-ready') === '1'", "the page to load");
  const sentences = await evaluate("document.querySelectorAll('#sentences li.sentence').length");
  if (!(sentences > 0)) throw new Error("the page lists no sentences");
  // Click the first sentence; the page runs it through every model.
  await evaluate("document.querySelector('#sentences li.sentence').click(); true");
  await waitFor("document.getElementById('status').textContent === 'done'", "the trial to finish");
  const rows = await evaluate(`Array.from(document.querySelectorAll('#results tbody tr')).map(tr =>
      Array.from(tr.cells).map(td => td.textContent))`);
  console.log("results table:", JSON.stringify(rows));
  if (rows.length !== expected) throw new Error(`expected ${expected} result rows (one per model), got ${rows.length}`);
  for (const r of rows) {
    if (r.length !== 5) throw new Error("a result row is an error: " + r.join(" | "));
    if (!/^(positive|negative|LABEL_\d+)$/.test(r[1])) throw new Error("no prediction in row " + r.join(" | "));
    if (!/%$/.test(r[2])) throw new Error("no confidence in row " + r.join(" | "));
    if (!/x$/.test(r[4])) throw new Error("no speed-up in row " + r.join(" | "));
  }
  const logRows = await evaluate("document.querySelectorAll('#log tbody tr').length");
  const totals = await evaluate("document.querySelectorAll('#totals tbody tr').length");
  if (logRows !== 1 || totals !== expected) throw new Error(`trial log rows ${logRows}, totals rows ${totals}`);
  const shot = await send("Page.captureScreenshot", { format: "png" }, sessionId);
  writeFileSync(shotPath, Buffer.from(shot.data, "base64"));
  console.log("screenshot: " + shotPath);
}

main().then(() => { clearTimeout(overall); finish(0, "PASS"); },
            (e) => { clearTimeout(overall); finish(1, "FAIL: " + e.message + "\n" + chromeLog.slice(-2000)); });
