// crossrank judge page: pools both stages' results for a query (blind, shuffled by the server),
// and saves each grade at once through this server's /v1/judge API. Texts go in as textContent.

const KEY_STORAGE = "crossrank.apiKey"; // the playground's key, when the server has keys
const GRADE_NAMES = { 2: "relevant", 1: "partly relevant", 0: "not relevant", "-1": "skipped" };

const $ = (id) => document.getElementById(id);

const state = {
  session: null, // GET v1/judge
  queryId: null, // the query open
  docs: [], // its pool, in the order shown: {id, title, text, grade}
  at: 0, // the document shown
  chain: Promise.resolve(), // grades are sent one after another, in the order given
};

class ApiFailure extends Error {}

async function api(path, body) {
  const headers = { Accept: "application/json" };
  const init = { method: body === undefined ? "GET" : "POST", headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let key = "";
  try {
    key = sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    key = "";
  }
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(new URL(path, document.baseURI), init);
  const text = await response.text();
  let data = null;
  try {
    data = JSON.parse(text);
  } catch {
    data = null;
  }
  if (!response.ok) {
    const detail = data && data.error && data.error.message ? data.error.message : text.slice(0, 300);
    throw new ApiFailure(`The server answered ${response.status}: ${detail}`);
  }
  return data;
}

function showError(err) {
  $("error").textContent = err ? String(err.message || err) : "";
}

function status(text) {
  $("status").textContent = text;
}

// ------------------------------------------------------------------ the session and its queries

function renderSession() {
  const s = state.session;
  $("judge-name").textContent = s.judge;
  $("judge-qrels").textContent = s.qrels;
  $("judge-depth").textContent = `top ${s.pool_depth} of each stage`;
  const done = s.queries.filter((q) => q.done).length;
  const graded = s.queries.reduce((n, q) => n + q.judged, 0);
  $("judge-progress-text").textContent = `${done} of ${s.queries.length} queries · ${graded} documents`;
  $("judge-progress").max = Math.max(s.queries.length, 1);
  $("judge-progress").value = done;
  $("session-card").setAttribute("aria-busy", "false");
  const list = $("query-list");
  list.replaceChildren();
  for (const q of s.queries) {
    const item = document.createElement("li");
    if (q.done) item.className = "done";
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.queryId = q.id;
    if (q.id === state.queryId) button.setAttribute("aria-current", "true");
    const label = document.createElement("span");
    label.textContent = q.text;
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = q.total === null ? "new" : `${q.judged}/${q.total}`;
    button.append(label, count);
    button.addEventListener("click", () => openQuery(q.id));
    item.append(button);
    list.append(item);
  }
}

function updateQuery(summary) {
  const i = state.session.queries.findIndex((q) => q.id === summary.id);
  if (i >= 0) state.session.queries[i] = summary;
  else state.session.queries.push(summary);
  renderSession();
}

async function load() {
  try {
    state.session = await api("v1/judge");
  } catch (err) {
    $("judge-name").textContent = "unavailable";
    showError(err);
    return;
  }
  renderSession();
  const wanted = new URLSearchParams(location.hash.slice(1)).get("q");
  const next = state.session.queries.find((q) => q.id === wanted) || state.session.queries.find((q) => !q.done);
  if (next) await openQuery(next.id);
  else if (state.session.queries.length) status(`Every query is judged: ${state.session.qrels} is complete.`);
  else status("No queries yet: type one on the left.");
}

// ------------------------------------------------------------------ one query

async function openQuery(id) {
  showError(null);
  state.queryId = id;
  const q = state.session.queries.find((x) => x.id === id);
  $("query-text").textContent = q ? q.text : id;
  $("judging").setAttribute("aria-busy", "true");
  status("Pooling both stages' results…");
  let answer;
  try {
    answer = await api("v1/judge/pool", { query_id: id });
  } catch (err) {
    showError(err);
    status("");
    return;
  } finally {
    $("judging").setAttribute("aria-busy", "false");
  }
  if (state.queryId !== id) return; // another query was opened meanwhile
  history.replaceState(null, "", `#q=${encodeURIComponent(id)}`);
  state.docs = answer.documents;
  const first = state.docs.findIndex((d) => d.grade === null);
  state.at = first >= 0 ? first : 0;
  updateQuery(answer.query);
  status(first >= 0 ? "" : "This query is judged. Press n for the next one.");
  renderDoc();
}

function renderDoc() {
  const doc = state.docs[state.at];
  const card = $("doc");
  if (!doc) {
    card.dataset.docId = "";
    $("doc-title").textContent = "";
    $("doc-text").textContent = "The pool is empty: the search found nothing for this query.";
    $("doc-id").textContent = "";
    return;
  }
  card.dataset.docId = doc.id;
  $("doc-title").textContent = doc.title;
  $("doc-text").textContent = doc.text;
  $("doc-id").textContent = doc.id;
  const judged = state.docs.filter((d) => d.grade !== null).length;
  $("doc-position").textContent =
    `Document ${state.at + 1} of ${state.docs.length} · ${judged} judged` +
    (doc.grade === null ? "" : ` · this one: ${GRADE_NAMES[doc.grade]}`);
  for (const b of document.querySelectorAll(".grade")) {
    b.setAttribute("aria-pressed", String(doc.grade !== null && Number(b.dataset.grade) === doc.grade));
  }
  const pool = $("pool");
  pool.replaceChildren();
  state.docs.forEach((d, i) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = String(i + 1);
    button.dataset.docId = d.id;
    button.dataset.grade = d.grade === null ? "" : String(d.grade);
    button.className = d.grade === null ? "" : `graded-${d.grade}`;
    button.title = d.grade === null ? "not judged" : GRADE_NAMES[d.grade];
    if (i === state.at) button.setAttribute("aria-current", "true");
    button.addEventListener("click", () => {
      state.at = i;
      renderDoc();
    });
    item.append(button);
    pool.append(item);
  });
}

