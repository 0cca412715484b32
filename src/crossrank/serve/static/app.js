// crossrank playground: calls this server's own API (relative URLs) and writes every text with
// textContent, never as HTML.

const KEY_STORAGE = "crossrank.apiKey";
const EXCERPT_CHARS = 280; // longer texts show this much, and the whole text behind a disclosure
const EXCERPT_SLACK = 60; // ...unless they are only a little longer
const PROBABILITY_ACTIVATIONS = new Set(["sigmoid", "softmax", "calibrated"]);

const $ = (id) => document.getElementById(id);

/** Make an element; `text` goes in as textContent. */
function el(tag, { cls, text, attrs } = {}, children = []) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (attrs) for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  for (const child of children) if (child) node.append(child);
  return node;
}

const state = {
  models: null, // the answer of GET v1/models
  search: null, // the served index: documents, retrievers, max_k, max_depth (null: none)
  controllers: new Map(), // one in-flight request per form; a new submit aborts the old one
};

// ------------------------------------------------------------------ talking to the server

class ApiFailure extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function apiKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

/** The request the page sends: method, URL, headers and the exact body text. */
function buildRequest(path, body) {
  const headers = { Accept: "application/json" };
  const request = { method: body === undefined ? "GET" : "POST", url: new URL(path, document.baseURI).href };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    request.body = JSON.stringify(body);
  }
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  request.headers = headers;
  return request;
}

/** Pull the message out of any of the server's error shapes. */
function errorText(data) {
  if (!data || typeof data !== "object") return null;
  if (typeof data.message === "string") return data.message; // Cohere v1/v2
  if (typeof data.detail === "string") return data.detail; // Jina
  if (data.error && typeof data.error === "object" && typeof data.error.message === "string") {
    return data.error.message; // crossrank
  }
  if (typeof data.error === "string") return data.error; // TEI
  return null;
}

function failureMessage(response, data, text) {
  const status = `${response.status}${response.statusText ? ` ${response.statusText}` : ""}`;
  let message = errorText(data) || text.trim().slice(0, 300) || "no details";
  if (response.status === 401) message += ". Enter the server's API key in the field at the top.";
  if (response.status === 429) {
    const retry = response.headers.get("Retry-After");
    message += retry ? `. The server is busy: retry in ${retry} s.` : ". The server is busy: retry shortly.";
  }
  return `The server answered ${status}: ${message}`;
}

async function api(path, body, signal) {
  const request = buildRequest(path, body);
  let response;
  try {
    response = await fetch(request.url, {
      method: request.method,
      headers: request.headers,
      body: request.body,
      signal,
      cache: "no-store",
    });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiFailure(0, `Could not reach the server (${err && err.message ? err.message : err}).`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = JSON.parse(text);
  } catch {
    data = null;
  }
  if (!response.ok) throw new ApiFailure(response.status, failureMessage(response, data, text));
  if (data === null) throw new ApiFailure(response.status, "The server's answer is not JSON.");
  return data;
}

function showError(message) {
  $("error").textContent = message || "";
}

/** Run `task` for a form: abort the previous run of the same form, show errors, never leave it stuck. */
async function guarded(name, statusEl, busyText, task) {
  const previous = state.controllers.get(name);
  if (previous) previous.abort();
  const controller = new AbortController();
  state.controllers.set(name, controller);
  showError("");
  statusEl.textContent = busyText;
  const results = statusEl.nextElementSibling;
  if (results) results.setAttribute("aria-busy", "true");
  try {
    await task(controller.signal);
    if (results) results.classList.remove("stale");
  } catch (err) {
    if (err && err.name === "AbortError") return;
    const message = err instanceof ApiFailure ? err.message : `Something went wrong in the page: ${err}`;
    statusEl.textContent = "";
    if (results) results.classList.add("stale"); // earlier results stay, dimmed, until the next answer
    showError(message);
  } finally {
    if (state.controllers.get(name) === controller) {
      state.controllers.delete(name);
      if (results) results.removeAttribute("aria-busy");
    }
  }
}

// ------------------------------------------------------------------ formatting

function fmtScore(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e5)) return value.toExponential(2);
  return value.toFixed(4);
}

