// The login form: the token goes as JSON (the master refuses form posts, which any site may send).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  const form = document.getElementById("login-form");
  const message = document.getElementById("login-message");
  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    message.hidden = true;
    try {
      const response = await fetch("/dashboard/login", {
        method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "Accept": "application/json"},
        body: JSON.stringify({token: document.getElementById("token").value, next: form.dataset.next}),
      });
      const data = await response.json();
      if (!response.ok) throw new Error(data.message || ("HTTP " + response.status));
      window.location.assign(data.next || "/dashboard");
    } catch (error) {
      message.textContent = error.message;
      message.hidden = false;
    }
  });
});
