// zswarm status page: polls /v1/status every second and draws it.
// Everything shown comes from peers and clients: it is written with textContent only.
"use strict";

const KEY_STORE = "zswarm-api-key";
const POLL_MS = 1000;
const $ = (id) => document.getElementById(id);
const openRequests = new Set();  // requests the user expanded (kept across refreshes)
let lastRequests = "";

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") node.className = v;
    else if (k === "title") node.title = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const fmt = {
  ms: (v) => (v === null || v === undefined ? "-" : v < 10 ? v.toFixed(2) + " ms"
                                                         : Math.round(v) + " ms"),
  secs: (v) => (v === null || v === undefined ? "-" : v.toFixed(1) + " s ago"),
  clock: (t) => new Date(t * 1000).toLocaleTimeString(),
  score: (v) => (v === null || v === undefined ? "-" : Number(v).toFixed(3)),
  uptime: (s) => {
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return h ? `${h} h ${m} min` : m ? `${m} min` : `${Math.floor(s)} s`;
  },
};

function fact(name, value, cls) {
  return el("div", {}, el("dt", {}, name), el("dd", cls ? { class: cls } : {}, value));
}

function drawNode(s) {
  const n = s.node, load = s.load;
  $("node-name").textContent = `${n.name} (${n.node_id})`;
  document.title = `zswarm: ${n.name}`;
  const dl = $("node");
  dl.replaceChildren(
    fact("state", n.state, `state state-${n.state}`),
    fact("address", n.address),
    fact(s.models.length > 1 ? "models" : "model", models(s)),
    fact("workers", `${load.workers_ready} ready, ${load.idle_workers} idle of ${n.workers}`),
    fact("queue", `${load.queue_depth} / ${load.max_queue}`),
    fact("tokens/s", load.tokens_per_s.toFixed(1)),
    fact("swarm", n.federation ? `${n.swarm} (discovery ${n.discovery})` : "federation off"),
    fact("swarm key", n.key ? `on (${n.key})` : "OFF: open swarm"),
    fact("RPC", n.rpc),
    fact("heartbeats", n.pub || "-"),
    fact("default strategy", n.strategy),
    fact("uptime", fmt.uptime(n.uptime_s)),
    fact("tokens generated", s.totals.tokens_generated),
    fact("prompt tokens from the cache",
         `${s.totals.prompt_tokens_cached} of ${s.totals.prompt_tokens}`),
    fact("votes sent / served", `${s.totals.votes_sent} / ${s.totals.votes_received}`),
    fact("frames dropped", dropped(s.totals)),
    fact("hardware", n.hardware || "-"),
  );
}

// "a (loaded), b (unloaded)": each model of the node and its state, the memory they take
function models(s) {
  if (s.models.length <= 1) return s.node.model_id;
  const each = s.models.map((m) => `${m.name} (${m.state}${m.error ? ": " + m.error : ""})`);
  const budget = s.memory.budget_mib ? ` of ${s.memory.budget_mib}` : "";
  return `${each.join(", ")}; about ${s.memory.estimate_mib}${budget} MiB loaded`;
}

// "163 (mdns bad-record 160, rpc bad-frame 3)": the count and what was dropped, where
function dropped(totals) {
  const by = (totals.frames_dropped_by || []).slice(0, 3)
    .map((d) => `${d.where} ${d.reason} ${d.count}`).join(", ");
  return by ? `${totals.frames_dropped} (${by})` : `${totals.frames_dropped}`;
}

// each cell carries its column's name: on a narrow screen the rows stack (status.css)
function labelled(tr, labels) {
  [...tr.cells].forEach((td, i) => td.setAttribute("data-label", labels[i] || ""));
  return tr;
}

function drawPeers(s) {
  const counts = Object.entries(s.peer_counts).filter(([, c]) => c > 0)
    .map(([state, c]) => `${c} ${state}`);
  $("peer-counts").textContent = counts.length ? counts.join(", ") : "none";
  const body = $("peers").tBodies[0];
  const labels = [...$("peers").tHead.rows[0].cells].map((th) => th.textContent);
  body.replaceChildren(...s.peers.map((p) => {
    const busy = ["alive", "suspect"].includes(p.state);
    return labelled(el("tr", { "data-name": p.name || p.address, "data-state": p.state },
      el("td", {}, p.name || "-"),
      el("td", {}, p.node_id ? p.node_id.slice(0, 12) : "-"),
      el("td", { class: `state state-${p.state}` }, p.state),
      el("td", { class: "text" }, p.model_id || "-"),
      el("td", {}, busy ? `queue ${p.load.queue_depth}, idle ${p.load.idle_workers}/` +
                          `${p.load.workers_ready}` : "-"),
      el("td", {}, busy ? p.load.tokens_per_s.toFixed(1) : "-"),
      el("td", {}, fmt.ms(p.rtt_ms)),
      el("td", {}, fmt.secs(p.last_seen_s)),
      el("td", {}, p.source),
      el("td", { class: "text" }, p.detail || "")), labels);
  }));
  $("peers").hidden = s.peers.length === 0;
  const none = $("no-peers");
  none.hidden = s.peers.length > 0;
  none.textContent = s.node.federation
    ? "No peer yet. Other nodes need the same swarm name and swarm key; `zswarm doctor` " +
      "checks this machine's network."
    : "Federation is off on this node (zswarm node --federation turns it on).";
}