function fmtMs(value) {
  if (typeof value !== "number") return "–";
  return value >= 100 ? `${Math.round(value)} ms` : `${value.toFixed(1)} ms`;
}

function fmtInt(value) {
  return Number(value).toLocaleString("en-US");
}

/** Return a function mapping a score to a bar length in [0, 1]. */
function scaler(values, probability) {
  if (probability) return (v) => Math.min(1, Math.max(0, v));
  const finite = values.filter((v) => typeof v === "number" && Number.isFinite(v));
  if (!finite.length) return () => 0;
  const hi = Math.max(...finite);
  const lo = Math.min(0, ...finite);
  if (hi === lo) return () => 1;
  return (v) => (v - lo) / (hi - lo);
}

function scoreRow(kind, label, value, scale, primary) {
  const fill = el("span", { cls: "fill" });
  const known = typeof value === "number" && Number.isFinite(value);
  if (known) fill.style.width = `${(scale(value) * 100).toFixed(1)}%`;
  const row = el("div", { cls: `score ${kind}${primary ? " primary" : ""}` }, [
    el("span", { cls: "label", text: label }),
    el("span", { cls: "bar", attrs: { "aria-hidden": "true" } }, [fill]),
    el("span", { cls: "num", text: known ? fmtScore(value) : "–" }),
  ]);
  if (!known) row.title = "not known for this document";
  return row;
}

/** A document's text: an excerpt, and the whole text behind a disclosure when it is longer. */
function textBlock(text) {
  const out = [];
  const full = typeof text === "string" ? text : "";
  if (full.length <= EXCERPT_CHARS + EXCERPT_SLACK) {
    out.push(el("p", { cls: "text", text: full }));
    return out;
  }
  out.push(el("p", { cls: "text", text: `${full.slice(0, EXCERPT_CHARS).trimEnd()}…` }));
  out.push(
    el("details", {}, [
      el("summary", { text: `Whole text (${fmtInt(full.length)} characters)` }),
      el("p", { text: full }),
    ]),
  );
  return out;
}

function movement(from, to) {
  const delta = from - to;
  if (delta > 0) {
    return el("span", { cls: "move up", text: `▲ ${delta}`, attrs: { title: `up ${delta} from #${from}` } });
  }
  if (delta < 0) {
    return el("span", { cls: "move down", text: `▼ ${-delta}`, attrs: { title: `down ${-delta} from #${from}` } });
  }
  return el("span", { cls: "move same", text: "=", attrs: { title: "same place" } });
}

// ------------------------------------------------------------------ the model card

async function loadModels() {
  const card = $("model-card");
  try {
    const data = await api("v1/models");
    state.models = data.data[0];
    state.search = state.models.search || null;
    renderModel();
    setUpModes();
    return true;
  } catch (err) {
    $("model-name").textContent = err instanceof ApiFailure && err.status === 401 ? "needs an API key" : "unknown";
    showError(err instanceof ApiFailure ? err.message : String(err));
    if (err instanceof ApiFailure && err.status === 401) {
      $("key-box").open = true;
      $("api-key").focus();
    }
    return false;
  } finally {
    card.removeAttribute("aria-busy");
  }
}

function renderModel() {
  const m = state.models;
  $("model-name").textContent = m.id;
  $("model-backend").textContent = `${m.backend} · ${fmtInt(m.max_length)} tokens`;
  const kind = m.scores === "logit" ? "raw logits" : "probabilities";
  $("model-activation").textContent = `${m.activation} (${kind})`;
  $("model-size").textContent = typeof m.size_mb === "number" ? `${m.size_mb.toFixed(1)} MB` : "unknown";
  const speed = [];
  if (typeof m.pairs_per_s === "number") speed.push(`${fmtInt(Math.round(m.pairs_per_s))} pairs/s at load`);
  if (typeof m.pairs_per_s_served === "number") {
    speed.push(`${fmtInt(Math.round(m.pairs_per_s_served))} pairs/s served`);
  }
  $("model-speed").textContent = speed.length ? speed.join(" · ") : "not measured";
  const s = state.search;
  $("model-index").textContent = s ? `${fmtInt(s.documents)} documents · ${s.retrievers.join(", ")}` : "none";
}

