// kubetrain dashboard: what every page's script shares.  Text goes into the page with textContent only.
"use strict";
window.kt = (function () {
  const meta = document.querySelector('meta[name="kubetrain-csrf"]');
  const csrf = meta ? meta.content : "";

  // A call to the master's JSON API with the session cookie; changes carry the page's CSRF header.
  async function api(method, url, body) {
    const headers = {"Accept": "application/json"};
    if (method !== "GET" && method !== "HEAD") headers["X-Kubetrain-CSRF"] = csrf;
    const init = {method: method, headers: headers, credentials: "same-origin"};
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    if (response.status === 401) {
      window.location.assign("/dashboard/login?next=" + encodeURIComponent(window.location.pathname));
      throw new Error("not logged in");
    }
    let data = null;
    const type = response.headers.get("content-type") || "";
    if (type.indexOf("application/json") >= 0) data = await response.json();
    if (!response.ok) {
      const error = new Error((data && data.message) || ("HTTP " + response.status));
      error.status = response.status;
      error.retryAfter = response.headers.get("Retry-After");
      throw error;
    }
    return {data: data, headers: response.headers};
  }

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function age(epoch) {
    if (epoch === null || epoch === undefined) return "-";
    let s = Math.max(0, Date.now() / 1000 - epoch);
    const units = [["d", 86400], ["h", 3600], ["m", 60]];
    for (const [unit, size] of units) if (s >= size) return Math.floor(s / size) + unit;
    return Math.floor(s) + "s";
  }

  function when(epoch) {
    if (epoch === null || epoch === undefined) return "-";
    return new Date(epoch * 1000).toLocaleString();
  }

  function bytes(n) {
    if (n === null || n === undefined) return "";
    const units = ["", "Ki", "Mi", "Gi", "Ti"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i ? n.toFixed(1) : String(n)) + units[i];
  }

  const user = document.body.dataset.user || "";
  const admin = document.body.dataset.admin === "true";
  // Whether the caller may cancel or rerun a job of `owner`: the API decides anyway (core/identity.py).
  function mayManage(owner) { return admin || (owner !== null && owner !== undefined && owner === user); }

  document.addEventListener("DOMContentLoaded", function () {
    const logout = document.getElementById("logout");
    if (logout) logout.addEventListener("click", async function () {
      try { await api("POST", "/dashboard/logout"); } catch (e) { /* gone already */ }
      window.location.assign("/dashboard/login");
    });
  });

  return {api: api, el: el, age: age, when: when, bytes: bytes, mayManage: mayManage, user: user, admin: admin};
})();