const CANDIDATE_COLUMNS = ["#", "node/worker", "score", "answer key", "finish", "latency",
                           "text"];

function candidateTable(report) {
  const rows = report.candidates.map((c, i) => labelled(
    el("tr", { class: i === report.winner ? "winner" : "" },
      el("td", {}, i === report.winner ? `#${i} \u2605` : `#${i}`),
      el("td", {}, `${c.node}/${c.worker}`),
      el("td", {}, fmt.score(c.score)),
      el("td", {}, c.answer_key === null || c.answer_key === undefined ? "-" : c.answer_key),
      el("td", {}, c.finish_reason),
      el("td", {}, fmt.ms(c.latency_ms)),
      el("td", { class: "text" }, c.text)), CANDIDATE_COLUMNS));
  return el("table", { class: "candidates stack" },
    el("thead", {}, el("tr", {}, ...CANDIDATE_COLUMNS.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows));
}

function participantList(report) {
  return el("ul", { class: "participants" }, ...report.participants.map((p) =>
    el("li", {}, `${p.node}: asked ${p.requested}, got ${p.received}, ${p.outcome}` +
                 (p.latency_ms ? `, ${fmt.ms(p.latency_ms)}` : "") +
                 (p.detail ? ` (${p.detail})` : ""))));
}

function drawRequest(r) {
  const id = `${r.at}:${r.question}`;
  const rep = r.report;
  const meta = rep
    ? `${fmt.clock(r.at)} \u00b7 ${rep.strategy} \u00b7 ${rep.candidates.length} of ` +
      (rep.budget ? `a budget of ${rep.budget} (${rep.waves} wave${rep.waves === 1 ? "" : "s"}, ` +
                    `${rep.stop})` : `${rep.expected}`) +
      ` candidates from ${new Set(rep.candidates.map((c) => c.node)).size} ` +
      `node(s) \u00b7 agreement ${rep.agreement.toFixed(2)} \u00b7 ` +
      `${fmt.ms(rep.timings.total_ms)}`
    : `${fmt.clock(r.at)} \u00b7 ${r.strategy} \u00b7 n=${r.n}`;
  // the report opens from the summary; the toggle says so (and what is in it)
  const toggle = rep ? el("span", { class: "toggle" }) : null;
  const details = el("details", { class: "request", "data-id": id },
    el("summary", {},
      el("div", { class: "q" }, r.question || "(no user message)"),
      el("div", { class: r.error ? "a error" : "a" }, r.error || r.answer),
      el("div", { class: "meta" }, meta, toggle ? " \u00b7 " : null, toggle)),
    rep ? candidateTable(rep) : null,
    rep && rep.participants.length ? participantList(rep) : null,
    rep && rep.note ? el("p", { class: "meta" }, `note: ${rep.note}`) : null);
  const said = () => {
    if (toggle) {
      toggle.textContent = details.open ? "hide the report \u25be"
        : "show the report: candidates, scores, who said what \u25b8";
    }
  };
  details.open = openRequests.has(id);
  said();
  details.addEventListener("toggle", () => {
    if (details.open) openRequests.add(id); else openRequests.delete(id);
    said();
  });
  return details;
}

function drawRequests(s) {
  const signature = JSON.stringify(s.requests.map((r) => [r.at, r.question]));
  if (signature === lastRequests) return;  // unchanged: keep the DOM (and the reader's place)
  lastRequests = signature;
  $("no-requests").hidden = s.requests.length > 0;
  $("requests").replaceChildren(...s.requests.map(drawRequest));
}

function drawEvents(s) {
  $("events").replaceChildren(...s.events.map((e) =>
    el("li", { class: `level-${e.level}` }, el("time", {}, fmt.clock(e.at)), e.text)));
  if (!s.events.length) $("events").append(el("li", { class: "muted" }, "nothing yet"));
}

function setConn(text, ok) {
  const c = $("conn");
  c.textContent = text;
  c.className = ok ? "conn ok" : "conn bad";
}

async function poll() {
  const key = sessionStorage.getItem(KEY_STORE);
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  try {
    const r = await fetch("/v1/status", { headers, cache: "no-store" });
    if (r.status === 401) {
      $("key-form").hidden = false;
      $("main").hidden = true;
      $("key-error").textContent = key ? "wrong key" : "";
      setConn("API key needed", false);
      return;  // no polling until a key is given
    }
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const s = await r.json();
    $("key-form").hidden = true;
    $("main").hidden = false;
    drawNode(s);
    drawPeers(s);
    drawRequests(s);
    drawEvents(s);
    setConn(`live \u00b7 ${s.node.state}`, s.node.state === "ready");
    $("updated").textContent = `Last update ${fmt.clock(s.now)}.`;
  } catch (err) {
    setConn(`node not answering (${err.message}); retrying`, false);
  }
  setTimeout(poll, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY_STORE, $("key-input").value.trim());
    $("key-input").value = "";
    poll();
  });
  poll();
});
