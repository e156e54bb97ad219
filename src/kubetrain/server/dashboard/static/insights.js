// The Experiment page's behaviour: a sortable trials table and three plotly charts (insights.py, issue 13).
//
// The data comes as JSON in <script id="insights-data"> (rendered with Jinja's tojson); text reaches the page
// through textContent only, and strings handed to plotly (which reads a little HTML in labels) are escaped.
(function () {
  "use strict";

  // -- sorting --------------------------------------------------------------------------------------------
  // A heading's click sorts its table by that column: ascending first, then descending on the next click.
  // Numeric columns compare as numbers (2 before 10); text compares with numbers inside it in order
  // ("sweep-9" before "sweep-10").  Cells with no value stay last either way; ties keep the page's order.

  function sortValue(cell, numeric) {
    const raw = cell ? cell.getAttribute("data-sort") : "";
    if (raw === null || raw === "") return null;
    if (!numeric) return raw;
    const number = parseFloat(raw);
    return Number.isNaN(number) ? null : number;
  }

  function compare(a, b, numeric) {
    if (numeric) return a - b;
    return String(a).localeCompare(String(b), undefined, { numeric: true, sensitivity: "base" });
  }

  function sortBy(table, header) {
    const numeric = header.getAttribute("data-numeric") === "true";
    const index = header.cellIndex;
    const descending = header.getAttribute("aria-sort") === "ascending";
    const body = table.tBodies[0];
    const rows = Array.from(body.rows).map(function (row, position) {
      return { row: row, position: position, value: sortValue(row.cells[index], numeric) };
    });
    rows.sort(function (x, y) {
      if (x.value === null || y.value === null) {
        if (x.value === y.value) return x.position - y.position;
        return x.value === null ? 1 : -1;
      }
      const order = compare(x.value, y.value, numeric);
      return (descending ? -order : order) || x.position - y.position;
    });
    rows.forEach(function (item) { body.appendChild(item.row); });
    table.querySelectorAll("th.sort-header").forEach(function (th) { th.setAttribute("aria-sort", "none"); });
    header.setAttribute("aria-sort", descending ? "descending" : "ascending");
    table.setAttribute("data-sorted-by", header.getAttribute("data-key") || "");
    table.setAttribute("data-sort-dir", descending ? "descending" : "ascending");
  }

  function setUpSorting() {
    document.querySelectorAll("table.sortable").forEach(function (table) {
      table.querySelectorAll("th.sort-header").forEach(function (header) {
        header.addEventListener("click", function () { sortBy(table, header); });
        header.addEventListener("keydown", function (event) {
          if (event.key === "Enter" || event.key === " ") {
            event.preventDefault();
            sortBy(table, header);
          }
        });
      });
    });
  }

  // -- charts ---------------------------------------------------------------------------------------------

  function plain(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function say(id, message) {
    const element = document.getElementById(id);
    if (!element) return;
    const note = document.createElement("p");
    note.className = "chart-empty";
    note.textContent = message;
    element.replaceChildren(note);
  }

  const LAYOUT = { margin: { l: 60, r: 20, t: 10, b: 45 }, height: 320, showlegend: true,
                   legend: { orientation: "h", y: -0.25 } };
  const CONFIG = { displaylogo: false, responsive: true };

  function objectiveChart(data) {
    const o = data.objective;
    if (!o.trials.length) return say("chart-objective", "No trial has reported " + o.metric + " yet.");
    const traces = [
      { x: o.trials, y: o.values, mode: "markers", type: "scatter", name: "trial",
        hovertext: o.trials.map(function (t, i) { return plain("trial " + t + " (" + o.jobs[i] + "), " + o.states[i]); }),
        hoverinfo: "text+y" },
      { x: o.trials, y: o.best_so_far, mode: "lines", type: "scatter", name: "best so far",
        line: { shape: "hv", dash: "dot" }, hoverinfo: "skip" },
    ];
    if (o.best) {
      traces.push({ x: [o.best.trial], y: [o.best.value], mode: "markers", type: "scatter", name: "best",
                    marker: { symbol: "star", size: 16, color: "#e6a700", line: { width: 1, color: "#333" } },
                    hovertext: [plain("best: trial " + o.best.trial + " (" + o.best.job + ")")], hoverinfo: "text+y" });
    }
    Plotly.newPlot("chart-objective", traces, Object.assign({}, LAYOUT, {
      xaxis: { title: { text: "trial" }, dtick: o.trials.length <= 20 ? 1 : undefined },
      yaxis: { title: { text: plain(o.metric) } } }), CONFIG);
  }

  function parcoordsChart(data) {
    const p = data.parcoords;
    if (!p.trials.length) return say("chart-parcoords", "No trial has reported " + p.metric + " yet.");
    const dimensions = p.dimensions.map(function (d) {
      const out = { label: plain(d.label), values: d.values };
      if (d.ticktext) {
        out.tickvals = d.tickvals;
        out.ticktext = d.ticktext;  // parcoords draws tick labels as plain text (entities would show)
      }
      return out;
    });
    Plotly.newPlot("chart-parcoords", [{
      type: "parcoords", dimensions: dimensions,
      line: { color: p.color, colorscale: "Viridis", reversescale: p.goal === "minimize", showscale: true },
    }], Object.assign({}, LAYOUT, { margin: { l: 60, r: 60, t: 40, b: 20 }, showlegend: false }), CONFIG);
  }

  function curvesChart(data) {
    const state = { metric: data.curves.metric, cache: {}, url: data.curve_url };
    data.curves.curves.forEach(function (c) { state.cache[c.trial] = c; });
    const boxes = Array.from(document.querySelectorAll("input.overlay"));
    const chosen = new Set(data.curves.selected);
    boxes.forEach(function (box) { box.checked = chosen.has(Number(box.getAttribute("data-trial"))); });

    function draw() {
      const ticked = boxes.filter(function (b) { return b.checked; })
        .map(function (b) { return Number(b.getAttribute("data-trial")); });
      const traces = ticked.filter(function (t) { return state.cache[t]; }).map(function (t) {
        const c = state.cache[t];
        return { x: c.steps, y: c.values, mode: "lines", type: "scatter",
                 name: plain("trial " + c.trial + (c.best ? " ★" : "")), line: { width: c.best ? 3 : 1.5 } };
      });
      const chart = document.getElementById("chart-curves");
      chart.setAttribute("data-curves", String(traces.length));
      if (!traces.length) {
        if (chart.data) Plotly.purge(chart);
        return say("chart-curves", "Tick trials in the table to overlay their " + state.metric + " curves.");
      }
      if (!chart.data) chart.replaceChildren();
      Plotly.react(chart, traces, Object.assign({}, LAYOUT, {
        xaxis: { title: { text: "step" } }, yaxis: { title: { text: plain(state.metric) } } }), CONFIG);
    }

    function load(trial) {
      return fetch(state.url + encodeURIComponent(trial), { credentials: "same-origin",
                                                            headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(function (curve) { state.cache[trial] = curve; });
    }

    boxes.forEach(function (box) {
      box.addEventListener("change", function () {
        const trial = Number(box.getAttribute("data-trial"));
        if (!box.checked || state.cache[trial]) return draw();
        box.disabled = true;
        load(trial).then(draw, function (error) {
          box.checked = false;
          say("chart-curves", "Could not load trial " + trial + "'s curve (" + error.message + ").");
        }).finally(function () { box.disabled = false; });
      });
    });
    draw();
  }

  // -- a running experiment ------------------------------------------------------------------------------
  // The page is a snapshot (reloading it would lose the user's sort and ticks), so while the experiment runs
  // it only says when trials have finished since, and lets the user reload.

  const POLL_MS = 5000;

  function watchProgress(data) {
    const note = document.getElementById("experiment-stale");
    if (data.state !== "Running" || !note || !window.kt) return;
    const timer = setInterval(function () {
      window.kt.api("GET", "/api/v1/experiments/" + encodeURIComponent(data.experiment)).then(function (reply) {
        const done = (reply.data.counts && reply.data.counts.done) || 0;
        if (done === data.done && reply.data.state === data.state) return;
        const more = done - data.done;
        note.querySelector("span").textContent = reply.data.state !== "Running"
          ? "The experiment has ended (" + reply.data.state + ")."
          : more + " more trial" + (more === 1 ? " has" : "s have") + " finished.";
        note.hidden = false;
        if (reply.data.state !== "Running") clearInterval(timer);
      }, function () { /* the master is busy or restarting: try again at the next tick */ });
    }, POLL_MS);
  }

  // -- tokens (Users page) --------------------------------------------------------------------------------
  // Revoking takes two clicks (the first arms the button), then the API's DELETE with the page's CSRF header.

  function setUpRevoking() {
    document.querySelectorAll("button.revoke-token").forEach(function (button) {
      button.addEventListener("click", function () {
        if (button.getAttribute("data-armed") !== "true") {
          button.setAttribute("data-armed", "true");
          button.textContent = "click again to revoke";
          return;
        }
        button.disabled = true;
        const id = button.getAttribute("data-token");
        window.kt.api("DELETE", "/api/v1/tokens/" + encodeURIComponent(id)).then(function () {
          const status = button.closest("tr").querySelector(".token-status");
          status.textContent = "revoked";
          status.className = "token-status token-revoked";
          button.remove();
        }, function (error) {
          button.disabled = false;
          button.textContent = "could not revoke: " + error.message;
        });
      });
    });
  }

  function drawCharts() {
    const element = document.getElementById("insights-data");
    if (!element) return;
    const data = JSON.parse(element.textContent);
    watchProgress(data);
    if (typeof window.Plotly === "undefined") {
      const note = document.getElementById("charts-off");
      if (note) note.hidden = false;
      return;
    }
    objectiveChart(data);
    parcoordsChart(data);
    curvesChart(data);
    document.body.setAttribute("data-charts", "ready");
  }

  function start() {
    setUpSorting();
    setUpRevoking();
    try {
      drawCharts();
    } catch (error) {
      document.body.setAttribute("data-charts", "failed");
      throw error;
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
