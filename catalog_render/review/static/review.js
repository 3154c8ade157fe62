// The review page's keyboard shortcuts and verdict buttons (catalog_render/review/app.py serves it).
// No build step, no dependency. Every POST carries the page's CSRF token (meta csrf-token) in the
// X-CSRF-Token header. Keys: j/k next/previous render, x select, a approve, r reject, c comment,
// u undo, o or Enter open full size, Escape leave the comment box / clear the selection.
"use strict";
(function () {
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const tiles = Array.from(document.querySelectorAll(".rtile"));
  const statusEl = document.getElementById("status");
  const comment = document.getElementById("comment");
  const selcount = document.getElementById("selcount");
  let cur = -1;

  function say(text, isError) {
    if (!statusEl) return;
    statusEl.textContent = text;
    statusEl.classList.toggle("err", !!isError);
  }

  function focusTile(i) {
    if (!tiles.length) return;
    cur = Math.max(0, Math.min(tiles.length - 1, i));
    tiles.forEach((t, j) => t.classList.toggle("current", j === cur));
    tiles[cur].scrollIntoView({ block: "nearest" });
  }

  function selected() {
    return tiles.filter((t) => t.querySelector("input.sel").checked);
  }

  function updateSelection() {
    tiles.forEach((t) => t.classList.toggle("selected", t.querySelector("input.sel").checked));
    if (selcount) selcount.textContent = selected().length + " selected";
  }

  function badgeText(v) {
    if (!v) return "not reviewed";
    let s = (v.verdict === "approve" ? "approved" : "rejected") + " · " + v.reviewer;
    if (v.comment) s += " · \u201c" + v.comment + "\u201d";
    return s;
  }

  // The header's counts follow each change of a tile's verdict ("" = not reviewed).
  function recount(before, after) {
    const id = { "": "count-unreviewed", approve: "count-approve", reject: "count-reject" };
    for (const [name, step] of [[before, -1], [after, 1]]) {
      const el = document.getElementById(id[name]);
      if (el) el.textContent = String(Number(el.textContent) + step);
    }
  }

  function show(verdicts) {
    for (const [key, v] of Object.entries(verdicts || {})) {
      const tile = tiles.find((t) => t.dataset.key === key);
      if (!tile) continue;
      const after = v ? v.verdict : "";
      if (tile.dataset.verdict !== after) recount(tile.dataset.verdict || "", after);
      tile.dataset.verdict = after;
      const b = tile.querySelector(".vbadge");
      b.className = "vbadge" + (v ? " " + v.verdict : "");
      b.textContent = badgeText(v);
      b.title = v && v.comment ? v.comment : "";
    }
  }

  async function post(url, fields) {
    const body = new URLSearchParams();
    for (const [k, v] of fields) body.append(k, v);
    const r = await fetch(url, {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "Accept": "application/json" },
    });
    let data = {};
    try { data = await r.json(); } catch (e) { data = { error: "HTTP " + r.status }; }
    if (!r.ok) throw new Error(data.error || "HTTP " + r.status);
    return data;
  }

  // Actions run one after another in key-press order: a key pressed while an earlier verdict is
  // still on its way is queued, never dropped; the focus moves on at once.
  let chain = Promise.resolve();
  function enqueue(job) {
    chain = chain.then(job, job);
    return chain;
  }

  function verdict(v, only) {
    const sel = only ? [only] : selected();
    const targets = sel.length ? sel : (cur >= 0 ? [tiles[cur]] : []);
    if (!targets.length) { say("no render focused: press j to move to one", true); return; }
    const fields = [["verdict", v], ["comment", comment ? comment.value : ""]];
    targets.forEach((t) => fields.push(["key", t.dataset.key]));
    if (comment) comment.value = "";
    targets.forEach((t) => { t.querySelector("input.sel").checked = false; t.classList.add("pending"); });
    updateSelection();
    if (targets.length === 1 && !only && cur < tiles.length - 1) focusTile(cur + 1);
    enqueue(async () => {
      try {
        const data = await post("/api/verdict", fields);
        show(data.verdicts);
        say(data.message, false);
      } catch (e) {
        say(e.message, true);
      } finally {
        targets.forEach((t) => t.classList.remove("pending"));
      }
    });
  }

  function undo() {
    enqueue(async () => {
      try {
        const data = await post("/api/undo", []);
        show(data.verdicts);
        say(data.message, false);
        const i = tiles.findIndex((t) => Object.prototype.hasOwnProperty.call(data.verdicts, t.dataset.key));
        if (i >= 0) focusTile(i);
      } catch (e) {
        say(e.message, true);
      }
    });
  }

  function open() {
    if (cur < 0) return;
    const link = tiles[cur].querySelector("a.im");
    if (link) window.location.href = link.href;
  }

  tiles.forEach((t, i) => {
    t.addEventListener("click", (ev) => { if (!ev.target.closest("a")) focusTile(i); });
    t.querySelectorAll("button[data-verdict]").forEach((b) => {
      b.addEventListener("click", (ev) => { ev.stopPropagation(); focusTile(i); verdict(b.dataset.verdict, t); });
    });
    t.querySelector("input.sel").addEventListener("change", updateSelection);
    t.querySelectorAll("img").forEach((img) => {
      const mark = () => {
        const box = img.parentElement;
        if (img.naturalHeight && img.naturalHeight * 2 <= img.clientHeight) box.classList.add("pixel");
      };
      img.addEventListener("load", mark);
      if (img.complete) mark();
      img.addEventListener("error", () => {
        const box = img.closest(".im");
        box.classList.add("gone");
        box.textContent = "image missing (deleted from the output?) \u2013 open the render for details";
      });
    });
  });
  document.querySelectorAll(".actionbar button[data-verdict]").forEach((b) => {
    b.addEventListener("click", () => verdict(b.dataset.verdict));
  });
  const undoBtn = document.getElementById("undo");
  if (undoBtn) undoBtn.addEventListener("click", undo);

  if (comment) {
    comment.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === "Escape") { ev.preventDefault(); comment.blur(); }
    });
  }

  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const tag = (ev.target.tagName || "").toLowerCase();
    if (tag === "input" && ev.target.type === "text" || tag === "textarea" || tag === "select") return;
    switch (ev.key) {
      case "j": focusTile(cur + 1); break;
      case "k": focusTile(cur < 0 ? 0 : cur - 1); break;
      case "x":
        if (cur >= 0) { const box = tiles[cur].querySelector("input.sel"); box.checked = !box.checked; updateSelection(); }
        break;
      case "a": verdict("approve"); break;
      case "r": verdict("reject"); break;
      case "c": if (comment) comment.focus(); break;
      case "u": undo(); break;
      case "o": case "Enter": if (tag !== "a" && tag !== "button") open(); else return; break;
      case "Escape": tiles.forEach((t) => { t.querySelector("input.sel").checked = false; }); updateSelection(); break;
      default: return;
    }
    ev.preventDefault();
  });

  if (tiles.length === 1) focusTile(0);
  updateSelection();
})();
