/* The wallet's offline licence code (licence/views.py wallet_licence, wallet_code).
   The code is short-lived (TONGBAN_WALLET_CODE_SECONDS); this script shows how long it has
   left and fetches a fresh one before it expires. Times are counted from the server's clock
   (data-now, "now" in each answer), so a phone whose clock is wrong still renews on time.
   Without this script the page still shows a code, valid until the time printed under it. */
(function () {
  "use strict";

  var box = document.getElementById("wallet-code");
  if (!box || !window.fetch) { return; }
  var img = document.getElementById("wallet-code-qr");
  var line = document.getElementById("wallet-code-countdown");
  var token = document.getElementById("wallet-code-token");
  var RENEW_BEFORE = 30;  // seconds before expiry
  var RETRY = 10;  // seconds between tries after a failure
  var expires = parseInt(box.getAttribute("data-expires"), 10);
  // server time = local time + skew
  var skew = parseInt(box.getAttribute("data-now"), 10) - Date.now() / 1000;
  var nextTry = 0;
  var busy = false;
  var failed = false;
  var stopped = false;

  function serverNow() { return Date.now() / 1000 + skew; }

  function say(text, state) {
    line.textContent = text;
    box.setAttribute("data-state", state);
  }

  function clock(left) {
    var m = Math.floor(left / 60);
    var s = Math.floor(left % 60);
    return m + ":" + (s < 10 ? "0" : "") + s;
  }

  function renew() {
    busy = true;
    fetch(box.getAttribute("data-url"), {
      credentials: "same-origin", cache: "no-store", headers: { "Accept": "application/json" }
    }).then(function (r) {
      if (r.status === 409) { return { invalid: true }; }
      if (!r.ok) { throw new Error(String(r.status)); }
      return r.json();
    }).then(function (data) {
      busy = false;
      if (data.invalid) {
        stopped = true;
        img.hidden = true;
        if (token) { token.textContent = ""; }
        say(box.getAttribute("data-invalid"), "invalid");
        return;
      }
      failed = false;
      skew = data.now - Date.now() / 1000;
      expires = data.expires_at;
      img.src = data.qr;
      if (token) { token.textContent = data.token; }
      box.setAttribute("data-renewed", String((parseInt(box.getAttribute("data-renewed") || "0", 10)) + 1));
      tick();
    }).catch(function () {
      busy = false;
      failed = true;
      nextTry = serverNow() + RETRY;
      tick();
    });
  }

  function tick() {
    if (stopped) { return; }
    var left = expires - serverNow();
    if (left <= 0) {
      img.classList.add("qr-expired");
      say(box.getAttribute("data-expired"), "expired");
    } else if (!busy) {
      img.classList.remove("qr-expired");
      var text = box.getAttribute("data-countdown").replace("{t}", clock(left));
      if (failed) { say(box.getAttribute("data-failed") + " " + text, "retrying"); } else { say(text, "counting"); }
    }
    if (!busy && left <= RENEW_BEFORE && serverNow() >= nextTry) {
      say(box.getAttribute("data-renewing"), "renewing");
      renew();
    }
  }

  tick();
  setInterval(tick, 1000);
})();
