// The Tessera tracker dashboard: polls the JSON API and redraws the page in place.
// Every value from the API reaches the page as text (textContent, text nodes or
// attributes), never as markup: file names and user names come from other machines.
"use strict";

const POLL_MS = 1500;
const FETCH_TIMEOUT_MS = 4000;
const FILE_LIMIT = 200;
const PEER_LIMIT = 1000;
const CHUNK_ROWS = 400;
// The chunk map comes a page at a time (the API's largest page); a file of any size costs
// the pages opened with "show more", each refreshed by one request per poll.
const CHUNK_PAGE = 1024;

const state = {
  query: "",
  selected: null, // id of the file whose chunk map is open
  chunkPages: 1, // pages of its chunk map shown
  users: new Map(), // peer id -> user name, for the chunk map
  target: null, // the tracker's replication target N
  reachable: null, // the target as far as the serving peers can hold copies now
  lastOk: 0,
  seq: 0, // the newest poll; older answers are dropped
  timer: null,
};

const $ = (id) => document.getElementById(id);

// Builds an element; strings become text, never HTML.
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else e.setAttribute(k, String(v));
  }
  for (const k of kids) {
    if (k === undefined || k === null) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

function setText(id, v) {
  const e = $(id);
  if (e.textContent !== v) e.textContent = v;
}

const present = (v) => v !== undefined && v !== null;
const dash = "–";

function fmtNum(n) {
  return present(n) ? Number(n).toLocaleString("en-US") : dash;
}

function fmtBytes(n) {
  if (!present(n)) return dash;
  n = Number(n);
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  if (i === 0) return `${n} B`;
  const digits = Math.abs(n) < 10 ? 2 : Math.abs(n) < 100 ? 1 : 0;
  return `${n.toFixed(digits)} ${units[i]}`;
}

function fmtRate(n) {
  return present(n) ? `${fmtBytes(n)}/s` : dash;
}

function fmtAgo(iso) {
  if (!iso) return "never";
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return dash;
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min ago`;
  if (s < 36 * 3600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

const shortId = (id) => String(id || "").slice(0, 12);

class HttpError extends Error {
  constructor(status, path) {
    super(`${path}: HTTP ${status}`);
    this.status = status;
  }
}

// One file with the chunk map pages shown, merged into one chunk_map.
async function getDetail(id) {
  const base = `/api/v1/files/${encodeURIComponent(id)}?chunk_limit=${CHUNK_PAGE}`;
  const pages = await Promise.all(
    Array.from({ length: state.chunkPages }, (_, i) => getJson(`${base}&chunk_offset=${i * CHUNK_PAGE}`)),
  );
  return {
    ...pages[0],
    chunk_map: pages.flatMap((p) => p.chunk_map || []),
    next_chunk_offset: pages[pages.length - 1].next_chunk_offset,
  };
}

async function getJson(path) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
  try {
    const resp = await fetch(path, {
      signal: ctl.signal,
      cache: "no-store",
      headers: { Accept: "application/json" },
    });
    if (!resp.ok) throw new HttpError(resp.status, path);
    return await resp.json();
  } finally {
    clearTimeout(timer);
  }
}

// ---- rendering ---------------------------------------------------------------------

function renderStats(s) {
  state.target = present(s.replication) ? Number(s.replication) : null;
  state.reachable = present(s.reachable_replication) ? Number(s.reachable_replication) : state.target;
  setText("s-peers-up", fmtNum(s.peers_up));
  setText("s-peers-down", fmtNum(s.peers_down));
  setText("s-users", fmtNum(s.users));
  setText("s-files", fmtNum(s.files));
  setText("s-chunks", fmtNum(s.chunks));
  setText("s-under", fmtNum(s.under_replicated_chunks));
  setText("s-target", fmtNum(s.replication));
  setText("s-pending", fmtNum(s.pending_tasks));
  setText("s-delivered", fmtNum(s.delivered_tasks));
  setText("s-rate", fmtRate(s.transfer_bytes_per_sec));
  setText("s-active", fmtNum(s.active_transfers));
  setText("s-bytes-total", fmtBytes(s.bytes_transferred_total));
  setText("s-chunks-total", fmtNum(s.chunks_transferred_total));
  // With fewer peers able to hold copies than the target, the chunks short of it are a
  // fact to state, not an alarm: only chunks short of what is reachable are (and chunks
  // with no live copy at all).
  const unreachable = s.unreachable_target === true;
  const under = Number(s.under_replicated_chunks || 0);
  const fixable = present(s.under_reachable_chunks) ? Number(s.under_reachable_chunks) : under;
  const none = state.reachable === 0 && under > 0;
  $("health-card").classList.toggle("warn", fixable > 0 || none);
  $("s-reach").hidden = !unreachable;
  setText("s-reach", unreachable ? reachNote(state.target, state.reachable) : "");
  $("legend-short").hidden = !unreachable;
}

function reachNote(target, reachable) {
  const who = reachable === 0 ? "no peer can" : reachable === 1 ? "only 1 peer can" : `only ${reachable} peers can`;
  return `target ${target}, ${who} hold copies`;
}

function storageCell(used, quota) {
  if (!present(quota)) return el("td", {}, dash);
  const pct = quota > 0 ? Math.min(100, (100 * Number(used || 0)) / quota) : 0;
  const bar = el("span", { class: "meter", "aria-hidden": "true" });
  const fill = el("span", { class: pct >= 90 ? "fill full" : "fill" });
  fill.style.width = `${pct.toFixed(1)}%`;
  bar.append(fill);
  const label = quota > 0 ? `${fmtBytes(used)} / ${fmtBytes(quota)}` : `${fmtBytes(used)} / none`;
  return el("td", {}, el("span", { class: "storage" }, bar, el("span", {}, label)));
}

function renderPeers(list) {
  const items = (list.items || []).slice();
  state.users = new Map(items.map((p) => [p.id, p.user]));
  items.sort((a, b) =>
    a.state === b.state ? String(a.user).localeCompare(String(b.user)) : a.state === "up" ? -1 : 1,
  );
  const rows = items.map((p) => {
    const up = p.state === "up";
    return el(
      "tr",
      { "data-peer-id": p.id, "data-state": p.state, class: up ? "" : "down" },
      el("td", {}, el("span", { class: up ? "pill pill-up" : "pill pill-down" }, up ? "up" : "down")),
      el("td", { class: "strong" }, p.user),
      el("td", { class: "mono", title: p.id }, shortId(p.id)),
      el("td", { class: "mono" }, p.addr),
      el("td", { class: "num" }, fmtBytes(p.shared_bytes)),
      el("td", { class: "num" }, fmtBytes(p.held_bytes)),
      storageCell(p.storage_used, p.storage_quota),
      el("td", { class: "num", title: p.last_seen || "" }, fmtAgo(p.last_seen)),
    );
  });
  $("peers").tBodies[0].replaceChildren(...rows);
  $("peers-empty").hidden = rows.length > 0;
  const up = items.filter((p) => p.state === "up").length;
  const total = present(list.total) ? Number(list.total) : items.length;
  const more = total > items.length ? ` (showing ${fmtNum(items.length)} of ${fmtNum(total)})` : "";
  setText("peers-count", `${up} up, ${items.length - up} down${more}`);
}

function copiesClass(copies) {
  if (!present(copies)) return "";
  if (copies <= 0) return "bad";
  if (state.reachable !== null && copies < state.reachable) return "low";
  // As many copies as the peers can hold, short of an unreachable target: neutral.
  if (state.target !== null && copies < state.target) return "short";
  return "ok";
}

// The file's other names (its sharers' own), or undefined when it has one.
function otherNames(f) {
  const others = (f.names || []).filter((n) => n !== f.name);
  return others.length ? others.join(" · ") : undefined;
}

function renderFiles(list) {
  const items = list.items || [];
  const rows = items.map((f) => {
    // A collection (a shared folder) is marked as one by its name and its type.
    const folder = f.type === "collection" ? " folder" : "";
    const tr = el(
      "tr",
      {
        "data-file-id": f.id,
        tabindex: "0",
        class: f.id === state.selected ? "selected" : "",
        title: "Show the chunk map",
      },
      // Each sharer names its own listing: the others show on hover and in the detail.
      el("td", { class: `name strong${folder}`, title: otherNames(f) }, f.name),
      el("td", {}, el("span", { class: `tag${folder}` }, f.type)),
      el("td", { class: "num" }, fmtBytes(f.size)),
      el("td", { class: "num" }, fmtNum(f.chunks)),
      el("td", { class: `num ${copiesClass(f.min_copies)}` }, fmtNum(f.min_copies)),
      el("td", { class: "num" }, fmtNum(f.holders)),
      el("td", { class: "mono", title: f.id }, shortId(f.id)),
    );
    return tr;
  });
  $("files").tBodies[0].replaceChildren(...rows);
  $("files-empty").hidden = rows.length > 0;
  const total = present(list.total) ? list.total : items.length;
  setText(
    "files-count",
    total > items.length ? `showing ${items.length} of ${fmtNum(total)}` : `${fmtNum(total)} files`,
  );
}

function holderLabel(p) {
  const user = state.users.get(p.id);
  return el(
    "span",
    { class: `holder ${p.state === "up" ? "" : "down"}`, title: `${p.id} (${p.state})` },
    user || shortId(p.id),
    el("small", {}, ` ${p.kind || ""}`),
  );
}

// Live holders first, then by user name, so the list does not jump between polls.
function sortedHolders(peers) {
  const name = (p) => state.users.get(p.id) || p.id;
  return (peers || [])
    .slice()
    .sort((a, b) => (a.state === b.state ? name(a).localeCompare(name(b)) : a.state === "up" ? -1 : 1));
}

function renderDetail(d) {
  $("detail").hidden = false;
  setText("detail-name", d.name);
  const meta = [
    ["size", fmtBytes(d.size)],
    ["type", d.type],
    ["chunks", `${fmtNum(d.chunks)} × ${fmtBytes(d.chunk_size)}`],
    ["holders", fmtNum(d.holders)],
    ["sha256", d.sha256],
    ...(otherNames(d) ? [["also named", otherNames(d)]] : []),
  ].map(([k, v]) => el("span", {}, `${k} `, el("b", { class: k === "sha256" ? "mono" : "" }, v)));
  $("detail-meta").replaceChildren(...meta);

  const chunks = d.chunk_map || [];
  const cellClass = { ok: "c-ok", low: "c-low", short: "c-short" };
  const cells = chunks.map((c) =>
    el("i", {
      class: `c ${cellClass[copiesClass(c.copies)] || "c-none"}`,
      role: "listitem",
      title: `chunk ${c.index}: ${c.copies} ${c.copies === 1 ? "copy" : "copies"}`,
      "data-copies": c.copies,
    }),
  );
  $("chunkmap").replaceChildren(...cells);
  const total = Number(d.chunks || chunks.length);
  const more = present(d.next_chunk_offset);
  $("chunks-more").hidden = !more;
  if (more) {
    const next = Math.min(CHUNK_PAGE, total - chunks.length);
    setText("chunks-more-btn", `Show ${fmtNum(next)} more (${fmtNum(chunks.length)} of ${fmtNum(total)} chunks shown)`);
  }

  const rows = chunks.slice(0, CHUNK_ROWS).map((c) =>
    el(
      "tr",
      {},
      el("td", { class: "num" }, c.index),
      el("td", { class: "num" }, fmtBytes(c.offset)),
      el("td", { class: "num" }, fmtBytes(c.size)),
      el("td", { class: `num ${copiesClass(c.copies)}` }, fmtNum(c.copies)),
      el(
        "td",
        { class: "holders" },
        ...sortedHolders(c.peers).map(holderLabel),
        c.peers_total > (c.peers || []).length
          ? el("small", { class: "muted" }, `+${fmtNum(c.peers_total - c.peers.length)} more`)
          : null,
      ),
    ),
  );
  if (total > CHUNK_ROWS) {
    rows.push(el("tr", {}, el("td", { colspan: "5", class: "muted" }, `… ${fmtNum(total - CHUNK_ROWS)} more chunks`)));
  }
  $("chunks").tBodies[0].replaceChildren(...rows);
}

function renderDetailGone() {
  $("detail-meta").replaceChildren(el("span", { class: "bad" }, "This file is no longer known to the tracker."));
  $("chunkmap").replaceChildren();
  $("chunks-more").hidden = true;
  $("chunks").tBodies[0].replaceChildren();
}

function setOnline(ok, err) {
  const pill = $("conn");
  if (ok) {
    state.lastOk = Date.now();
    pill.className = "pill pill-up";
    pill.textContent = "live";
    pill.title = "";
  } else {
    pill.className = "pill pill-down";
    pill.textContent = "unreachable";
    pill.title = String(err || "");
  }
  $("offline").hidden = ok;
  document.body.classList.toggle("stale", !ok);
  tickClock();
}

function tickClock() {
  if (!state.lastOk) return setText("updated", "");
  const s = Math.round((Date.now() - state.lastOk) / 1000);
  setText("updated", s < 2 ? "updated just now" : `last update ${s} s ago`);
}

// ---- polling -----------------------------------------------------------------------

async function poll() {
  clearTimeout(state.timer);
  const seq = ++state.seq;
  const q = encodeURIComponent(state.query);
  const selected = state.selected;
  try {
    const [stats, peers, files] = await Promise.all([
      getJson("/api/v1/stats"),
      getJson(`/api/v1/peers?limit=${PEER_LIMIT}`),
      getJson(`/api/v1/files?q=${q}&limit=${FILE_LIMIT}`),
    ]);
    let detail = null;
    let gone = false;
    if (selected) {
      try {
        detail = await getDetail(selected);
      } catch (e) {
        if (e instanceof HttpError && e.status === 404) gone = true;
        else throw e;
      }
    }
    if (seq !== state.seq) return; // a newer poll has started
    renderStats(stats);
    renderPeers(peers);
    renderFiles(files);
    if (selected === state.selected && selected) {
      if (detail) renderDetail(detail);
      else if (gone) renderDetailGone();
    }
    setOnline(true);
  } catch (e) {
    if (seq !== state.seq) return;
    setOnline(false, e);
  } finally {
    if (seq === state.seq) state.timer = setTimeout(poll, POLL_MS);
  }
}

function select(id) {
  state.selected = id;
  state.chunkPages = 1;
  for (const tr of $("files").tBodies[0].rows) {
    tr.classList.toggle("selected", tr.dataset.fileId === id);
  }
  if (!id) {
    $("detail").hidden = true;
    return;
  }
  $("detail").hidden = false;
  setText("detail-name", "loading…");
  $("chunkmap").replaceChildren();
  $("chunks-more").hidden = true;
  $("chunks").tBodies[0].replaceChildren();
  poll();
}

function init() {
  let debounce = null;
  $("search").addEventListener("input", (ev) => {
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      state.query = ev.target.value.trim();
      poll();
    }, 200);
  });
  const tbody = $("files").tBodies[0];
  tbody.addEventListener("click", (ev) => {
    const tr = ev.target.closest("tr[data-file-id]");
    if (tr) select(tr.dataset.fileId);
  });
  tbody.addEventListener("keydown", (ev) => {
    const tr = ev.target.closest("tr[data-file-id]");
    if (tr && (ev.key === "Enter" || ev.key === " ")) {
      ev.preventDefault();
      select(tr.dataset.fileId);
    }
  });
  $("detail-close").addEventListener("click", () => select(null));
  $("chunks-more-btn").addEventListener("click", () => {
    state.chunkPages += 1;
    poll();
  });
  setInterval(tickClock, 1000);
  poll();
}

document.addEventListener("DOMContentLoaded", init);
