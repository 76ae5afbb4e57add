// bert_serve demo page logic: lists SST-2 dev sentences (GET /v1/demo/sentences), runs a clicked
// sentence through every hosted sequence classifier one after another (POST /v1/predict), and keeps
// the trial log and per-model totals (accuracy, mean latency, mean speed-up over the baseline).
"use strict";

const state = { models: [], sentences: [], shown: [], trials: [], baseline: "" };
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// SST-2: label 0 negative, 1 positive (models trained by bert_train name them LABEL_0 / LABEL_1).
function labelName(model, id) {
  const names = model.labels || [];
  const n = names[id];
  if (names.length === 2 && (!n || /^LABEL_\d+$/.test(n) || /^\d+$/.test(n))) return id === 1 ? "positive" : "negative";
  return n || "LABEL_" + id;
}
function tag(label) {
  if (label === 1) return el("span", { class: "tag pos" }, "positive");
  if (label === 0) return el("span", { class: "tag neg" }, "negative");
  return el("span", { class: "tag unk" }, "?");
}

async function api(path, body) {
  const opts = body === undefined ? {} :
    { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const res = await fetch(path, opts);
  const json = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((json.error && json.error.message) || res.status + " " + res.statusText);
  return json;
}

async function loadModels() {
  const list = await api("/v1/models");
  state.models = list.models.filter((m) => m.head === "sequence_classification" && m.tokenizer);
  const skipped = list.models.length - state.models.length;
  $("server").textContent = state.models.length + " classifier(s) hosted: " +
    state.models.map((m) => m.name + " (" + m.num_layers + " layers, hidden " + m.hidden_size + ")").join(", ") +
    (skipped ? "; " + skipped + " other model(s) skipped" : "");
  const sel = $("baseline");
  sel.innerHTML = "";
  const guess = state.models.find((m) => /base/.test(m.name)) ||
    state.models.slice().sort((a, b) => b.num_layers * b.hidden_size - a.num_layers * a.hidden_size)[0];
  for (const m of state.models) sel.append(el("option", { value: m.name }, m.name));
  if (guess) sel.value = guess.name;
  state.baseline = sel.value;
  const head = $("log").querySelector("thead tr");
  for (const m of state.models) head.append(el("th", {}, m.name));
}

function renderSentences() {
  const q = $("filter").value.toLowerCase();
  const ul = $("sentences");
  ul.innerHTML = "";
  let n = 0;
  for (const s of state.shown) {
    if (q && !s.text.toLowerCase().includes(q)) continue;
    const li = el("li", { class: "sentence" }, tag(s.label), s.text);
    li.addEventListener("click", () => { li.classList.add("done"); runTrial(s.text, s.label); });
    ul.append(li);
    if (++n >= 200) break;
  }
}

function shuffle() {
  state.shown = state.sentences.slice();
  for (let i = state.shown.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [state.shown[i], state.shown[j]] = [state.shown[j], state.shown[i]];
  }
  renderSentences();
}

async function runTrial(text, label) {
  $("current").textContent = "";
  $("current").append(tag(label), text);
  $("status").textContent = "running…";
  const body = $("results").querySelector("tbody");
  body.innerHTML = "";
  const trial = { text, label, results: {} };
  // One model after another, so no model's latency includes another's compute.
  for (const m of state.models) {
    try {
      const r = await api("/v1/predict", { model: m.name, inputs: [text] });
      const p = r.results[0];
      const conf = p.probabilities[p.label];
      trial.results[m.name] = { id: p.label_id, name: labelName(m, p.label_id), conf, ms: r.latency_ms };
    } catch (e) {
      trial.results[m.name] = { error: e.message };
    }
  }
  state.trials.push(trial);
  renderTrial(trial);
  renderTotals();
  renderLog(trial);
  $("status").textContent = "done";
}

function speedup(trial, name) {
  const b = trial.results[state.baseline], r = trial.results[name];
  if (!b || !r || b.error || r.error || !(r.ms > 0)) return null;
  return b.ms / r.ms;
}

function renderTrial(trial) {
  const body = $("results").querySelector("tbody");
  body.innerHTML = "";
  for (const m of state.models) {
    const r = trial.results[m.name];
    if (r.error) {
      body.append(el("tr", { "data-model": m.name }, el("td", {}, m.name), el("td", { class: "error", colspan: 4 }, r.error)));
      continue;
    }
    const right = trial.label === 0 || trial.label === 1 ? (r.id === trial.label ? "ok" : "bad") : "";
    const s = speedup(trial, m.name);
    body.append(el("tr", { "data-model": m.name }, el("td", {}, m.name), el("td", { class: right }, r.name),
                   el("td", {}, (100 * r.conf).toFixed(1) + "%"), el("td", {}, r.ms.toFixed(2)),
                   el("td", {}, s === null ? "-" : s.toFixed(2) + "x")));
  }
}

function renderTotals() {
  const body = $("totals").querySelector("tbody");
  body.innerHTML = "";
  for (const m of state.models) {
    let n = 0, labelled = 0, correct = 0, ms = 0, sp = 0, spn = 0;
    for (const t of state.trials) {
      const r = t.results[m.name];
      if (!r || r.error) continue;
      n++; ms += r.ms;
      if (t.label === 0 || t.label === 1) { labelled++; correct += r.id === t.label ? 1 : 0; }
      const s = speedup(t, m.name);
      if (s !== null) { sp += s; spn++; }
    }
    body.append(el("tr", { "data-model": m.name }, el("td", {}, m.name), el("td", {}, n),
                   el("td", {}, labelled ? (100 * correct / labelled).toFixed(1) + "% (" + correct + "/" + labelled + ")" : "-"),
                   el("td", {}, n ? (ms / n).toFixed(2) : "-"), el("td", {}, spn ? (sp / spn).toFixed(2) + "x" : "-")));
  }
}

function renderLog(trial) {
  const row = el("tr", {}, el("td", {}, state.trials.length), el("td", {}, trial.text), el("td", {}, tag(trial.label)));
  for (const m of state.models) {
    const r = trial.results[m.name];
    const cls = r.error ? "error" : trial.label === 0 || trial.label === 1 ? (r.id === trial.label ? "ok" : "bad") : "";
    row.append(el("td", { class: cls }, r.error ? "error" : r.name));
  }
  $("log").querySelector("tbody").prepend(row);
}

// Each compute worker plans a session per model and sequence-length bucket on first use: run a few
// lengths on every model first (twice at once, for two workers) so no trial pays for that.
async function warmUp() {
  $("status").textContent = "warming up…";
  const words = (n) => Array(n).fill("good").join(" ");
  for (const m of state.models)
    for (const n of [4, 20, 40])
      await Promise.all([0, 1].map(() => api("/v1/predict", { model: m.name, inputs: [words(n)] }).catch(() => null)));
  $("status").textContent = "";
}

async function main() {
  $("filter").addEventListener("input", renderSentences);
  $("shuffle").addEventListener("click", shuffle);
  $("baseline").addEventListener("change", () => {
    state.baseline = $("baseline").value;
    if (state.trials.length) renderTrial(state.trials[state.trials.length - 1]);
    renderTotals();
  });
  $("own").addEventListener("submit", (e) => {
    e.preventDefault();
    const t = $("own-text").value.trim();
    if (t) runTrial(t, null);
  });
  try {
    await loadModels();
  } catch (e) {
    $("server").textContent = "cannot list the models: " + e.message;
  }
  try {
    const d = await api("/v1/demo/sentences");
    state.sentences = d.sentences;
  } catch (e) {
    state.sentences = [];
    $("sentences").append(el("li", { class: "error" }, e.message));
  }
  state.shown = state.sentences.slice();
  renderSentences();
  await warmUp();
  document.body.setAttribute("data-ready", "1");
}
main();