async function refreshSpeed() {
  try {
    const data = await api("v1/models");
    state.models = data.data[0];
    renderModel();
  } catch {
    // the card keeps its last values; the request that just ran already reported its own errors
  }
}

// ------------------------------------------------------------------ modes

function setUpModes() {
  const searchRadio = $("mode-search");
  const select = $("search-retriever");
  if (state.search) {
    searchRadio.disabled = false;
    $("mode-note").textContent = "";
    select.replaceChildren(
      ...state.search.retrievers.map((name) => {
        const option = el("option", { text: name, attrs: { value: name } });
        if (name === state.search.default_retriever) option.selected = true;
        return option;
      }),
    );
    $("search-depth").max = String(state.search.max_depth);
    $("search-k").max = String(state.search.max_k);
  } else {
    searchRadio.disabled = true;
    $("mode-note").textContent = "Search needs an index: start the server with --index DIR.";
  }
  const wanted = location.hash === "#rerank" || !state.search ? "rerank" : "search";
  setMode(wanted);
}

function setMode(mode) {
  const radio = $(`mode-${mode}`);
  radio.checked = true;
  $("search-panel").hidden = mode !== "search";
  $("rerank-panel").hidden = mode !== "rerank";
  const hash = mode === "rerank" ? "#rerank" : "#search";
  if (location.hash !== hash) history.replaceState(null, "", hash);
}

// ------------------------------------------------------------------ search mode

function intField(input) {
  const raw = input.value.trim();
  if (raw === "") return undefined;
  const value = Number(raw);
  return Number.isFinite(value) ? value : raw; // the server says what is wrong with it
}

async function runSearch(signal) {
  const query = $("search-query").value;
  const k = intField($("search-k"));
  const depth = intField($("search-depth"));
  const retriever = $("search-retriever").value || undefined;
  const kk = typeof k === "number" ? k : 10; // the server's defaults
  const dd = typeof depth === "number" ? depth : 100;
  const want = Math.max(kk, dd);
  const base = { query, retriever, return_documents: true };
  if (depth !== undefined) base.depth = depth;
  const started = performance.now();
  let reranked;
  let firstStage;
  let rerankedAt; // doc id -> its reranked hit, for every candidate known
  let complete;
  let answer;
  const plain = Number.isInteger(kk) && Number.isInteger(dd) && kk >= 1 && dd >= 1;
  if (state.search && plain && want <= state.search.max_k) {
    // one call returns every reranked candidate: both columns come from the same candidates
    answer = await api("v1/search", { ...base, k: want, rerank: true }, signal);
    const hits = answer.hits;
    reranked = hits.slice(0, kk);
    firstStage = hits.filter((h) => h.first_stage_rank <= kk).sort((a, b) => a.first_stage_rank - b.first_stage_rank);
    rerankedAt = new Map(hits.map((h) => [h.doc_id, h]));
    complete = true;
  } else {
    // deeper than one answer may be (or values the server will refuse, as sent): the reranked top k,
    // and the first stage's top k on its own
    const body = { ...base };
    if (k !== undefined) body.k = k;
    const [a, b] = await Promise.all([
      api("v1/search", { ...body, rerank: true }, signal),
      api("v1/search", { ...body, rerank: false }, signal),
    ]);
    answer = a;
    reranked = a.hits;
    firstStage = b.hits;
    rerankedAt = new Map(a.hits.map((h) => [h.doc_id, h]));
    complete = false;
  }
  const roundTrip = performance.now() - started;
  renderSearch({ query, k: kk, answer, reranked, firstStage, rerankedAt, complete, roundTrip });
  refreshSpeed();
}

