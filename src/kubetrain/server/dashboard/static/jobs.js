// The Jobs list: polls the JSON API (summary view) and redraws the table, so new jobs appear without a reload.
"use strict";
(function () {
  const POLL_MS = 1500;
  const ACTIVE = ["Queued", "Running"];
  let timer = null;
  let busy = false;

  function filters() {
    const form = document.getElementById("filters");
    const data = {};
    for (const name of ["state", "owner", "label", "experiment", "q"]) data[name] = form.elements[name].value.trim();
    return data;
  }

  function listUrl(f) {
    const params = new URLSearchParams({view: "summary", limit: "500"});
    if (f.state) params.append("state", f.state);
    const selector = [];
    if (f.label) selector.push(f.label);
    if (f.experiment) selector.push("kubetrain.io/experiment=" + f.experiment);
    if (selector.length) params.set("selector", selector.join(","));
    return "/api/v1/jobs?" + params.toString();
  }

  function resources(job) {
    const r = (job.spec && job.spec.spec && job.spec.spec.resources) || {};
    const parts = [];
    parts.push("cpu " + (r.cpu !== undefined ? r.cpu : "1"));
    parts.push("mem " + (r.memory !== undefined ? r.memory : "2Gi"));
    if (r.gpu) parts.push("gpu " + r.gpu);
    return parts.join(" · ");
  }

  async function act(verb, name, button) {
    button.disabled = true;
    const status = document.getElementById("list-status");
    try {
      const path = "/api/v1/jobs/" + encodeURIComponent(name) + "/" + verb;
      const result = await kt.api("POST", path, verb === "rerun" ? {} : undefined);
      status.textContent = verb === "rerun" ? ("submitted " + result.data.name) : ("cancelling " + name);
    } catch (error) {
      status.textContent = verb + " " + name + ": " + error.message;
    }
    refresh();
  }

  function row(job) {
    const tr = kt.el("tr");
    tr.setAttribute("data-testid", "job-row-" + job.name);
    const nameCell = kt.el("td");
    const link = kt.el("a", job.name);
    link.href = "/dashboard/jobs/" + encodeURIComponent(job.name);
    link.setAttribute("data-testid", "job-link-" + job.name);
    nameCell.appendChild(link);
    tr.appendChild(nameCell);
    const state = kt.el("td");
    const badge = kt.el("span", job.state, "state state-" + String(job.state).toLowerCase());
    badge.setAttribute("data-testid", "job-state-" + job.name);
    state.appendChild(badge);
    if (job.reason && job.reason !== "Completed") state.appendChild(kt.el("span", " " + job.reason, "muted"));
    const last = (job.attempts || [])[(job.attempts || []).length - 1];
    if (job.state === "Running" && last && last.idle_gpu) {
      // The sampler's IdleGPU verdict (core/usage_accounting.py): GPUs held but left idle.
      const idle = kt.el("span", " IDLE GPU", "idle-gpu");
      idle.setAttribute("data-testid", "idle-gpu-" + job.name);
      idle.title = "holds GPUs below the idle threshold; see the job's IdleGPU event";
      state.appendChild(idle);
    }
    tr.appendChild(state);
    const owner = job.provenance ? job.provenance.submitter : null;
    tr.appendChild(kt.el("td", owner || "-"));
    tr.appendChild(kt.el("td", kt.age(job.created_at)));
    tr.appendChild(kt.el("td", resources(job)));
    const exp = kt.el("td");
    if (job.experiment) {
      const a = kt.el("a", job.experiment);
      a.href = "/dashboard/experiments/" + encodeURIComponent(job.experiment);
      exp.appendChild(a);
    } else exp.textContent = "-";
    tr.appendChild(exp);
    const actions = kt.el("td", null, "actions");
    if (kt.mayManage(owner)) {
      if (ACTIVE.indexOf(job.state) >= 0) {
        const cancel = kt.el("button", "Cancel");
        cancel.type = "button";
        cancel.setAttribute("data-testid", "cancel-" + job.name);
        cancel.addEventListener("click", function () { act("cancel", job.name, cancel); });
        actions.appendChild(cancel);
      } else {
        const rerun = kt.el("button", "Rerun");
        rerun.type = "button";
        rerun.setAttribute("data-testid", "rerun-" + job.name);
        rerun.addEventListener("click", function () { act("rerun", job.name, rerun); });
        actions.appendChild(rerun);
      }
    }
    tr.appendChild(actions);
    return tr;
  }

  async function refresh() {
    if (busy) return;
    busy = true;
    clearTimeout(timer);
    const f = filters();
    const status = document.getElementById("list-status");
    let next = POLL_MS;
    try {
      const result = await kt.api("GET", listUrl(f));
      let jobs = result.data || [];
      if (f.owner) jobs = jobs.filter(function (j) { return j.provenance && j.provenance.submitter === f.owner; });
      if (f.q) {
        const q = f.q.toLowerCase();
        jobs = jobs.filter(function (j) { return j.name.toLowerCase().indexOf(q) >= 0; });
      }
      const body = document.getElementById("jobs-body");
      body.replaceChildren.apply(body, jobs.map(row));
      const more = result.headers.get("X-Continue") ? " (newest 500 shown)" : "";
      status.dataset.updated = String(Date.now());
      status.textContent = jobs.length + " jobs" + more;
    } catch (error) {
      if (error.status === 503) {
        // The master sheds list requests when busy (server/backpressure.py) and says when to come back: keep
        // the rows shown and ask again soon, instead of an error and an empty table until the next poll.
        next = Math.min(Math.max(Number(error.retryAfter || 0) * 1000, 200 + Math.random() * 300), POLL_MS);
        status.textContent = status.textContent.replace(/ \(master busy.*\)$/, "") + " (master busy, retrying)";
      } else {
        status.textContent = "could not list jobs: " + error.message;
      }
    } finally {
      busy = false;
      timer = setTimeout(refresh, next);
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    const form = document.getElementById("filters");
    form.addEventListener("submit", function (e) { e.preventDefault(); });
    form.addEventListener("input", function () {
      const f = filters();
      const params = new URLSearchParams();
      for (const key in f) if (f[key]) params.set(key, f[key]);
      const query = params.toString();
      history.replaceState(null, "", "/dashboard" + (query ? "?" + query : ""));
      refresh();
    });
    refresh();
  });
})();
