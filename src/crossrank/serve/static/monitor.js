// crossrank monitor page: polls GET v1/monitor and draws each signal over time as an SVG plot
// (points and a rolling median). Texts go in as textContent; no outside requests.

const KEY_STORAGE = "crossrank.apiKey";
// the SVG namespace, read from the inline <svg> the page holds (the HTML parser sets it)
const SVG = document.getElementById("svg-namespace").namespaceURI;
const LABELS = {
  kendall_tau: "Kendall tau with the first stage (top 10)",
  top_score: "Top score",
  margin: "Margin, first to second",
  score_std: "Score spread (std)",
  truncated_share: "Truncated share",
};
const $ = (id) => document.getElementById(id);

async function monitor() {
  const headers = { Accept: "application/json" };
  let key = "";
  try {
    key = sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    key = "";
  }
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(new URL("v1/monitor", document.baseURI), { headers });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const message = data && data.error && data.error.message ? data.error.message : `status ${response.status}`;
    throw new Error(`The server answered ${response.status}: ${message}`);
  }
  return data;
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function plot(name, values) {
  const box = document.createElement("figure");
  box.className = "plot";
  box.dataset.signal = name;
  const title = document.createElement("h3");
  const label = document.createElement("span");
  label.textContent = LABELS[name] || name;
  const last = document.createElement("span");
  last.className = "num";
  last.textContent = values.length ? `median ${median(values).toFixed(3)}` : "no data";
  title.append(label, last);
  const svg = document.createElementNS(SVG, "svg");
  const W = 300;
  const H = 80;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${LABELS[name] || name} over the last ${values.length} rerankings`);
  const lo = Math.min(0, ...values);
  const hi = Math.max(1, ...values);
  const x = (i) => (values.length > 1 ? (i / (values.length - 1)) * (W - 4) + 2 : W / 2);
  const y = (v) => H - 4 - ((v - lo) / (hi - lo || 1)) * (H - 8);
  const axis = document.createElementNS(SVG, "line");
  axis.setAttribute("class", "axis");
  axis.setAttribute("x1", "0");
  axis.setAttribute("x2", String(W));
  axis.setAttribute("y1", String(y(lo)));
  axis.setAttribute("y2", String(y(lo)));
  svg.append(axis);
  values.forEach((v, i) => {
    const c = document.createElementNS(SVG, "circle");
    c.setAttribute("class", "dots");
    c.setAttribute("cx", x(i).toFixed(1));
    c.setAttribute("cy", y(v).toFixed(1));
    c.setAttribute("r", "1.5");
    svg.append(c);
  });
  const w = Math.max(1, Math.min(25, Math.floor(values.length / 8)));
  if (values.length >= 2) {
    const points = values.map((_, i) => `${x(i).toFixed(1)},${y(median(values.slice(Math.max(0, i - w + 1), i + 1))).toFixed(1)}`);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("class", "line");
    line.setAttribute("points", points.join(" "));
    svg.append(line);
  }
  box.append(title, svg);
  return box;
}

function windowsTable(windows) {
  const names = Object.keys(LABELS);
  const table = document.createElement("table");
  table.className = "windows-table";
  const head = document.createElement("tr");
  for (const h of ["window", "rerankings", ...names.map((n) => `${LABELS[n]} (p50)`), "drift"]) {
    const th = document.createElement("th");
    th.textContent = h;
    head.append(th);
  }
  table.append(head);
  for (const [key, w] of Object.entries(windows)) {
    const row = document.createElement("tr");
    row.dataset.window = key;
    const cells = [key.replace("_", " "), String(w.count)];
    for (const n of names) cells.push(w.signals[n] ? w.signals[n].p50.toFixed(3) : "–");
    cells.push(w.drift ? (w.drift.drift ? "drifted" : "steady") : "no profile");
    for (const c of cells) {
      const td = document.createElement("td");
      td.textContent = c;
      row.append(td);
    }
    table.append(row);
  }
  return table;
}

async function refresh() {
  let data;
  try {
    data = await monitor();
  } catch (err) {
    $("error").textContent = String(err.message || err);
    return;
  }
  $("error").textContent = "";
  $("mon-total").textContent = String(data.total);
  const drift = $("mon-drift");
  drift.textContent = data.profile ? (data.drift ? "drifted from the profile" : "steady") : "no profile loaded";
  drift.className = data.profile ? (data.drift ? "drifted" : "steady") : "";
  $("mon-profile").textContent = data.profile ? `${data.profile.source} (${data.profile.num_queries} queries)` : "–";
  const n = data.series.time.length;
  $("plots-note").textContent = n ? `the last ${n} rerankings, oldest left; line: rolling median` : "no rerankings yet";
  const plots = $("plots");
  plots.replaceChildren(...Object.keys(LABELS).map((name) => plot(name, data.series[name] || [])));
  $("windows").replaceChildren(windowsTable(data.windows));
  document.body.dataset.total = String(data.total);
}

refresh();
setInterval(refresh, 5000);