function renderSearch({ query, k, answer, reranked, firstStage, rerankedAt, complete, roundTrip }) {
  const probability = state.models ? state.models.scores !== "logit" : true;
  const retriever = answer.retriever;
  const ceScale = scaler(
    [...reranked, ...firstStage].map((h) => (rerankedAt.get(h.doc_id) || h).rerank_score),
    probability,
  );
  const fsScale = scaler([...reranked, ...firstStage].map((h) => h.first_stage_score), false);
  const t = answer.timings_ms || {};

  // first stage column
  let left = 0;
  const firstItems = firstStage.map((h) => {
    const now = rerankedAt.get(h.doc_id);
    const li = el("li", { cls: "hit", attrs: { "data-doc-id": h.doc_id, "data-rank": h.first_stage_rank } });
    const head = el("div", { cls: "hit-head" }, [el("span", { cls: "rank", text: `#${h.first_stage_rank}` })]);
    if (now && now.rank <= k) {
      head.append(movement(h.first_stage_rank, now.rank));
      head.append(el("span", { cls: "help", text: `→ #${now.rank}` }));
    } else {
      left += 1;
      li.classList.add("left");
      const where = now ? `now #${now.rank}` : `now below #${k}`;
      if (now) head.append(movement(h.first_stage_rank, now.rank));
      head.append(el("span", { cls: "badge left", text: `left the top ${k}` }));
      head.append(el("span", { cls: "help", text: where }));
    }
    head.append(el("span", { cls: "doc-id", text: `id ${h.doc_id}` }));
    li.append(head, ...docBody(h.document));
    li.append(
      el("div", { cls: "scores" }, [
        scoreRow("fs", retriever, h.first_stage_score, fsScale, true),
        scoreRow("ce", "cross-encoder", now ? now.rerank_score : null, ceScale, false),
      ]),
    );
    return li;
  });

  // reranked column
  let entered = 0;
  const rerankedItems = reranked.map((h) => {
    const li = el("li", { cls: "hit", attrs: { "data-doc-id": h.doc_id, "data-rank": h.rank } });
    const head = el("div", { cls: "hit-head" }, [
      el("span", { cls: "rank", text: `#${h.rank}` }),
      movement(h.first_stage_rank, h.rank),
    ]);
    if (h.first_stage_rank > k) {
      entered += 1;
      li.classList.add("entered");
      head.append(el("span", { cls: "badge entered", text: `entered the top ${k}` }));
    }
    head.append(el("span", { cls: "help", text: `was #${h.first_stage_rank}` }));
    if (h.truncated) {
      const title = "the cross-encoder read only the start of this document";
      head.append(el("span", { cls: "badge cut", text: "cut to fit", attrs: { title } }));
    }
    head.append(el("span", { cls: "doc-id", text: `id ${h.doc_id}` }));
    li.append(head, ...docBody(h.document));
    li.append(
      el("div", { cls: "scores" }, [
        scoreRow("ce", "cross-encoder", h.rerank_score, ceScale, true),
        scoreRow("fs", retriever, h.first_stage_score, fsScale, false),
      ]),
    );
    return li;
  });

  $("first-list").replaceChildren(...firstItems);
  $("reranked-list").replaceChildren(...rerankedItems);
  $("first-retriever").textContent = retriever;
  $("first-meta").textContent =
    `top ${firstStage.length} of the first stage · ${fmtMs(t.first_stage)} retrieval + ` +
    `${fmtMs(t.fetch)} fetching texts` +
    (complete ? "" : " (from a separate first-stage call)");
  $("reranked-meta").textContent =
    `top ${reranked.length} of ${fmtInt(answer.depth)} candidates reranked · ${fmtMs(t.rerank)} · ` +
    `${state.models ? state.models.activation : ""} scores`;
  const status = $("search-status");
  status.replaceChildren(
    el("strong", { text: `${reranked.length} results` }),
    ` for “${query}”: ${entered} entered the top ${k}, ${left} left it. ` +
      `First stage ${fmtMs(t.first_stage)}, rerank ${fmtMs(t.rerank)}, total ${fmtMs(t.total)} on the server ` +
      `(${fmtMs(roundTrip)} round trip).`,
  );
  if (answer.num_truncated) {
    const n = answer.num_truncated;
    const max = state.models ? `${state.models.max_length} ` : "";
    status.append(` ${n} ${n === 1 ? "document was" : "documents were"} cut to the model's ${max}tokens.`);
  }
  linkColumns();
}

