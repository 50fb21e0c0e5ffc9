// Spool player: submit text, hear it while it renders, follow progress and captions.
//
// Audio: the job's raw PCM stream (GET /v1/jobs/<id>/stream?format=pcm) is read with fetch and each
// piece is scheduled back to back as a WebAudio AudioBuffer, so playback starts with the first
// chunk and a dropped connection resumes exactly where it stopped (from=<seq> plus a byte skip).
// Events: GET /v1/jobs/<id>/events (Server-Sent Events) read with fetch rather than EventSource,
// so an API key can be sent as a header; Last-Event-ID resumes after a reconnect.
"use strict";

(() => {
  const KEY_STORAGE = "spool.apiKey";
  const LEAD_SECONDS = 0.08;        // scheduling margin for the first buffer after a gap
  const MIN_BUFFER_SECONDS = 0.05;  // merge tiny network reads into buffers at least this long
  const MAX_RECONNECTS = 5;
  const JOBS_LIMIT = 10;

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------------------------------------
  // HTTP helpers

  function authHeaders(extra = {}) {
    const key = localStorage.getItem(KEY_STORAGE);
    return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
  }

  class ApiError extends Error {
    constructor(message, status, code) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function errorFrom(response) {
    let message = `${response.status} ${response.statusText}`;
    let code = "http_error";
    try {
      const body = await response.json();
      if (body && body.error) {
        message = body.error.message || message;
        code = body.error.code || code;
      }
    } catch (_) { /* not JSON */ }
    return new ApiError(message, response.status, code);
  }

  async function api(path, options = {}) {
    const response = await fetch(path, { ...options, headers: authHeaders(options.headers || {}) });
    if (!response.ok) throw await errorFrom(response);
    return response.status === 204 ? null : response.json();
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // ---------------------------------------------------------------------------------------------
  // Server-Sent Events over fetch

  // Calls onEvent(type, data, id) for each event until the server closes after end/error,
  // the signal aborts, or a request fails with a 4xx (thrown).
  async function followEvents(url, onEvent, signal) {
    let lastId = null;
    let retryMs = 2000;
    for (let attempt = 0; attempt <= MAX_RECONNECTS && !signal.aborted; attempt++) {
      let finished = false;
      try {
        const headers = authHeaders(lastId !== null ? { "Last-Event-ID": String(lastId) } : {});
        const response = await fetch(url, { headers, signal, cache: "no-store" });
        if (!response.ok) {
          const error = await errorFrom(response);
          if (response.status < 500) throw error;
          throw Object.assign(error, { retry: true });
        }
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
            let type = "message";
            let id = null;
            const data = [];
            for (const line of block.split(/\r?\n/)) {
              if (!line || line.startsWith(":")) continue;
              const colon = line.indexOf(":");
              const field = colon < 0 ? line : line.slice(0, colon);
              const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
              if (field === "event") type = val;
              else if (field === "data") data.push(val);
              else if (field === "id") id = val;
              else if (field === "retry" && /^\d+$/.test(val)) retryMs = Number(val);
            }
            if (id !== null) lastId = id;
            if (!data.length) continue;
            let parsed;
            try { parsed = JSON.parse(data.join("\n")); } catch (_) { parsed = data.join("\n"); }
            if (type === "end" || type === "error") finished = true;
            onEvent(type, parsed, id);
          }
        }
        if (finished) return;
        attempt = -1; // a clean close before the end (proxy timeout): reconnect straight away
      } catch (error) {
        if (signal.aborted) return;
        if (!error.retry && error instanceof ApiError) throw error;
        if (attempt >= MAX_RECONNECTS) throw error;
      }
      await sleep(retryMs);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Progressive PCM playback with WebAudio

  class PcmPlayer {
    constructor() {
      this.ctx = null;
      this.reset();
    }

    reset() {
      this.pieces = [];           // {ctxStart, jobStart, duration} for every scheduled buffer
      this.nextTime = 0;          // context time where the next buffer starts
      this.samplesIn = 0;         // samples of the job received (job timeline)
      this.rate = 24000;
      this.pending = [];          // Float32Arrays waiting to reach MIN_BUFFER_SECONDS
      this.pendingSamples = 0;
      this.oddByte = null;
      this.streamDone = false;
      this.abort = null;
      this.state = "idle";
    }

    // Make (or reuse) the audio context; call it from the click handler so autoplay rules pass.
    prepare(rate) {
      if (this.ctx && this.ctx.state !== "closed" && this.ctx.sampleRate === rate) {
        this.ctx.resume().catch(() => {});
        return;
      }
      if (this.ctx && this.ctx.state !== "closed") this.ctx.close().catch(() => {});
      try {
        // Playing at the stream's own rate: no per-buffer resampling, so buffer joins are seamless.
        this.ctx = new AudioContext({ sampleRate: rate, latencyHint: "playback" });
      } catch (_) {
        this.ctx = new AudioContext({ latencyHint: "playback" });
      }
      this.ctx.resume().catch(() => {});
    }

    // Stream a job's audio; resolves when every byte has been scheduled. `chunkAt(samples)` maps a
    // job sample position to {seq, offset} of the chunk holding it, for exact resumes.
    async play(jobId, { rate = 24000, chunkAt = null, onError = null } = {}) {
      this.stop();
      this.prepare(rate);
      this.rate = rate;
      this.abort = new AbortController();
      const signal = this.abort.signal;
      this.state = "loading";
      let failures = 0;
      while (!signal.aborted) {
        // Resume at the chunk holding the next byte, skipping what was already received (the
        // pending odd byte stays: the next byte completes its sample).
        const received = this.samplesIn + this.pendingSamples;
        const at = chunkAt ? chunkAt(received) : null;
        const fromSeq = at ? at.seq : 0;
        let skip = (received - (at ? at.offset : 0)) * 2 + (this.oddByte !== null ? 1 : 0);
        try {
          const response = await fetch(`/v1/jobs/${jobId}/stream?format=pcm&from=${fromSeq}`, {
            headers: authHeaders(), signal, cache: "no-store",
          });
          if (!response.ok) throw await errorFrom(response);
          const streamRate = Number(response.headers.get("X-Sample-Rate")) || rate;
          if (streamRate !== this.rate) {
            this.rate = streamRate;
            if (!this.pieces.length) this.prepare(streamRate);
          }
          const reader = response.body.getReader();
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            let bytes = value;
            if (skip > 0) {
              const cut = Math.min(skip, bytes.length);
              bytes = bytes.subarray(cut);
              skip -= cut;
            }
            if (bytes.length) this.feed(bytes);
            failures = 0;
          }
          this.flush(true);
          this.streamDone = true;
          if (this.state !== "paused") this.state = "playing";
          return;
        } catch (error) {
          if (signal.aborted) return;
          if (error instanceof ApiError || ++failures > MAX_RECONNECTS) {
            this.state = "error";
            if (onError) onError(error);
            return;
          }
          await sleep(500 * failures);
        }
      }
    }

    feed(bytes) {
      if (this.oddByte !== null) {
        const joined = new Uint8Array(bytes.length + 1);
        joined[0] = this.oddByte;
        joined.set(bytes, 1);
        bytes = joined;
        this.oddByte = null;
      }
      const whole = bytes.length - (bytes.length % 2);
      if (whole < bytes.length) this.oddByte = bytes[bytes.length - 1];
      const count = whole / 2;
      if (!count) return;
      const view = new DataView(bytes.buffer, bytes.byteOffset, whole);
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getInt16(i * 2, true) / 32767;
      this.pending.push(out);
      this.pendingSamples += count;
      this.flush(false);
    }

    flush(force) {
      if (!this.pendingSamples) return;
      if (!force && this.pendingSamples < this.rate * MIN_BUFFER_SECONDS) return;
      const ctx = this.ctx;
      const buffer = ctx.createBuffer(1, this.pendingSamples, this.rate);
      const channel = buffer.getChannelData(0);
      let at = 0;
      for (const part of this.pending) { channel.set(part, at); at += part.length; }
      const source = ctx.createBufferSource();
      source.buffer = buffer;
      source.connect(ctx.destination);
      // Back to back with the previous buffer; after an underrun, a little ahead of "now".
      const start = Math.max(this.nextTime, ctx.currentTime + LEAD_SECONDS);
      source.start(start);
      const duration = this.pendingSamples / this.rate;
      this.pieces.push({ ctxStart: start, jobStart: this.samplesIn / this.rate, duration });
      this.nextTime = start + duration;
      this.samplesIn += this.pendingSamples;
      this.pending = [];
      this.pendingSamples = 0;
      if (this.state === "loading") this.state = "playing";
    }

    // Seconds of the job's audio heard so far (its position on the job's timeline).
    position() {
      if (!this.ctx || !this.pieces.length) return 0;
      const now = this.ctx.currentTime;
      let position = 0;
      for (const piece of this.pieces) {
        if (now < piece.ctxStart) break;
        position = piece.jobStart + Math.min(now - piece.ctxStart, piece.duration);
      }
      return position;
    }

    get scheduledSeconds() { return this.samplesIn / this.rate; }
    get finished() {
      return this.streamDone && this.ctx && this.ctx.currentTime >= this.nextTime;
    }

    pause() {
      if (this.ctx && this.ctx.state === "running") { this.ctx.suspend(); this.state = "paused"; }
    }

    resume() {
      if (this.ctx && this.ctx.state === "suspended") { this.ctx.resume(); this.state = "playing"; }
    }

    stop() {
      if (this.abort) this.abort.abort();
      if (this.ctx && this.ctx.state !== "closed") this.ctx.close().catch(() => {});
      this.ctx = null;
      this.reset();
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Transcript: segments wrapped in spans as their chunks arrive, the spoken one highlighted

  class Transcript {
    constructor(element) {
      this.element = element;
      this.clear("");
    }

    clear(text) {
      this.text = text;
      this.element.textContent = "";
      this.segments = [];        // {seq, start_time, end_time, span}
      this.cursor = 0;           // characters of `text` already placed before `rest`
      this.rest = document.createElement("span");
      this.rest.className = "pending";
      this.rest.textContent = text;
      this.element.appendChild(this.rest);
      this.current = -1;
    }

    add(caption) {
      const seg = caption.segment || {};
      const start = Number.isInteger(seg.start) ? seg.start : this.cursor;
      const end = Number.isInteger(seg.end) ? seg.end : start;
      if (start < this.cursor || end > this.text.length) {
        this.segments.push({ ...caption, span: null });
        return;
      }
      if (start > this.cursor) {
        this.rest.before(document.createTextNode(this.text.slice(this.cursor, start)));
      }
      const span = document.createElement("span");
      span.className = "seg";
      span.dataset.seq = caption.seq;
      span.textContent = this.text.slice(start, end);
      this.rest.before(span);
      this.cursor = end;
      this.rest.textContent = this.text.slice(end);
      this.segments.push({ ...caption, span });
    }

    // Chunk holding job sample `samples` (for exact stream resumes).
    chunkAt(samples) {
      let found = null;
      for (const s of this.segments) {
        if (s.offset !== undefined && s.offset <= samples) found = { seq: s.seq, offset: s.offset };
        else break;
      }
      return found;
    }

    highlight(position) {
      let index = -1;
      for (let i = 0; i < this.segments.length; i++) {
        const s = this.segments[i];
        if (position >= s.start_time && position < s.end_time) { index = i; break; }
      }
      if (index === this.current) return;
      const previous = this.segments[this.current];
      if (previous && previous.span) { previous.span.classList.remove("speaking"); previous.span.classList.add("spoken"); }
      this.current = index;
      const now = this.segments[index];
      if (now && now.span) {
        now.span.classList.add("speaking");
        const box = this.element;
        const top = now.span.offsetTop - box.offsetTop;
        if (top < box.scrollTop || top > box.scrollTop + box.clientHeight - 40) {
          box.scrollTop = Math.max(0, top - 40);
        }
      }
    }

    get speakingText() {
      const s = this.segments[this.current];
      return s ? s.segment.text : null;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // The page

  const ui = {
    form: $("compose-form"), text: $("text"), chars: $("chars"), voice: $("voice"), preview: $("preview"),
    speed: $("speed"), speedValue: $("speed-value"), format: $("format"), submit: $("submit"),
    error: $("error"), now: $("now"), state: $("state"), title: $("now-title"), pause: $("pause"),
    stop: $("stop"), progress: $("progress"), bar: $("bar"), playedBar: $("played-bar"),
    progressText: $("progress-text"), clock: $("clock"), transcript: $("transcript"), result: $("result"),
    download: $("download"), resultInfo: $("result-info"), jobs: $("jobs"), refresh: $("refresh"),
    apiKey: $("api-key"),
  };

  const player = new PcmPlayer();
  const transcript = new Transcript(ui.transcript);
  const voices = new Map();
  const session = { jobId: null, job: null, percent: 0, state: null, events: [], abort: null, renderedSeconds: 0 };

  function showError(message) {
    ui.error.textContent = message;
    ui.error.hidden = !message;
  }

  function fmtTime(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }

  function fmtBytes(n) {
    if (n == null) return "";
    return n > 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${Math.max(1, Math.round(n / 1e3))} kB`;
  }

  function setState(state) {
    session.state = state;
    ui.state.textContent = state;
    ui.state.className = `badge ${state}`;
  }

  function setProgress(done, total, percent) {
    session.percent = percent;
    ui.bar.style.width = `${percent}%`;
    ui.progress.setAttribute("aria-valuenow", String(Math.round(percent)));
    const totalText = total == null ? "?" : total;
    ui.progressText.textContent = `${done} / ${totalText} segments rendered · ${Math.round(percent)}%`;
  }

  function rateFor(voice) {
    const info = voices.get(voice);
    return info && info.engine === "piper" ? 22050 : 24000;
  }

  function onJobSnapshot(job) {
    session.job = job;
    setState(job.state);
    const p = job.progress || {};
    if (job.state === "queued") {
      const place = job.queue_position ? ` · position ${job.queue_position} in the queue` : "";
      ui.progressText.textContent = `queued${place}`;
    } else {
      setProgress(p.segments_done || 0, p.segments_total, job.state === "succeeded" ? 100 : p.percent || 0);
    }
    if (job.state === "succeeded" && job.result) {
      ui.result.hidden = false;
      ui.download.href = job.result.url || job.links.audio;
      ui.download.setAttribute("download", `spool-${job.id.slice(0, 8)}.${job.format}`);
      ui.download.textContent = `Download ${job.format.toUpperCase()}`;
      ui.resultInfo.textContent = `${fmtTime(job.result.duration || 0)} · ${fmtBytes(job.result.size)}`;
      loadJobs();
    }
    if (job.state === "failed" || job.state === "cancelled") {
      const err = job.error;
      showError(job.state === "cancelled" ? "The job was cancelled." : `The job failed: ${err ? err.message : "unknown error"}`);
      loadJobs();
    }
  }

  function onEvent(type, data) {
    session.events.push(type);
    if (type === "state") onJobSnapshot(data);
    else if (type === "progress") setProgress(data.segments_done, data.segments_total, data.percent);
    else if (type === "chunk") {
      transcript.add(data);
      session.renderedSeconds = Math.max(session.renderedSeconds, data.end_time || 0);
    } else if (type === "error") {
      if (data.code !== "cancelled") showError(`${data.message || "The stream failed."} (${data.code})`);
    }
  }

  async function startJob(jobId, text, { voice } = {}) {
    stopSession();
    showError("");
    session.jobId = jobId;
    session.percent = 0;
    session.events = [];
    session.renderedSeconds = 0;
    ui.now.hidden = false;
    ui.result.hidden = true;
    ui.title.textContent = text.length > 60 ? `${text.slice(0, 60)}…` : text;
    transcript.clear(text);
    setState("queued");
    ui.bar.style.width = "0%";
    ui.playedBar.style.width = "0%";
    ui.progressText.textContent = "waiting for a worker…";
    ui.pause.disabled = false;
    ui.stop.disabled = false;
    ui.pause.textContent = "Pause";
    const abort = new AbortController();
    session.abort = abort;
    followEvents(`/v1/jobs/${jobId}/events`, onEvent, abort.signal).catch((error) => {
      if (!abort.signal.aborted) showError(`Lost the job's events: ${error.message}`);
    });
    await player.play(jobId, {
      rate: rateFor(voice),
      chunkAt: (samples) => transcript.chunkAt(samples),
      onError: (error) => showError(`Playback failed: ${error.message}`),
    });
  }

  function stopSession() {
    if (session.abort) session.abort.abort();
    session.abort = null;
    player.stop();
    ui.pause.disabled = true;
    ui.stop.disabled = true;
  }

  async function submit(event) {
    event.preventDefault();
    const text = ui.text.value;
    if (!text.trim()) { showError("Type some text to read first."); return; }
    const voice = ui.voice.value;
    player.prepare(rateFor(voice)); // inside the click: browsers allow audio to start from here
    ui.submit.disabled = true;
    try {
      const job = await api("/v1/jobs", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ text, voice, speed: Number(ui.speed.value), format: ui.format.value }),
      });
      loadJobs();
      startJob(job.id, text, { voice });
    } catch (error) {
      showError(error.message);
    } finally {
      ui.submit.disabled = false;
    }
  }

  async function preview() {
    const voice = ui.voice.value;
    const info = voices.get(voice);
    const text = (info && info.preview_text) || "Hello! This is how I sound.";
    const speed = Number(ui.speed.value);
    player.prepare(rateFor(voice));
    ui.preview.disabled = true;
    try {
      // The same key for the same voice and speed: a repeat click replays the stored sample.
      const job = await api("/v1/jobs", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Idempotency-Key": `preview-${voice}-${speed}` },
        body: JSON.stringify({ text, voice, speed, format: "mp3", priority: "high" }),
      });
      startJob(job.id, text, { voice });
    } catch (error) {
      showError(error.message);
    } finally {
      ui.preview.disabled = false;
    }
  }

  async function loadVoices() {
    try {
      const body = await api("/v1/voices");
      const groups = new Map();
      for (const v of body.data) {
        voices.set(v.name, v);
        const label = v.language_name || v.language;
        if (!groups.has(label)) groups.set(label, []);
        groups.get(label).push(v);
      }
      ui.voice.textContent = "";
      for (const [label, list] of groups) {
        const group = document.createElement("optgroup");
        group.label = label;
        for (const v of list) {
          const option = document.createElement("option");
          option.value = v.name;
          option.textContent = `${v.display_name} (${v.gender === "unknown" ? v.engine : v.gender})`;
          group.appendChild(option);
        }
        ui.voice.appendChild(group);
      }
      ui.voice.value = voices.has(body.default) ? body.default : body.data[0].name;
    } catch (error) {
      showError(`Could not load the voices: ${error.message}`);
    }
  }

  async function loadJobs() {
    try {
      const body = await api(`/v1/jobs?limit=${JOBS_LIMIT}`);
      ui.jobs.textContent = "";
      if (!body.data.length) {
        ui.jobs.innerHTML = '<li class="empty">No jobs yet.</li>';
        return;
      }
      for (const job of body.data) ui.jobs.appendChild(jobRow(job));
    } catch (error) {
      ui.jobs.innerHTML = "";
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = `Could not list jobs: ${error.message}`;
      ui.jobs.appendChild(li);
    }
  }

  function jobRow(job) {
    const li = document.createElement("li");
    li.dataset.jobId = job.id;
    const badge = document.createElement("span");
    badge.className = `badge ${job.state}`;
    badge.textContent = job.state;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = job.text_preview || job.id;
    text.title = job.text_preview || "";
    const actions = document.createElement("span");
    actions.className = "actions";
    if (job.state !== "failed" && job.state !== "cancelled") {
      const play = document.createElement("button");
      play.type = "button";
      play.className = "ghost";
      play.textContent = "▶ Play";
      play.addEventListener("click", async () => {
        player.prepare(rateFor(job.voice));
        // The listing carries the first 120 characters; captions beyond them still play.
        startJob(job.id, job.text_preview || "", { voice: job.voice });
      });
      actions.appendChild(play);
    }
    if (job.state === "succeeded" && job.result) {
      const link = document.createElement("a");
      link.href = job.result.url || job.links.audio;
      link.textContent = job.format.toUpperCase();
      link.setAttribute("download", `spool-${job.id.slice(0, 8)}.${job.format}`);
      if (localStorage.getItem(KEY_STORAGE)) {
        // A plain link cannot carry the API key: fetch the file and hand the browser a blob.
        link.addEventListener("click", async (event) => {
          event.preventDefault();
          try {
            const response = await fetch(link.href, { headers: authHeaders() });
            if (!response.ok) throw await errorFrom(response);
            const url = URL.createObjectURL(await response.blob());
            const a = Object.assign(document.createElement("a"), { href: url, download: link.getAttribute("download") });
            a.click();
            setTimeout(() => URL.revokeObjectURL(url), 60000);
          } catch (error) { showError(error.message); }
        });
      }
      actions.appendChild(link);
    }
    const sub = document.createElement("span");
    sub.className = "sub";
    const when = job.created_at ? new Date(job.created_at).toLocaleString() : "";
    const extra = job.state === "failed" && job.error ? ` · ${job.error.message}` :
      job.result ? ` · ${fmtTime(job.result.duration || 0)}` : "";
    sub.textContent = `${job.voice} · ${job.speed}× · ${when}${extra}`;
    li.append(badge, text, actions, sub);
    return li;
  }

  // Playback clock and caption highlight; setInterval keeps running in background tabs and headless.
  function tick() {
    const position = player.position();
    transcript.highlight(position);
    const total = session.job && session.job.result ? session.job.result.duration : session.renderedSeconds;
    ui.clock.textContent = `${fmtTime(position)} / ${fmtTime(total || 0)}`;
    ui.playedBar.style.width = total ? `${Math.min(100, (100 * position) / total)}%` : "0%";
    if (player.finished) ui.pause.disabled = true;
  }

  function init() {
    ui.apiKey.value = localStorage.getItem(KEY_STORAGE) || "";
    ui.apiKey.addEventListener("change", () => {
      const value = ui.apiKey.value.trim();
      if (value) localStorage.setItem(KEY_STORAGE, value); else localStorage.removeItem(KEY_STORAGE);
      loadVoices();
      loadJobs();
    });
    ui.text.addEventListener("input", () => { ui.chars.textContent = ui.text.value.length.toLocaleString(); });
    ui.speed.addEventListener("input", () => { ui.speedValue.textContent = `${Number(ui.speed.value).toFixed(2)}×`; });
    ui.form.addEventListener("submit", submit);
    ui.preview.addEventListener("click", preview);
    ui.refresh.addEventListener("click", loadJobs);
    ui.pause.addEventListener("click", () => {
      if (player.state === "paused") { player.resume(); ui.pause.textContent = "Pause"; }
      else { player.pause(); ui.pause.textContent = "Resume"; }
    });
    ui.stop.addEventListener("click", () => { stopSession(); });
    setInterval(tick, 100);
    loadVoices();
    loadJobs();
  }

  // What tests and the curious can read from the console.
  window.spoolPlayer = {
    get playedSeconds() { return player.position(); },
    get scheduledSeconds() { return player.scheduledSeconds; },
    get playerState() { return player.state; },
    get audioTime() { return player.ctx ? player.ctx.currentTime : 0; },
    get jobId() { return session.jobId; },
    get jobState() { return session.state; },
    get percent() { return session.percent; },
    get events() { return session.events.slice(); },
    get speaking() { return transcript.speakingText; },
    player,
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
