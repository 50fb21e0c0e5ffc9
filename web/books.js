// Spool audiobooks: upload a book, follow its chapters as workers render them, play and download.
//
// Uses the voice and speed chosen in the compose form. Chapter files are fetched with the API key
// (when one is set) and handed to an <audio> element as a blob, since a plain src cannot carry a header.
"use strict";

(() => {
  const KEY_STORAGE = "spool.apiKey";
  const POLL_MS = 2000;
  const $ = (id) => document.getElementById(id);
  const ACTIVE = new Set(["parsing", "queued", "rendering", "assembling"]);

  function authHeaders(extra = {}) {
    const key = localStorage.getItem(KEY_STORAGE);
    return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
  }

  async function api(path, options = {}) {
    const response = await fetch(path, { ...options, headers: authHeaders(options.headers || {}) });
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON */ }
    if (!response.ok) {
      const message = body && body.error ? body.error.message : `${response.status} ${response.statusText}`;
      throw new Error(message);
    }
    return body;
  }

  async function blobUrl(path) {
    const response = await fetch(path, { headers: authHeaders() });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    return URL.createObjectURL(await response.blob());
  }

  function fmtTime(seconds) {
    const s = Math.max(0, Math.round(seconds || 0));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return h ? `${h}:${String(m).padStart(2, "0")}:${String(r).padStart(2, "0")}` : `${m}:${String(r).padStart(2, "0")}`;
  }

  function showError(message) {
    const box = $("book-error");
    box.textContent = message;
    box.hidden = !message;
  }

  const state = { timer: null, books: [] };

  function bookRow(book) {
    const li = document.createElement("li");
    li.className = "book";
    li.dataset.bookId = book.id;
    const head = document.createElement("div");
    head.className = "book-head";
    const badge = document.createElement("span");
    badge.className = `badge ${book.state === "rendering" || book.state === "assembling" ? "running" : book.state}`;
    badge.textContent = book.state;
    const title = document.createElement("strong");
    title.textContent = book.author ? `${book.title} · ${book.author}` : book.title;
    const progress = document.createElement("span");
    progress.className = "sub book-progress";
    const p = book.progress;
    const eta = p.eta_seconds != null ? ` · about ${fmtTime(p.eta_seconds)} left` : "";
    progress.textContent = `${p.segments_done} / ${p.segments_total} segments · ${p.percent}%${eta}`;
    head.append(badge, title, progress);
    li.appendChild(head);

    const bar = document.createElement("div");
    bar.className = "progress";
    const fill = document.createElement("div");
    fill.className = "bar rendered";
    fill.style.width = `${p.percent}%`;
    bar.appendChild(fill);
    li.appendChild(bar);

    const chapters = document.createElement("ol");
    chapters.className = "chapters";
    const files = book.manifest ? book.manifest.chapters : [];
    book.chapters.forEach((chapter, i) => {
      const item = document.createElement("li");
      item.dataset.chapter = String(chapter.number);
      const name = document.createElement("span");
      name.textContent = chapter.title;
      const info = document.createElement("span");
      info.className = `sub chapter-state ${chapter.state}`;
      info.textContent = chapter.state === "done" ? "ready" : `${chapter.segments_done}/${chapter.segments_total}`;
      item.append(name, info);
      if (book.state === "succeeded" && files[i]) {
        const play = document.createElement("button");
        play.type = "button";
        play.className = "ghost play-chapter";
        play.textContent = `▶ ${fmtTime(files[i].duration)}`;
        play.addEventListener("click", () => playChapter(book, files[i]).catch((e) => showError(e.message)));
        item.appendChild(play);
      }
      chapters.appendChild(item);
    });
    li.appendChild(chapters);

    const actions = document.createElement("p");
    actions.className = "book-actions";
    if (book.state === "succeeded") {
      for (const [label, name] of [["M4B audiobook", "book.m4b"], ["All files (zip)", "book.zip"], ["Subtitles (VTT)", "book.vtt"]]) {
        const a = document.createElement("a");
        a.href = `/v1/books/${book.id}/files/${name}`;
        a.textContent = label;
        a.className = "download-book";
        a.addEventListener("click", async (event) => {
          if (!localStorage.getItem(KEY_STORAGE)) return;
          event.preventDefault();
          const url = await blobUrl(a.href);
          Object.assign(document.createElement("a"), { href: url, download: name }).click();
        });
        actions.appendChild(a);
      }
    } else if (ACTIVE.has(book.state)) {
      const cancel = document.createElement("button");
      cancel.type = "button";
      cancel.className = "ghost";
      cancel.textContent = "Cancel";
      cancel.addEventListener("click", async () => {
        try { await api(`/v1/books/${book.id}`, { method: "DELETE" }); } catch (e) { showError(e.message); }
        loadBooks();
      });
      actions.appendChild(cancel);
    } else if (book.error) {
      actions.textContent = book.error.message;
    }
    li.appendChild(actions);
    return li;
  }

  async function playChapter(book, file) {
    const audio = $("book-audio");
    const path = `/v1/books/${book.id}/files/${file.file}`;
    const src = localStorage.getItem(KEY_STORAGE) ? await blobUrl(path) : path;
    audio.hidden = false;
    audio.src = src;
    $("book-now").textContent = `${book.title}: ${file.title}`;
    await audio.play();
  }

  async function loadBooks() {
    try {
      const body = await api("/v1/books");
      state.books = body.data;
      const list = $("books");
      list.textContent = "";
      if (!body.data.length) list.innerHTML = '<li class="empty">No books yet.</li>';
      for (const book of body.data) list.appendChild(bookRow(book));
      const busy = body.data.some((b) => ACTIVE.has(b.state));
      clearTimeout(state.timer);
      if (busy) state.timer = setTimeout(loadBooks, POLL_MS);
    } catch (error) {
      showError(`Could not list books: ${error.message}`);
    }
  }

  async function upload(event) {
    event.preventDefault();
    showError("");
    const file = $("book-file").files[0];
    if (!file) { showError("Choose an EPUB, .txt or .md file first."); return; }
    const form = new FormData();
    form.append("file", file);
    form.append("voice", $("voice").value);
    form.append("speed", $("speed").value);
    const chapters = $("book-chapters").value.trim();
    if (chapters) form.append("chapters", chapters);
    if ($("book-matter").checked) form.append("include_front_matter", "true");
    $("book-submit").disabled = true;
    try {
      await api("/v1/books", { method: "POST", body: form });
      $("book-form").reset();
      await loadBooks();
    } catch (error) {
      showError(error.message);
    } finally {
      $("book-submit").disabled = false;
    }
  }

  function init() {
    $("book-form").addEventListener("submit", upload);
    $("books-refresh").addEventListener("click", loadBooks);
    loadBooks();
  }

  window.spoolBooks = { get books() { return state.books.slice(); }, reload: loadBooks };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
