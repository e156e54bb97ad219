// A job's page: state, attempts and events kept live, the log streamed as it is written, metrics charted,
// usage now and at peak, artifacts.  Everything the master says is put in the page as text (textContent).
"use strict";
(function () {
  const POLL_MS = 2000;
  const FINAL = ["Succeeded", "Failed", "Cancelled"];
  const data = JSON.parse(document.getElementById("job-data").textContent);
  const base = "/api/v1/jobs/" + encodeURIComponent(data.name);
  let job = null;
  let logAttempt = null;
  let logSource = null;
  let logAbort = null;
  let metricsAfter = 0;
  const series = {};
  let artifactsShownFor = null;

  function finished() { return job && FINAL.indexOf(job.state) >= 0; }

  // -- log ----------------------------------------------------------------------------------------------
  const MAX_LOG_CHARS = 2000000;

  function appendLog(text) {
    const pre = document.getElementById("log");
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.appendChild(document.createTextNode(text));
    if (pre.textContent.length > MAX_LOG_CHARS) pre.textContent = pre.textContent.slice(-MAX_LOG_CHARS / 2);
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  }

  function logStatus(text) { document.getElementById("log-status").textContent = text; }

  function stopLog() {
    if (logSource) { logSource.close(); logSource = null; }
    if (logAbort) { logAbort.abort(); logAbort = null; }
  }

  // Server-sent events (server/log_routes.py): each event's id is a cursor just after its lines, so a reconnect
  // (EventSource sends Last-Event-ID by itself) resumes where the page stopped: no gap, no line twice.
  function streamLog(attempt) {
    stopLog();
    logAttempt = attempt;
    document.getElementById("log-attempt").textContent = String(attempt);
    document.getElementById("log").textContent = "";
    let opened = false;
    const source = new EventSource(base + "/logs/stream?attempt=" + attempt);
    logSource = source;
    source.onopen = function () { opened = true; logStatus("live"); };
    source.onmessage = function (event) { appendLog(event.data + "\n"); };  // whole lines, newline dropped
    const end = function () { source.close(); logStatus("end of log"); };
    source.addEventListener("end", end);  // the attempt ended and everything was sent
    source.onerror = function () {
      if (source !== logSource) return;
      if (!opened && source.readyState === EventSource.CLOSED) {
        logSource = null;
        followLog(attempt);  // a master without the event stream: follow the plain log instead
      } else if (finished()) {
        end();
      } else {
        logStatus("reconnecting");
      }
    };
  }

  // The plain log route, followed: read as it streams; after a break it starts again from the top (cleared
  // first), so nothing is lost or shown twice.
  async function followLog(attempt) {
    const controller = new AbortController();
    logAbort = controller;
    try {
      const response = await fetch(base + "/logs?follow=true&attempt=" + attempt,
                                   {credentials: "same-origin", signal: controller.signal});
      if (!response.ok) throw new Error("HTTP " + response.status);
      document.getElementById("log").textContent = "";
      logStatus("live");
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const chunk = await reader.read();
        if (chunk.done) break;
        appendLog(decoder.decode(chunk.value, {stream: true}));
      }
      appendLog(decoder.decode());
      logStatus("end of log");
    } catch (error) {
      if (controller.signal.aborted) return;
      logStatus("reconnecting (" + error.message + ")");
      setTimeout(function () { if (logAbort === controller && logAttempt === attempt) followLog(attempt); }, 2000);
    }
  }

  // -- state, attempts, events -------------------------------------------------------------------------
  function cells(tr, values) { for (const v of values) tr.appendChild(kt.el("td", v === null || v === undefined ? "" : v)); }

  function showAttempts() {
    const rows = [];
    for (const a of job.attempts || []) {
      const tr = kt.el("tr");
      cells(tr, [a.number, a.state, a.reason, a.node, (a.gpus || []).join(","), kt.when(a.started_at),
                 a.finished_at ? kt.when(a.finished_at) : "", a.exit_code, kt.bytes(a.peak_memory_bytes),
                 a.cpu_seconds !== null && a.cpu_seconds !== undefined ? a.cpu_seconds.toFixed(1) + "s" : ""]);
      rows.push(tr);
      for (const r of a.replicas || []) {
        const rr = kt.el("tr", null, "replica");
        cells(rr, [a.number + "." + r.replica, "replica " + r.replica, "", r.node, (r.gpus || []).join(","), "", "",
                   r.exit_code, kt.bytes(r.peak_memory_bytes), r.cpu_seconds]);
        rows.push(rr);
      }
    }
    const body = document.getElementById("attempts-body");
    body.replaceChildren.apply(body, rows);
  }

  function showEvents() {
    const rows = (job.events || []).map(function (e) {
      const tr = kt.el("tr");
      cells(tr, [kt.when(e.time), e.type, e.reason, e.attempt, e.message]);
      return tr;
    });
    const body = document.getElementById("events-body");
    body.replaceChildren.apply(body, rows);
  }

  function showState() {
    const badge = document.getElementById("job-state");
    badge.textContent = job.state;
    badge.className = "state state-" + String(job.state).toLowerCase();
    document.getElementById("job-reason").textContent =
      (job.reason || "") + (job.message ? ": " + job.message : "");
    const cancel = document.getElementById("cancel");
    if (cancel) cancel.hidden = finished();
  }

  async function refreshJob() {
    try {
      job = (await kt.api("GET", base)).data;
    } catch (error) {
      logStatus("could not read the job: " + error.message);
      setTimeout(refreshJob, POLL_MS);
      return;
    }
    showState();
    showAttempts();
    showEvents();
    const attempts = job.attempts || [];
    const newest = attempts.length ? attempts[attempts.length - 1].number : null;
    if (newest !== null && newest !== logAttempt) streamLog(newest);
    await refreshMetrics();
    await refreshUsage();
    if (artifactsShownFor !== job.state) { artifactsShownFor = job.state; refreshArtifacts(); }
    if (!finished()) setTimeout(refreshJob, POLL_MS);
  }

  // -- metrics -------------------------------------------------------------------------------------------
  async function refreshMetrics() {
    let points;
    try {
      points = (await kt.api("GET", base + "/metrics?after=" + metricsAfter)).data || [];
    } catch (error) {
      return;
    }
    if (!points.length) return;
    for (const p of points) {
      metricsAfter = Math.max(metricsAfter, p.id);
      const s = series[p.name] || (series[p.name] = {x: [], y: []});
      s.x.push(p.step);
      s.y.push(p.value);
    }
    const status = document.getElementById("metrics-status");
    if (typeof Plotly === "undefined") {
      status.textContent = "charts are off: plotly is not installed with this master";
      return;
    }
    const names = Object.keys(series).sort();
    status.textContent = names.length + " metric(s): " + names.join(", ");
    const traces = names.map(function (name) {
      return {x: series[name].x.slice(), y: series[name].y.slice(), name: name, mode: "lines+markers", type: "scatter"};
    });
    Plotly.react("metrics-chart", traces, {margin: {t: 20, r: 20, b: 40, l: 50}, xaxis: {title: {text: "step"}},
                                           height: 320}, {displaylogo: false, responsive: true});
  }

  // -- usage -------------------------------------------------------------------------------------------
  async function refreshUsage() {
    let live = [];
    if (job.state === "Running") {
      try { live = (await kt.api("GET", "/api/v1/top?job=" + encodeURIComponent(data.name))).data || []; }
      catch (error) { live = []; }
    }
    const rows = [];
    const seen = {};
    for (const u of live) {
      seen[u.attempt + "." + u.replica] = true;
      const attempt = (job.attempts || []).find(function (a) { return a.number === u.attempt; }) || {};
      const tr = kt.el("tr");
      cells(tr, [u.attempt, u.replica, u.node,
                 u.cpu_millis !== null && u.cpu_millis !== undefined ? (u.cpu_millis / 1000).toFixed(2) + " cores" : "",
                 kt.bytes(u.memory_bytes),
                 u.gpu_utilization !== null && u.gpu_utilization !== undefined ? u.gpu_utilization + "%" : "",
                 kt.bytes(attempt.peak_memory_bytes), attempt.cpu_seconds]);
      rows.push(tr);
    }
    for (const a of job.attempts || []) {
      if (seen[a.number + ".0"] || (a.peak_memory_bytes === null && a.cpu_seconds === null)) continue;
      const tr = kt.el("tr");
      cells(tr, [a.number, 0, a.node, "", "", "", kt.bytes(a.peak_memory_bytes),
                 a.cpu_seconds !== null && a.cpu_seconds !== undefined ? a.cpu_seconds.toFixed(1) + "s" : ""]);
      rows.push(tr);
    }
    const body = document.getElementById("usage-body");
    body.replaceChildren.apply(body, rows);
    // The IdleGPU mark: the live reading says so, or the running attempt's stored verdict does.
    const last = (job.attempts || [])[(job.attempts || []).length - 1];
    const idle = live.some(function (u) { return u.idle_gpu; }) || (job.state === "Running" && last && last.idle_gpu);
    const mark = document.getElementById("idle-gpu");
    if (mark) mark.hidden = !idle;
  }

  // -- artifacts -----------------------------------------------------------------------------------------
  async function refreshArtifacts() {
    let files;
    try { files = (await kt.api("GET", base + "/artifacts")).data || []; } catch (error) { return; }
    const list = document.getElementById("artifacts");
    if (!files.length) { list.replaceChildren(kt.el("li", "none yet", "muted")); return; }
    list.replaceChildren.apply(list, files.map(function (f) {
      const li = kt.el("li");
      const a = kt.el("a", f.path);
      a.href = base + "/artifacts/" + f.path.split("/").map(encodeURIComponent).join("/");
      a.setAttribute("download", "");
      li.appendChild(a);
      li.appendChild(kt.el("span", " " + kt.bytes(f.size), "muted"));
      return li;
    }));
  }

  // -- actions -------------------------------------------------------------------------------------------
  function message(text) {
    const p = document.getElementById("action-message");
    p.textContent = text;
    p.hidden = !text;
  }

  document.addEventListener("DOMContentLoaded", function () {
    const cancel = document.getElementById("cancel");
    if (cancel) cancel.addEventListener("click", async function () {
      try { await kt.api("POST", base + "/cancel"); message(""); refreshJob(); }
      catch (error) { message("cancel: " + error.message); }
    });
    const rerun = document.getElementById("rerun");
    if (rerun) rerun.addEventListener("click", async function () {
      try {
        const made = (await kt.api("POST", base + "/rerun", {})).data;
        window.location.assign("/dashboard/jobs/" + encodeURIComponent(made.name));
      } catch (error) { message("rerun: " + error.message); }
    });
    refreshJob();
  });
})();