function docBody(doc) {
  const out = [];
  if (!doc) return out;
  if (doc.title) out.push(el("p", { cls: "title", text: doc.title }));
  out.push(...textBlock(doc.text));
  return out;
}

/** Pointing at a document outlines it in both columns. */
function linkColumns() {
  const items = document.querySelectorAll("#search-results .hit");
  for (const item of items) {
    const id = item.getAttribute("data-doc-id");
    const toggle = (on) => {
      for (const other of items) if (other.getAttribute("data-doc-id") === id) other.classList.toggle("linked", on);
    };
    item.addEventListener("mouseenter", () => toggle(true));
    item.addEventListener("mouseleave", () => toggle(false));
  }
}

// ------------------------------------------------------------------ rerank mode

function splitDocuments(text, mode) {
  const normalized = text.replace(/\r\n?/g, "\n");
  const parts = mode === "blank" ? normalized.split(/\n[ \t]*\n/) : normalized.split("\n");
  return parts.map((p) => p.trim()).filter((p) => p.length > 0);
}

function rerankBody() {
  const mode = document.querySelector('input[name="split"]:checked').value;
  const documents = splitDocuments($("rerank-documents").value, mode);
  const body = { query: $("rerank-query").value, documents, return_documents: false };
  const topN = intField($("rerank-top-n"));
  if (topN !== undefined) body.top_n = topN;
  if ($("rerank-raw").checked) body.raw_scores = true;
  return body;
}

function countDocuments() {
  const mode = document.querySelector('input[name="split"]:checked').value;
  const n = splitDocuments($("rerank-documents").value, mode).length;
  $("documents-count").textContent = `${n} document${n === 1 ? "" : "s"}.`;
}

async function runRerank(signal) {
  const body = rerankBody();
  const started = performance.now();
  const answer = await api("v1/rerank", body, signal);
  renderRerank(body, answer, performance.now() - started);
  refreshSpeed();
}

function renderRerank(body, answer, roundTrip) {
  const meta = (answer.meta && answer.meta.crossrank) || {};
  const probability = meta.scores ? meta.scores === "probability" : PROBABILITY_ACTIVATIONS.has(meta.activation);
  const scale = scaler(answer.results.map((r) => r.relevance_score), probability);
  const cut = new Set(meta.truncated || []);
  const items = answer.results.map((r, i) => {
    const li = el("li", { cls: "hit", attrs: { "data-index": r.index, "data-rank": i + 1 } });
    const head = el("div", { cls: "hit-head" }, [
      el("span", { cls: "rank", text: `#${i + 1}` }),
      movement(r.index + 1, i + 1),
      el("span", { cls: "help", text: `document ${r.index + 1} of ${body.documents.length}` }),
    ]);
    if (cut.has(r.index)) head.append(el("span", { cls: "badge cut", text: "cut to fit" }));
    li.append(head);
    li.append(
      el("div", { cls: "scores" }, [
        scoreRow("ce", probability ? "probability" : "logit", r.relevance_score, scale, true),
      ]),
    );
    li.append(...textBlock(body.documents[r.index]));
    return li;
  });
  $("rerank-list").replaceChildren(...items);
  const status = $("rerank-status");
  const kind = probability ? "probabilities" : "raw logits";
  status.replaceChildren(
    el("strong", { text: `${answer.results.length} of ${body.documents.length} documents` }),
    ` ranked. Scores: activation `,
    el("strong", { cls: "activation", text: meta.activation || "unknown" }),
    ` (${kind}). Model ${fmtMs(meta.inference_ms)}, queue ${fmtMs(meta.queue_ms)}, ${fmtMs(roundTrip)} round trip.`,
  );
  for (const warning of (answer.meta && answer.meta.warnings) || []) status.append(` ${warning}.`);
}

