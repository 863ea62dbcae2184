// The Sluice status page. It reads the same API as every other client
// (GET /api/v1/streams every two seconds, GET /api/v1/node now and then),
// shows what the server reports and tolerates what it does not: a field a
// server version lacks is left out, never guessed. Players read from the
// shared HTTP listener (server.http), which answers CORS with "*": HTTP-FLV
// through mpegts.js, HLS through hls.js (or the browser's own HLS).
//
// Errors are shown on the page, not written to the console: a console
// error means a bug in this page, and the browser test fails on one.
"use strict";

(() => {
  const POLL_MS = 2000; // how often the stream list is read
  const NODE_POLL_MS = 10000; // how often the node's summary is read
  const HISTORY_MS = 5 * 60 * 1000; // the span of a stream's chart
  const SERVER_STEP_S = 10; // bitrate_history has one point per 10 s
  const DEFAULT_HTTP_PORT = "8080"; // server.http's default, when /api/v1/node is absent
  const TOKEN_KEY = "sluice.token";

  const $ = (sel) => document.querySelector(sel);
  const svgNS = "http://www.w3.org/2000/svg";

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    node: undefined, // undefined: not read yet; null: the server has no /api/v1/node
    nodeAt: 0, // when node was read (Date.now())
    mediaBase: undefined, // URL prefix of the shared HTTP listener; null when it is off
    rows: new Map(), // stream path -> {tr, cells}
    history: new Map(), // stream path -> {samples: [{t, v}], unit, last}
    selected: null, // stream path playing
    proto: "flv",
    player: null, // {destroy()}
    scripts: new Map(), // src -> Promise, for the players' libraries
  };

  // ---- API -----------------------------------------------------------

  // api fetches path with the token, if one was given. It resolves to the
  // Response whatever its status; fetch rejects only when the server cannot
  // be reached.
  function api(path) {
    const headers = { Accept: "application/json" };
    if (state.token) headers.Authorization = "Bearer " + state.token;
    return fetch(path, { headers, cache: "no-store" });
  }

  function showAPIError(msg) {
    const el = $("#api-error");
    el.textContent = msg || "";
    el.hidden = !msg;
  }

  async function pollStreams() {
    try {
      const res = await api("/api/v1/streams");
      if (res.status === 401 || res.status === 403) {
        showAPIError("The API refused the request (" + res.status + "): enter a valid token above.");
        return;
      }
      if (!res.ok) {
        showAPIError("GET /api/v1/streams answered " + res.status + " " + res.statusText + ".");
        return;
      }
      const body = await res.json();
      showAPIError("");
      render(Array.isArray(body && body.streams) ? body.streams : []);
    } catch (e) {
      showAPIError("Cannot reach the API: " + e.message + ". Retrying.");
    }
  }

  async function pollNode() {
    try {
      const res = await api("/api/v1/node");
      if (res.ok) {
        state.node = await res.json();
        state.nodeAt = Date.now();
        renderNode();
      } else {
        // No summary: meanwhile players use server.http's default port.
        if (state.node === undefined) {
          state.node = null;
          renderNode();
        }
        // A server without the endpoint (404, 405, 501) is not asked
        // again; a refusal or a failure is, on the next tick.
        if (res.status === 404 || res.status === 405 || res.status === 501) return;
      }
    } catch (e) {
      // Unreachable: pollStreams says so already.
    }
    setTimeout(pollNode, NODE_POLL_MS);
  }

  // ---- the node ------------------------------------------------------

  function renderNode() {
    const dl = $("#node");
    dl.replaceChildren();
    const n = state.node;
    const add = (term, value, title, cls) => {
      if (value === undefined || value === null || value === "") return;
      const div = document.createElement("div");
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = term;
      dd.textContent = String(value);
      if (title) dd.title = title;
      if (cls) dd.className = cls;
      div.append(dt, dd);
      dl.append(div);
    };
    if (n) {
      add("version", n.version);
      // Counted from the server's own figure plus the time since it was
      // read, so that a skewed browser clock does not show.
      const started = typeof n.started === "string" ? Date.parse(n.started) : NaN;
      if (typeof n.uptime_seconds === "number") add("up", duration(n.uptime_seconds * 1000 + Date.now() - state.nodeAt), n.started);
      else if (Number.isFinite(started)) add("up", duration(Math.max(0, Date.now() - started)), n.started);
      add("file", n.file);
      if (typeof n.config_hash === "string") add("config", n.config_hash.slice(0, 12), n.config_hash);
      if (n.last_reload && typeof n.last_reload === "object") {
        const r = n.last_reload;
        const result = r.result || r.status || (r.error ? "failed" : "");
        const at = typeof r.at === "string" ? Date.parse(r.at) : NaN;
        const when = Number.isFinite(at) ? duration(Math.max(0, Date.now() - at)) + " ago" : "";
        const changes = typeof r.changes === "number" ? r.changes + (r.changes === 1 ? " change" : " changes") : "";
        add("last reload", [result, changes, when].filter(Boolean).join(", "), [r.at, r.error].filter(Boolean).join("\n"),
          result === "invalid" || result === "failed" ? "error" : "");
      }
    }
    setMediaBase();
  }

  // setMediaBase works out where players read from: ?media=URL on the
  // page's address wins (a proxy or CDN in front of server.http); then the
  // page's host with the port of listeners.http from /api/v1/node; then
  // server.http's default port when the server has no /api/v1/node.
  function setMediaBase() {
    // Only an http(s) base: the value comes from a link anyone can send.
    const override = new URLSearchParams(location.search).get("media");
    let base;
    if (override && /^https?:\/\/[^/]/i.test(override)) {
      base = override.replace(/\/+$/, "");
    } else if (state.node && state.node.listeners && typeof state.node.listeners === "object") {
      const port = portOf(state.node.listeners.http);
      base = port ? location.protocol + "//" + location.hostname + ":" + port : null;
    } else if (state.node === null || (state.node && !state.node.listeners)) {
      base = location.protocol + "//" + location.hostname + ":" + DEFAULT_HTTP_PORT;
    } else {
      return; // not known yet
    }
    if (base === state.mediaBase) return;
    state.mediaBase = base;
    $("#media-base").textContent = base || "nothing: server.http is off";
    if (state.selected) play(state.selected, state.proto);
  }

  // portOf returns the port of a listen address ("127.0.0.1:8080",
  // ":8080", "[::]:8080"), or "" for none.
  function portOf(addr) {
    if (typeof addr !== "string") return "";
    const m = /:(\d+)$/.exec(addr);
    return m ? m[1] : "";
  }

  // ---- the stream table ----------------------------------------------

  const columns = ["path", "state", "publisher", "tracks", "bitrate", "chart", "readers", "uptime", "action"];

  function render(streams) {
    const now = Date.now();
    const seen = new Set();
    const tbody = $("#streams tbody");
    streams.sort((a, b) => String(a.path).localeCompare(String(b.path)));
    let prev = null;
    for (const s of streams) {
      if (typeof s.path !== "string" || seen.has(s.path)) continue;
      seen.add(s.path);
      let row = state.rows.get(s.path);
      if (!row) {
        row = newRow(s.path);
        state.rows.set(s.path, row);
      }
      // Rows stay in path order, and a row already in place is not
      // moved: moving it would cancel a click on its button.
      const want = prev ? prev.nextElementSibling : tbody.firstElementChild;
      if (want !== row.tr) tbody.insertBefore(row.tr, want);
      prev = row.tr;
      fillRow(row, s, now);
    }
    for (const [path, row] of state.rows) {
      if (!seen.has(path)) {
        row.tr.remove();
        state.rows.delete(path);
        state.history.delete(path);
      }
    }
    if (state.node) renderNode(); // keeps "up" moving between reads of the node
    $("#count").textContent = streams.length ? "(" + streams.length + ")" : "";
    $("#empty").hidden = streams.length > 0;
    if (state.selected) {
      $("#player-status").dataset.listed = seen.has(state.selected) ? "yes" : "no";
    }
  }

  function newRow(path) {
    const tr = document.createElement("tr");
    tr.dataset.path = path;
    const cells = {};
    for (const c of columns) {
      const td = document.createElement("td");
      td.className = c;
      cells[c] = td;
      tr.append(td);
    }
    cells.bitrate.classList.add("num");
    cells.uptime.classList.add("num");
    cells.path.textContent = path;
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "play";
    btn.textContent = "Play";
    btn.addEventListener("click", () => select(path));
    cells.action.append(btn);
    return { tr, cells };
  }

  function fillRow(row, s, now) {
    const c = row.cells;
    row.tr.classList.toggle("selected", s.path === state.selected);
    const st = typeof s.state === "string" ? s.state : "";
    c.state.textContent = st;
    c.state.className = "state state-" + st;

    const pub = s.publisher && typeof s.publisher === "object" ? [s.publisher.proto, s.publisher.remote].filter(Boolean).join(" ") : "";
    const relay = s.relay && typeof s.relay === "object" && s.relay.upstream ? "relay " + s.relay.upstream + (s.relay.state ? " (" + s.relay.state + ")" : "") : "";
    setText(c.publisher, [pub, relay].filter(Boolean).join(" · "));

    c.tracks.replaceChildren(...trackLines(s).map((t) => {
      const span = document.createElement("span");
      span.textContent = t;
      return span;
    }));

    const h = sample(s, now);
    setText(c.bitrate, h.current === undefined ? "" : rate(h.current, h.currentUnit));
    c.chart.replaceChildren(sparkline(h.points, h.unit));

    setText(c.readers, readers(s));

    const since = typeof s.since === "string" ? Date.parse(s.since) : NaN;
    setText(c.uptime, Number.isFinite(since) && st !== "ended" ? duration(Math.max(0, now - since)) : "");
  }

  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  // trackLines describes each track: from tracks_detail when the server
  // gives it, else the tracks strings ("H264 1280x720").
  function trackLines(s) {
    if (Array.isArray(s.tracks_detail) && s.tracks_detail.length) {
      return s.tracks_detail.map((t) => {
        if (!t || typeof t !== "object") return "";
        const parts = [t.codec || t.kind || "?"];
        if (t.width && t.height) parts.push(t.width + "x" + t.height);
        if (t.fps) parts.push(round(t.fps, 2) + " fps");
        if (t.sample_rate) parts.push(round(t.sample_rate / 1000, 1) + " kHz");
        if (t.channels) parts.push(t.channels + " ch");
        if (typeof t.bitrate_bps === "number") parts.push(rate(t.bitrate_bps, "bit/s"));
        return parts.join(" ");
      }).filter(Boolean);
    }
    return Array.isArray(s.tracks) ? s.tracks.map(String) : [];
  }

  // readers lists the players by protocol when the server counts them
  // so, and the rest of the stream's readers (the server's own: HLS
  // muxers, recorders, forwards) as "internal".
  function readers(s) {
    const total = typeof s.readers === "number" ? s.readers : undefined;
    const by = s.readers_by_proto;
    if (!by || typeof by !== "object") return total === undefined ? "" : String(total);
    const keys = Object.keys(by).sort().filter((k) => typeof by[k] === "number" && by[k] > 0);
    const parts = keys.map((k) => by[k] + " " + k);
    const players = keys.reduce((n, k) => n + by[k], 0);
    if (total !== undefined && total > players) parts.push(total - players + " internal");
    return parts.length ? parts.join(" · ") : "0";
  }

  // sample returns the points of a stream's chart and its current rate.
  // The page keeps its own history, one point per poll, from the best
  // counter the server gives: bytes_in (bit/s from its deltas), else
  // bitrate_bps, else units (access units per second, which is not a bit
  // rate and is labelled so). The server's bitrate_history (bit/s, one
  // point per 10 s) is drawn instead once it spans longer, which it does
  // at once for a stream that was live before the page was opened.
  function sample(s, now) {
    let h = state.history.get(s.path);
    let counter, unit;
    // bytes_in of 0 with units counting is a server that does not measure
    // bytes: the units tell more than a flat line.
    if (typeof s.bytes_in === "number" && (s.bytes_in > 0 || !(s.units > 0))) {
      counter = s.bytes_in * 8;
      unit = "bit/s";
    } else if (typeof s.bitrate_bps === "number") {
      unit = "bit/s";
    } else if (typeof s.units === "number") {
      counter = s.units;
      unit = "units/s";
    }
    if (!h || h.unit !== unit) {
      h = { samples: [], unit, last: null };
      state.history.set(s.path, h);
    }
    let v;
    if (counter === undefined) {
      v = s.bitrate_bps;
    } else if (h.last && counter >= h.last.counter && now > h.last.t) {
      v = ((counter - h.last.counter) * 1000) / (now - h.last.t);
    }
    // A counter that went back is a new stream under the same path: its
    // next delta starts from here.
    if (counter !== undefined) h.last = { t: now, counter };
    if (typeof v === "number" && Number.isFinite(v)) h.samples.push({ t: now, v });
    while (h.samples.length && h.samples[0].t < now - HISTORY_MS) h.samples.shift();
    const own = h.samples.map((p) => p.v);
    const ownSpan = h.samples.length > 1 ? h.samples[h.samples.length - 1].t - h.samples[0].t : 0;

    const server = Array.isArray(s.bitrate_history)
      ? s.bitrate_history.filter((x) => typeof x === "number").slice(-(HISTORY_MS / 1000 / SERVER_STEP_S))
      : [];
    const useServer = server.length >= 2 && (server.length - 1) * SERVER_STEP_S * 1000 >= ownSpan;

    // The server's 10 s figure is 0 until its first period completes;
    // the page's own last delta is better then.
    let current = own[own.length - 1];
    let currentUnit = h.unit;
    if (typeof s.bitrate_bps === "number" && (s.bitrate_bps > 0 || current === undefined)) {
      current = s.bitrate_bps;
      currentUnit = "bit/s";
    }
    return {
      points: useServer ? server : own,
      unit: useServer ? "bit/s" : h.unit,
      current,
      currentUnit,
    };
  }

  // sparkline draws points (oldest first) as a small area chart scaled to
  // their maximum.
  function sparkline(points, unit) {
    const w = 140, hgt = 30, pad = 2;
    const svg = document.createElementNS(svgNS, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", "0 0 " + w + " " + hgt);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    const title = document.createElementNS(svgNS, "title");
    svg.append(title);
    if (points.length < 2) {
      title.textContent = "collecting";
      return svg;
    }
    const max = Math.max(...points, 1);
    const min = Math.min(...points);
    const step = (w - 2 * pad) / (points.length - 1);
    const xy = points.map((v, i) => [pad + i * step, hgt - pad - (v / max) * (hgt - 2 * pad)]);
    const line = xy.map(([x, y]) => x.toFixed(1) + "," + y.toFixed(1)).join(" ");
    const area = document.createElementNS(svgNS, "polygon");
    area.setAttribute("points", pad + "," + (hgt - pad) + " " + line + " " + (w - pad) + "," + (hgt - pad));
    const pl = document.createElementNS(svgNS, "polyline");
    pl.setAttribute("points", line);
    svg.append(area, pl);
    title.textContent = "min " + rate(min, unit) + ", max " + rate(max, unit);
    return svg;
  }

  // ---- the player ----------------------------------------------------

  function select(path) {
    state.selected = path;
    for (const [p, row] of state.rows) row.tr.classList.toggle("selected", p === path);
    writeHash();
    play(path, state.proto);
  }

  function writeHash() {
    const h = state.selected ? "#play=" + encodeURIComponent(state.selected) + "&over=" + state.proto : "";
    history.replaceState(null, "", location.pathname + location.search + h);
  }

  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    const over = p.get("over");
    if (over === "flv" || over === "hls") state.proto = over;
    for (const r of document.querySelectorAll('input[name="proto"]')) r.checked = r.value === state.proto;
    return p.get("play");
  }

  function playerStatus(msg, isError) {
    const el = $("#player-status");
    el.textContent = msg;
    el.classList.toggle("error", !!isError);
    el.classList.toggle("muted", !isError);
  }

  function stopPlayer() {
    if (state.player) {
      try {
        state.player.destroy();
      } catch (e) {
        // A player that is half gone has nothing left to free.
      }
      state.player = null;
    }
    $("#video-box").replaceChildren();
  }

  // loadScript adds one of the embedded players' libraries on first use,
  // so the list stays light for those who never press Play.
  function loadScript(src) {
    if (!state.scripts.has(src)) {
      state.scripts.set(src, new Promise((resolve, reject) => {
        const el = document.createElement("script");
        el.src = src;
        el.onload = resolve;
        el.onerror = () => {
          state.scripts.delete(src);
          reject(new Error("cannot load " + src));
        };
        document.head.append(el);
      }));
    }
    return state.scripts.get(src);
  }

  async function play(path, proto) {
    stopPlayer();
    $("#player").hidden = false;
    $("#player-path").textContent = path;
    const link = $("#player-url");
    if (state.mediaBase === undefined) {
      playerStatus("Waiting for the server's listeners…");
      return;
    }
    if (state.mediaBase === null) {
      link.textContent = "";
      playerStatus("This server has no shared HTTP listener (server.http), so there is nothing to play from here.", true);
      return;
    }
    const url = state.mediaBase + "/" + path.split("/").map(encodeURIComponent).join("/") + (proto === "hls" ? "/index.m3u8" : ".flv");
    link.href = url;
    link.textContent = url;

    const video = document.createElement("video");
    video.id = "video";
    video.muted = true; // browsers autoplay muted video only
    video.autoplay = true;
    video.controls = true;
    video.playsInline = true;
    $("#video-box").append(video);
    const token = {}; // tells this attempt from a later one
    state.player = { destroy() {}, token };
    const current = () => state.player && state.player.token === token;
    const start = () => video.play().catch((e) => {
      // Interrupted by a switch or refused by an autoplay policy: say so,
      // the controls still work.
      if (current() && e.name !== "AbortError") playerStatus("Press play: " + e.message);
    });

    try {
      if (proto === "flv") {
        await loadScript("/ui/vendor/mpegts.js");
        if (!current()) return;
        const mpegts = window.mpegts;
        if (!mpegts || !mpegts.isSupported()) {
          playerStatus("This browser cannot play HTTP-FLV (no Media Source Extensions). Try HLS.", true);
          return;
        }
        // Errors reach the page through the ERROR event; the library's
        // own chatter stays out of the console.
        mpegts.LoggingControl.enableAll = false;
        const p = mpegts.createPlayer(
          { type: "flv", isLive: true, url },
          {
            enableStashBuffer: false, // hand data to the decoder at once: low latency
            lazyLoad: false,
            liveSync: true, // play slightly faster to catch up with the live edge
            liveSyncTargetLatency: 1.5,
            liveSyncMaxLatency: 3,
            autoCleanupSourceBuffer: true,
          },
        );
        p.on(mpegts.Events.ERROR, (type, detail, info) => {
          if (current()) playerStatus("HTTP-FLV: " + [type, detail, info && (info.msg || info.code)].filter(Boolean).join(": "), true);
        });
        p.on(mpegts.Events.LOADING_COMPLETE, () => {
          if (current()) playerStatus("The stream ended.");
        });
        state.player = {
          token,
          destroy() {
            p.pause();
            p.unload();
            p.detachMediaElement();
            p.destroy();
          },
        };
        p.attachMediaElement(video);
        p.load();
        playerStatus("Playing over HTTP-FLV (mpegts.js).");
        start();
        return;
      }

      await loadScript("/ui/vendor/hls.min.js");
      if (!current()) return;
      const Hls = window.Hls;
      if (Hls && Hls.isSupported()) {
        const hls = new Hls({ lowLatencyMode: true, liveDurationInfinity: true, backBufferLength: 30 });
        let recovered = 0;
        hls.on(Hls.Events.ERROR, (ev, d) => {
          if (!current() || !d.fatal) return;
          playerStatus("HLS: " + d.type + ": " + d.details, true);
          // hls.js's documented recovery: reload on a network error,
          // rebuild the buffer on a media error; give up after a few.
          if (recovered++ >= 5) return;
          if (d.type === Hls.ErrorTypes.NETWORK_ERROR) setTimeout(() => current() && hls.startLoad(), 2000);
          else if (d.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
        });
        hls.on(Hls.Events.MANIFEST_PARSED, start);
        state.player = { token, destroy() { hls.destroy(); } };
        hls.loadSource(url);
        hls.attachMedia(video);
        playerStatus("Playing over HLS (hls.js).");
        return;
      }
      if (video.canPlayType("application/vnd.apple.mpegurl")) {
        state.player = {
          token,
          destroy() {
            video.removeAttribute("src");
            video.load();
          },
        };
        video.src = url;
        playerStatus("Playing over HLS (the browser's own player).");
        start();
        return;
      }
      playerStatus("This browser cannot play HLS.", true);
    } catch (e) {
      if (current()) playerStatus(e.message, true);
    }
  }

  // ---- formatting ----------------------------------------------------

  function round(v, digits) {
    const f = 10 ** digits;
    return Math.round(v * f) / f;
  }

  function rate(v, unit) {
    if (typeof v !== "number" || !Number.isFinite(v)) return "";
    if (unit !== "bit/s") return round(v, 1) + " " + (unit || "");
    if (v >= 1e6) return round(v / 1e6, 2) + " Mbit/s";
    if (v >= 1e3) return round(v / 1e3, 0) + " kbit/s";
    return round(v, 0) + " bit/s";
  }

  function duration(ms) {
    let s = Math.floor(ms / 1000);
    const d = Math.floor(s / 86400);
    s -= d * 86400;
    const h = Math.floor(s / 3600);
    s -= h * 3600;
    const m = Math.floor(s / 60);
    s -= m * 60;
    const two = (n) => String(n).padStart(2, "0");
    if (d) return d + "d " + two(h) + "h";
    if (h) return h + "h " + two(m) + "m";
    if (m) return m + "m " + two(s) + "s";
    return s + "s";
  }

  // ---- wiring --------------------------------------------------------

  function init() {
    const input = $("#token");
    const tokenState = () => {
      $("#token-state").textContent = state.token ? "token set for this tab" : "";
    };
    tokenState();
    $("#token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      state.token = input.value.trim();
      input.value = "";
      if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token);
      else sessionStorage.removeItem(TOKEN_KEY);
      tokenState();
      pollStreams();
    });
    $("#token-clear").addEventListener("click", () => {
      state.token = "";
      sessionStorage.removeItem(TOKEN_KEY);
      tokenState();
    });
    for (const r of document.querySelectorAll('input[name="proto"]')) {
      r.addEventListener("change", () => {
        if (!r.checked) return;
        state.proto = r.value;
        writeHash();
        if (state.selected) play(state.selected, state.proto);
      });
    }
    $("#player-close").addEventListener("click", () => {
      stopPlayer();
      state.selected = null;
      for (const row of state.rows.values()) row.tr.classList.remove("selected");
      $("#player").hidden = true;
      writeHash();
    });

    const wanted = readHash();
    if (wanted) select(wanted);
    setMediaBase(); // ?media= needs no answer from the server
    pollNode();
    pollStreams();
    setInterval(pollStreams, POLL_MS);
  }

  init();
})();
