// The eercf search page: no build step, no dependencies, talks to the service only.
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("search"), input = $("q"), status = $("status"), list = $("hits");
const viewer = $("viewer"), player = $("player");
let index = { model: { resize: "crop", patches: 49 } };
let window_ = null;          // the moment the player plays: {start, end}
let opener = null;           // the card that opened the player (focus returns to it)
let searchId = 0;
const placers = [];          // re-place the patch outlines when the layout changes

function seconds(t) {
  if (t === null || t === undefined) return "?";
  const m = Math.floor(t / 60), s = t - 60 * m;
  return `${m}:${s.toFixed(1).padStart(4, "0")}`;
}

function say(text, isError = false) {
  status.textContent = text;
  status.classList.toggle("error", isError);
}

async function api(path) {
  let response;
  try {
    response = await fetch(path, { headers: { Accept: "application/json" } });
  } catch (err) {
    throw new Error("The service did not answer. Is it still running?");
  }
  let body = null;
  try { body = await response.json(); } catch (err) { /* not JSON */ }
  if (!response.ok) {
    throw new Error((body && body.error) || `The service answered ${response.status}.`);
  }
  return body;
}

// The patch cell on the thumbnail: the grid covers the square the model saw (the centre
// square of the frame when the index crops, the whole frame squashed when it squashes).
function placeCell(img, cell, where) {
  const w = img.naturalWidth, h = img.naturalHeight, grid = where.grid || 7;
  if (!w || !h) return;
  const box = img.getBoundingClientRect(), frame = img.parentElement.getBoundingClientRect();
  const scale = Math.min(box.width / w, box.height / h);
  const shownW = w * scale, shownH = h * scale;
  const left0 = (frame.width - shownW) / 2, top0 = (frame.height - shownH) / 2;
  let x0 = 0, y0 = 0, cw = w / grid, ch = h / grid;
  if (index.model.resize !== "squash") {
    const side = Math.min(w, h);
    x0 = (w - side) / 2; y0 = (h - side) / 2; cw = ch = side / grid;
  }
  cell.style.left = `${left0 + (x0 + where.col * cw) * scale}px`;
  cell.style.top = `${top0 + (y0 + where.row * ch) * scale}px`;
  cell.style.width = `${cw * scale}px`;
  cell.style.height = `${ch * scale}px`;
  cell.hidden = false;
}

function card(hit, rank) {
  const li = document.createElement("li");
  li.className = "hit";
  const button = document.createElement("button");
  button.type = "button";
  const moment = hit.moment || {};
  const at = moment.time ?? 0;
  button.setAttribute("aria-label", `${rank}. ${hit.video_id}, matched at ${seconds(at)}`);
  // the thumbnail shows the frame whose patch matched, with that patch outlined; the label
  // gives the matched moment (the frames the strong gate weighs most)
  const shotAt = hit.where && hit.where.time !== null ? hit.where.time : at;
  const frame = document.createElement("div");
  frame.className = "frame";
  const img = document.createElement("img");
  img.alt = `${hit.video_id} at ${seconds(shotAt)}`;
  img.loading = "lazy";
  img.src = `${hit.links.video}/thumbnail?t=${shotAt.toFixed(3)}&w=480`;
  frame.append(img);
  if (hit.where) {
    const cell = document.createElement("div");
    cell.className = "cell";
    cell.hidden = true;
    cell.title = `matched patch: row ${hit.where.row + 1}, column ${hit.where.col + 1} at ${seconds(shotAt)}`;
    const place = () => placeCell(img, cell, hit.where);
    placers.push(place);
    img.addEventListener("load", place);
    frame.append(cell);
  }
  img.addEventListener("error", () => { img.alt = "no thumbnail"; });
  const when = document.createElement("span");
  when.className = "when";
  when.textContent = moment.start !== undefined && moment.start !== null
    ? `${seconds(moment.start)}–${seconds(moment.end)}` : "stage 1 only";
  frame.append(when);
  const others = (hit.moments || []).length - 1;
  const meta = document.createElement("div");
  meta.className = "meta";
  const id = document.createElement("div");
  id.className = "id";
  id.textContent = `${rank}. ${hit.video_id}`;
  const scores = document.createElement("div");
  scores.className = "scores";
  scores.textContent = hit.score === null
    ? `stage 1 ${hit.stage1_score.toFixed(2)} (not re-scored)`
    : `fused ${hit.score.toFixed(2)} · stage 1 ${hit.stage1_score.toFixed(2)}`;
  meta.append(id, scores);
  if (others > 0) {
    const more = document.createElement("span");
    more.className = "more";
    more.textContent = `+${others} more moment${others > 1 ? "s" : ""}`;
    id.append(more);
  }
  if (hit.score !== null && hit.stage1_rank !== rank) {
    const badge = document.createElement("span");
    badge.className = hit.stage1_rank > rank ? "badge" : "badge down";
    badge.textContent = `re-ranked from #${hit.stage1_rank}`;
    meta.append(badge);
  }
  button.append(frame, meta);
  button.addEventListener("click", () => openPlayer(hit, button));
  li.append(button);
  return li;
}