// ------------------------------------------------------------------ copy the request

function shellQuote(text) {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

function curlCommand(request) {
  const lines = [`curl -sS -X ${request.method} ${shellQuote(request.url)}`];
  for (const [name, value] of Object.entries(request.headers)) {
    if (name === "Authorization") lines.push(`-H "Authorization: Bearer $CROSSRANK_API_KEY"`);
    else lines.push(`-H ${shellQuote(`${name}: ${value}`)}`);
  }
  lines.push(`--data-raw ${shellQuote(request.body)}`);
  return lines.join(" \\\n  ");
}

function pythonCode(request) {
  const headers = Object.entries(request.headers).map(([name, value]) =>
    name === "Authorization"
      ? `        "Authorization": "Bearer " + os.environ["CROSSRANK_API_KEY"],`
      : `        ${JSON.stringify(name)}: ${JSON.stringify(value)},`,
  );
  // a JSON text has no unescaped """ and ends with } or ], so it fits a raw triple-quoted string as it is
  return [
    "import json",
    ...(request.headers.Authorization ? ["import os"] : []),
    "import urllib.request",
    "",
    `body = r"""${request.body}"""`,
    "request = urllib.request.Request(",
    `    ${JSON.stringify(request.url)},`,
    '    data=body.encode("utf-8"),',
    "    headers={",
    ...headers,
    "    },",
    `    method=${JSON.stringify(request.method)},`,
    ")",
    "with urllib.request.urlopen(request) as response:",
    "    print(json.dumps(json.load(response), indent=2))",
    "",
  ].join("\n");
}

async function copyRequest(kind) {
  const request = buildRequest("v1/rerank", rerankBody());
  const text = kind === "curl" ? curlCommand(request) : pythonCode(request);
  const pre = $("snippet");
  pre.textContent = text;
  pre.hidden = false;
  pre.dataset.kind = kind;
  const status = $("copy-status");
  const what = kind === "curl" ? "curl command" : "Python code";
  try {
    await navigator.clipboard.writeText(text);
    const key = request.headers.Authorization ? " (it reads the key from $CROSSRANK_API_KEY)" : "";
    status.textContent = `Copied the ${what}${key}.`;
  } catch {
    status.textContent = `Could not reach the clipboard; the ${what} is below to select and copy.`;
  }
}

// ------------------------------------------------------------------ wiring

function init() {
  $("api-key").value = apiKey();
  if (apiKey()) $("key-box").open = true;
  $("key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    try {
      if (key) sessionStorage.setItem(KEY_STORAGE, key);
      else sessionStorage.removeItem(KEY_STORAGE);
    } catch {
      showError("This browser does not allow sessionStorage; the key cannot be kept.");
      return;
    }
    showError("");
    await loadModels();
  });
  $("forget-key").addEventListener("click", () => {
    try {
      sessionStorage.removeItem(KEY_STORAGE);
    } catch {
      // nothing stored
    }
    $("api-key").value = "";
  });
  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", () => radio.checked && setMode(radio.value));
  }
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded("search", $("search-status"), "Searching…", runSearch);
  });
  $("rerank-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded("rerank", $("rerank-status"), "Reranking…", runRerank);
  });
  $("rerank-documents").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      $("rerank-form").requestSubmit();
    }
  });
  $("rerank-documents").addEventListener("input", countDocuments);
  for (const radio of document.querySelectorAll('input[name="split"]')) {
    radio.addEventListener("change", countDocuments);
  }
  $("copy-curl").addEventListener("click", () => copyRequest("curl"));
  $("copy-python").addEventListener("click", () => copyRequest("python"));
  countDocuments();
  loadModels();
}

init();
