// The demo page: pick a click history, ask POST /rec/recall for items, show them per interest.
// Reads only (GET /demo/info, GET /rec/items, POST /rec/recall); text goes in with textContent,
// never as HTML, so a catalogue's titles cannot inject markup.
"use strict";

const $ = (id) => document.getElementById(id);
const STORE = "recall-demo-history";
let info = null;          // GET /demo/info: keys, interests, name_field, filter, limits
let history = [];         // [{item, label, meta, unknown}] oldest click first
let searchSeq = 0;        // answers to older keystrokes are dropped

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function labelOf(item) {
  const name = info.name_field && item[info.name_field];
  return name ? `${name} (${item.item})` : String(item.item);
}

function metaOf(item) {
  const value = info.filter && item[info.filter.field];
  return Array.isArray(value) ? value.join(", ") : (value || "");
}

async function getJSON(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (err) {
    return { status: 0, body: { detail: "the recall service does not answer" } };
  }
  let body = null;
  try { body = await response.json(); } catch (err) { body = { detail: response.statusText }; }
  return { status: response.status, body, retry: response.headers.get("Retry-After") };
}

// One status line; `state` names it for people and for the browser tests (data-state).
function showState(state, text) {
  const box = $("status");
  box.hidden = !text;
  box.dataset.state = state;
  box.className = `state ${state}`;
  box.textContent = text || "";
}

function explain(answer) {
  const detail = (answer.body && answer.body.detail) || "";
  if (answer.status === 409 && /collection is empty/.test(detail)) {
    return ["empty-collection", "The collection is empty: load the items first. This page " +
      "changes nothing; whoever runs the service loads them with " +
      `curl -X POST ${location.origin}/rec/insert_data, then press Recall again.`];
  }
  if (answer.status === 409) return ["conflict", `Not now (409): ${detail}`];
  if (answer.status === 503 && /overloaded/.test(detail)) {
    return ["overloaded", `The service is overloaded (503); try again in ${answer.retry || 1} s.`];
  }
  if (answer.status === 503) {
    return ["milvus-down", `Milvus is unavailable (503), so nothing can be recalled; ` +
      `try again in ${answer.retry || 5} s. ${detail}`];
  }
  if (answer.status === 0) return ["offline", "The recall service does not answer."];
  return ["error", `The service refused (${answer.status}): ${detail}`];
}

// ------------------------------------------------------------------ search and history
async function search() {
  const q = $("search").value.trim();
  const seq = ++searchSeq;
  const found = $("found");
  if (!q) { found.replaceChildren(); $("search-note").textContent = ""; return; }
  const answer = await getJSON(`rec/items?q=${encodeURIComponent(q)}&limit=20`);
  if (seq !== searchSeq) return;
  found.dataset.q = q;  // which text the list answers (a pending search clears it)
  if (answer.status !== 200) {
    found.replaceChildren();
    $("search-note").textContent = answer.body.detail;
    return;
  }
  $("search-note").textContent = answer.body.length ? "" : `No item matches “${q}”.`;
  found.replaceChildren(...answer.body.map((item) => {
    const li = el("li");
    li.dataset.item = item.item;
    const add = el("button", "Add", "small");
    add.type = "button";
    add.addEventListener("click", () => addItem(item));
    li.append(add, el("span", labelOf(item), "name"), el("span", metaOf(item), "meta"));
    return li;
  }));
}

// Enter in the search box adds the item whose key (or id, or name) is exactly what was typed.
async function addTyped() {
  const q = $("search").value.trim();
  if (!q) return;
  const answer = await getJSON(`rec/items?q=${encodeURIComponent(q)}&limit=20`);
  const items = answer.status === 200 ? answer.body : [];
  const same = (v) => String(v).toLowerCase() === q.toLowerCase();
  const hit = items.find((i) => same(i.item)) ||
    items.find((i) => info.name_field && same(i[info.name_field]));
  if (hit) { addItem(hit); return; }
  showState("unknown-key", `Unknown key “${q}”: the served model's catalogue has no such ` +
    "item. Pick one from the search results.");
}

function addItem(item) {
  if (history.some((h) => h.item === item.item)) {
    showState("note", `${labelOf(item)} is already in the history.`);
    return;
  }
  if (history.length >= info.max_history) {
    showState("note", `A history holds at most ${info.max_history} items here.`);
    return;
  }
  history.push({ item: item.item, label: labelOf(item), meta: metaOf(item), unknown: false });
  showState("", "");
  renderHistory();
}

function move(i, by) {
  const j = i + by;
  if (j < 0 || j >= history.length) return;
  [history[i], history[j]] = [history[j], history[i]];
  renderHistory();
}

function renderHistory() {
  localStorage.setItem(STORE, JSON.stringify(history));
  $("history-empty").hidden = history.length > 0;
  $("recall").disabled = history.length === 0;
  $("history").replaceChildren(...history.map((h, i) => {
    const li = el("li", null, h.unknown ? "unknown" : "");
    li.dataset.item = h.item;
    const buttons = [["↑", "up", -1], ["↓", "down", 1], ["✕", "remove", 0]].map(([t, name, by]) => {
      const b = el("button", t, `small ${name}`);
      b.type = "button";
      b.title = name;
      b.addEventListener("click", () => {
        if (by) move(i, by); else { history.splice(i, 1); renderHistory(); }
      });
      return b;
    });
    li.append(el("span", h.label, "name"), el("span", h.unknown ? "unknown key" : h.meta, "meta"),
      ...buttons);
    return li;
  }));
}