function grade(value) {
  const doc = state.docs[state.at];
  const queryId = state.queryId;
  if (!doc || queryId === null) return;
  state.chain = state.chain.then(async () => {
    try {
      const summary = await api("v1/judge/judgment", { query_id: queryId, doc_id: doc.id, grade: value });
      doc.grade = value;
      showError(null);
      updateQuery(summary);
      if (queryId !== state.queryId) return;
      status(`Saved: ${doc.id} ${GRADE_NAMES[value]}.`);
      advance(summary);
    } catch (err) {
      showError(err); // not saved: the document stays ungraded and shown
    }
  });
}

function advance(summary) {
  const n = state.docs.length;
  for (let step = 1; step <= n; step += 1) {
    const i = (state.at + step) % n;
    if (state.docs[i].grade === null) {
      state.at = i;
      renderDoc();
      return;
    }
  }
  renderDoc();
  if (summary.done) {
    const next = state.session.queries.find((q) => !q.done);
    if (next) {
      status("Query judged. Opening the next one…");
      openQuery(next.id);
    } else {
      status(`Every query is judged: ${state.session.qrels} is complete.`);
    }
  }
}

function nextQuery() {
  const qs = state.session ? state.session.queries : [];
  const at = qs.findIndex((q) => q.id === state.queryId);
  const rest = [...qs.slice(at + 1), ...qs.slice(0, Math.max(at, 0))];
  const next = rest.find((q) => !q.done) || rest[0];
  if (next) openQuery(next.id);
}

// ------------------------------------------------------------------ keys and controls

document.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLInputElement || event.ctrlKey || event.metaKey || event.altKey) return;
  const keys = { 2: 2, 1: 1, 0: 0, s: -1 };
  if (event.key in keys) {
    event.preventDefault();
    grade(keys[event.key]);
  } else if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
    event.preventDefault();
    const n = state.docs.length;
    if (n) {
      state.at = (state.at + (event.key === "ArrowRight" ? 1 : n - 1)) % n;
      renderDoc();
    }
  } else if (event.key === "n") {
    event.preventDefault();
    nextQuery();
  }
});

for (const button of document.querySelectorAll(".grade")) {
  button.addEventListener("click", () => grade(Number(button.dataset.grade)));
}

$("add-query").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("new-query").value.trim();
  if (!text) return;
  try {
    const q = await api("v1/judge/queries", { query: text });
    $("new-query").value = "";
    updateQuery(q);
    await openQuery(q.id);
  } catch (err) {
    showError(err);
  }
});

load();