async function search(query, push) {
  const mine = ++searchId;
  query = query.trim();
  list.replaceChildren();
  placers.length = 0;
  if (!query) { say("Type what you are looking for."); return; }
  if (push) history.pushState({ q: query }, "", `?q=${encodeURIComponent(query)}`);
  document.title = `${query} – eercf`;
  say("Searching…");
  const started = performance.now();
  try {
    const result = await api(`/api/search?q=${encodeURIComponent(query)}&k=24`);
    if (mine !== searchId) return;   // a newer search has started
    if (!result.hits.length) {
      say(`No videos match “${query}”.`);
      return;
    }
    result.hits.forEach((hit, i) => list.append(card(hit, i + 1)));
    const ms = Math.round(performance.now() - started);
    say(`${result.hits.length} videos for “${query}” · ${ms} ms · index version ${result.version}`);
  } catch (err) {
    if (mine === searchId) say(err.message, true);
  }
}

// The timeline under the player marks the video's matched moments (the best one brighter);
// a mark plays its moment.
let shown = null;   // the hit whose moments the timeline marks
function drawTimeline() {
  const line = $("timeline");
  line.querySelectorAll(".mark").forEach((m) => m.remove());
  const duration = (shown && shown.duration) || player.duration;
  const moments = (shown && shown.moments) || [];
  line.hidden = !moments.length || !(duration > 0);
  if (line.hidden) return;
  moments.forEach((m, i) => {
    const mark = document.createElement("button");
    mark.type = "button";
    mark.className = i === 0 ? "mark best" : "mark";
    mark.style.left = `${(100 * m.start) / duration}%`;
    mark.style.width = `${(100 * (m.end - m.start)) / duration}%`;
    mark.title = `${seconds(m.start)}–${seconds(m.end)} · score ${m.score.toFixed(2)}`;
    mark.setAttribute("aria-label", `play the moment ${seconds(m.start)} to ${seconds(m.end)}`);
    mark.addEventListener("click", () => {
      window_ = { start: m.start, end: m.end };
      line.querySelectorAll(".mark").forEach((x) => x.classList.toggle("playing", x === mark));
      startWindow();
    });
    line.append(mark);
  });
}

function openPlayer(hit, button) {
  opener = button;
  shown = hit;
  const moment = hit.moment || {};
  window_ = { start: moment.start ?? 0, end: moment.end ?? null };
  drawTimeline();
  $("viewer-title").textContent = hit.video_id;
  $("viewer-note").textContent = hit.moment
    ? `matched ${seconds(window_.start)}–${seconds(window_.end)} (best frame ${seconds(moment.time)})`
    : "not re-scored: no moment";
  $("viewer-error").hidden = true;
  player.dataset.seekedTo = "";
  viewer.hidden = false;
  const source = new URL(hit.links.media, location.href).href;
  if (player.src !== source) {
    player.src = source;
  } else if (player.readyState >= 1) {
    startWindow();
  }
  $("close").focus();
}

function startWindow() {
  if (!window_) return;
  player.currentTime = window_.start;
  const played = player.play();
  if (played && played.catch) played.catch(() => { /* autoplay refused: the user presses play */ });
}

player.addEventListener("loadedmetadata", () => { drawTimeline(); startWindow(); });
player.addEventListener("seeked", () => {
  if (window_ && player.dataset.seekedTo === "") player.dataset.seekedTo = String(window_.start);
});
player.addEventListener("timeupdate", () => {
  const duration = (shown && shown.duration) || player.duration;
  if (duration > 0) $("playhead").style.left = `${Math.min(100, (100 * player.currentTime) / duration)}%`;
  if (window_ && window_.end !== null && player.currentTime >= window_.end) {
    player.pause();
    window_ = { start: window_.start, end: null };   // the user may play on past the moment
  }
});
player.addEventListener("error", () => {
  const box = $("viewer-error");
  box.hidden = false;
  const code = player.error ? player.error.code : 0;
  box.textContent = code === 4
    ? "This browser cannot play this video (its format or codec is not supported)."
    : "The video could not be loaded.";
});

function closePlayer() {
  if (viewer.hidden) return;
  player.pause();
  viewer.hidden = true;
  if (opener) opener.focus();
}

$("close").addEventListener("click", closePlayer);
viewer.addEventListener("click", (e) => { if (e.target === viewer) closePlayer(); });

// Arrow keys move between cards by their position on screen (the grid reflows).
function move(key) {
  const cards = [...list.querySelectorAll(".hit button")];
  const at = cards.indexOf(document.activeElement);
  if (!cards.length) return;
  if (at < 0) { cards[0].focus(); return; }
  const tops = cards.map((c) => c.getBoundingClientRect().top);
  const perRow = tops.filter((t) => Math.abs(t - tops[0]) < 2).length || 1;
  const step = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -perRow, ArrowDown: perRow }[key];
  const next = Math.min(cards.length - 1, Math.max(0, at + step));
  cards[next].focus();
}

document.addEventListener("keydown", (e) => {
  if (e.key === "Escape") { closePlayer(); return; }
  if (!viewer.hidden) return;
  const typing = document.activeElement === input;
  if (e.key === "/" && !typing) { e.preventDefault(); input.focus(); input.select(); return; }
  if (["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown"].includes(e.key)) {
    if (typing && (e.key !== "ArrowDown" || !list.children.length)) return;
    e.preventDefault();
    move(e.key);
  }
});

window.addEventListener("resize", () => placers.forEach((place) => place()));
form.addEventListener("submit", (e) => { e.preventDefault(); search(input.value, true); });
window.addEventListener("popstate", () => {
  const q = new URLSearchParams(location.search).get("q") || "";
  input.value = q;
  search(q, false);
});

(async function start() {
  try {
    index = await api("/api/index");
    $("about").textContent = `${index.videos.toLocaleString()} videos · ${index.model.name}`;
  } catch (err) {
    say(err.message, true);
  }
  const q = new URLSearchParams(location.search).get("q");
  if (q) { input.value = q; search(q, false); }
})();
