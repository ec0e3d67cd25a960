/* Scan-to-log-in on the desktop log-in page (idp/qrlogin_views.py).
   Asks for a one-time QR code, polls its state every ~1.5 s and, once the phone has
   confirmed, submits the hidden form that turns it into this browser's session.
   The page works without this script (password log-in); phones skip it. */
(function () {
  "use strict";

  var panel = document.getElementById("qr-login");
  if (!panel || !window.fetch) { return; }
  if (window.matchMedia && !window.matchMedia("(min-width: 640px)").matches) { return; }

  var box = panel.querySelector(".qr-box");
  var img = panel.querySelector(".qr-image");
  var refresh = panel.querySelector(".qr-refresh");
  var form = panel.querySelector("form.qr-complete");
  var messages = panel.querySelectorAll(".qr-msg");
  var OPEN = { waiting: true, scanned: true };
  var timer = null;
  var statusUrl = null;
  var interval = 1500;
  var failures = 0;

  function show(state) {
    box.setAttribute("data-state", state);
    for (var i = 0; i < messages.length; i++) {
      messages[i].hidden = messages[i].getAttribute("data-for") !== state;
    }
    refresh.hidden = OPEN[state] || state === "confirmed" || state === "loading";
  }

  function stop() {
    if (timer) { clearTimeout(timer); timer = null; }
  }

  function poll() {
    stop();
    timer = setTimeout(function () {
      fetch(statusUrl, { credentials: "same-origin", cache: "no-store", headers: { "Accept": "application/json" } })
        .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
        .then(function (data) {
          failures = 0;
          show(data.state);
          if (data.state === "confirmed") {
            form.submit();
          } else if (OPEN[data.state]) {
            poll();
          }
        })
        .catch(function () {
          failures += 1;
          if (failures < 5) { poll(); } else { show("error"); }
        });
    }, interval);
  }

  function start() {
    stop();
    show("loading");
    fetch(panel.getAttribute("data-start"), {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": panel.getAttribute("data-csrf"), "Accept": "application/json" }
    })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
      .then(function (data) {
        statusUrl = data.status_url;
        interval = data.interval_ms || interval;
        img.src = data.image;
        img.hidden = false;
        failures = 0;
        show(data.state);
        poll();
      })
      .catch(function () { show("error"); });
  }

  refresh.addEventListener("click", start);
  panel.hidden = false;
  start();
})();