// A history kept from an earlier visit may name items this model does not know: mark them.
async function restoreHistory() {
  let saved = [];
  try { saved = JSON.parse(localStorage.getItem(STORE)) || []; } catch (err) { saved = []; }
  history = [];
  for (const h of saved.slice(0, info.max_history)) {
    if (typeof h.item !== (info.keys ? "string" : "number")) continue;
    const answer = await getJSON(`rec/items?q=${encodeURIComponent(h.item)}&limit=20`);
    const hit = answer.status === 200 && answer.body.find((i) => i.item === h.item);
    history.push(hit ? { item: hit.item, label: labelOf(hit), meta: metaOf(hit), unknown: false }
      : { ...h, unknown: true });
  }
  renderHistory();
}

// ------------------------------------------------------------------ recall and columns
async function recall() {
  const topK = Math.max(1, Math.min(info.max_top_k, parseInt($("topk").value, 10) || 20));
  $("topk").value = topK;
  const body = { top_k: topK, hist_item: [history.map((h) => h.item)], return: "items" };
  if (info.filter && $("filter").value) body.where = { [info.filter.field]: [$("filter").value] };
  showState("loading", "Recalling…");
  const answer = await getJSON("rec/recall", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  if (answer.status !== 200) {
    $("columns").replaceChildren();
    showState(...explain(answer));
    return;
  }
  const row = answer.body[0];
  renderColumns(row);
  const unknown = history.filter((h) => h.unknown).map((h) => h.item);
  if (unknown.length) {
    showState("unknown-key", `Unknown key(s) ${unknown.join(", ")}: not in this model's ` +
      "catalogue, so the service ignored them.");
  } else if (row.length && row.every((i) => i.interest === null)) {
    showState("note", "The model knows none of these items: the service answered its most " +
      "popular ones.");
  } else {
    showState("ok", `${row.length} items recalled.`);
  }
}

function column(title, key, items, showInterest) {
  const col = el("div", null, "column");
  col.dataset.interest = key;
  const count = items.length ? `${items.length} item${items.length === 1 ? "" : "s"}`
    : "0 items: none of its hits made the merged top K";
  col.append(el("h3", title), el("p", count + (showInterest ? "" : mostly(items)), "note"));
  const list = el("ol");
  for (const item of items) {
    const li = el("li", null, showInterest && item.interest !== null ? `i${item.interest % 8}` : "");
    li.dataset.item = item.item;
    const score = item.score === null ? "popular" : item.score.toFixed(3);
    const where = showInterest && item.interest !== null ? ` · interest ${item.interest + 1}` : "";
    li.append(el("span", labelOf(item), "name"), el("span", score, "score"),
      el("span", metaOf(item) + where, "meta"));
    list.append(li);
  }
  col.append(list);
  return col;
}

// What an interest is about, in a few words: its items' commonest genres (or categories).
function mostly(items) {
  if (!info.filter || !items.length) return "";
  const counts = new Map();
  for (const item of items) {
    const v = item[info.filter.field];
    for (const x of Array.isArray(v) ? v : [v]) counts.set(x, (counts.get(x) || 0) + 1);
  }
  const top = [...counts].sort((a, b) => b[1] - a[1]).slice(0, 2).map(([x]) => x);
  return ` · mostly ${top.join(", ")}`;
}

function renderColumns(row) {
  const cols = [];
  for (let k = 0; k < info.interests; k++) {
    const found = row.filter((i) => i.interest === k);
    const c = column(`Interest ${k + 1}`, String(k), found, false);
    c.classList.add(`i${k % 8}`);
    cols.push(c);
  }
  const popular = row.filter((i) => i.interest === null);
  if (popular.length) cols.push(column("Popular (no known history)", "popular", popular, false));
  cols.push(column(`Merged top ${row.length}, as answered`, "merged", row, true));
  $("columns").replaceChildren(...cols);
}

// ------------------------------------------------------------------ start
async function start() {
  const answer = await getJSON("demo/info");
  if (answer.status !== 200) { showState(...explain(answer)); return; }
  info = answer.body;
  $("model").textContent = `${info.items} items, ${info.interests} interests per user` +
    (info.keys ? "" : " (ids only: this model has no item map, search by id)");
  $("search").placeholder = info.keys ? "Type a title, key or genre" : "Type an item id";
  $("topk").max = info.max_top_k;
  if (info.filter) {
    $("filter-name").textContent = info.filter.field;
    $("filter").append(...info.filter.values.map((v) => { const o = el("option", v); o.value = v; return o; }));
    $("filter-label").hidden = false;
  }
  let timer = null;
  $("search").addEventListener("input", () => {
    $("found").dataset.q = "";
    clearTimeout(timer);
    timer = setTimeout(search, 150);
  });
  $("search").addEventListener("keydown", (e) => { if (e.key === "Enter") addTyped(); });
  $("clear").addEventListener("click", () => { history = []; renderHistory(); });
  $("recall").addEventListener("click", recall);
  await restoreHistory();
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", start);
