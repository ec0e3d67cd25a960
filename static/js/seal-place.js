// Seal console: choose where the seal goes. "Over a text" shows the anchor field; "where I drag it"
// fetches a preview of the chosen page and lets the officer drag the seal picture onto the
// organisation's name and the date (mouse, touch or arrow keys); the centre is sent as fractions
// of the page's width and height (fx, fy) from its top-left corner.
(function () {
  "use strict";
  function ready(fn) { if (document.readyState !== "loading") { fn(); } else { document.addEventListener("DOMContentLoaded", fn); } }
  ready(function () {
    var place = document.getElementById("place");
    var position = document.getElementById("position");
    if (!place || !position) { return; }
    var form = position.form;
    var anchorField = document.getElementById("anchor-field");
    var file = document.getElementById("file");
    var page = document.getElementById("page");
    var fx = document.getElementById("fx"), fy = document.getElementById("fy");
    var box = document.getElementById("place-page"), img = document.getElementById("place-img");
    var seal = document.getElementById("place-seal"), status = document.getElementById("place-status");
    var sealFraction = 0.2, loaded = false, busy = false;

    function show() {
      anchorField.hidden = position.value !== "anchor";
      place.hidden = position.value !== "point";
      if (position.value === "point") { load(); }
    }
    function put(x, y) {  // x, y: fractions of the page, the seal's centre
      x = Math.min(Math.max(x, 0), 1); y = Math.min(Math.max(y, 0), 1);
      fx.value = x.toFixed(4); fy.value = y.toFixed(4);
      var w = box.clientWidth;
      var size = sealFraction * w;
      seal.style.width = size + "px"; seal.style.height = size + "px";
      seal.style.left = (x * w - size / 2) + "px"; seal.style.top = (y * img.clientHeight - size / 2) + "px";
    }
    function load() {
      if (busy || !file.files || !file.files.length) { return; }
      busy = true; status.textContent = place.dataset.loading || "…";
      var data = new FormData();
      data.append("csrf_token", form.querySelector("[name=csrf_token]").value);
      data.append("file", file.files[0]);
      data.append("page", page && page.value ? page.value : "1");
      fetch(place.dataset.preview, { method: "POST", body: data, credentials: "same-origin" }).then(function (r) {
        if (!r.ok) { return r.json().then(function (j) { throw new Error(j.message || r.status); }); }
        var width = parseFloat(r.headers.get("X-Page-Width-Pt")), size = parseFloat(r.headers.get("X-Seal-Size-Pt"));
        if (width > 0 && size > 0) { sealFraction = size / width; }
        return r.blob();
      }).then(function (blob) {
        var reader = new FileReader();
        reader.onload = function () {
          img.onload = function () {
            loaded = true; status.textContent = "";
            put(fx.value ? parseFloat(fx.value) : 0.75, fy.value ? parseFloat(fy.value) : 0.85);
          };
          img.src = reader.result;
        };
        reader.readAsDataURL(blob);
      }).catch(function (e) { status.textContent = e.message; }).then(function () { busy = false; });
    }
    var dragging = false;
    function move(ev) {
      if (!dragging) { return; }
      var r = box.getBoundingClientRect();
      put((ev.clientX - r.left) / r.width, (ev.clientY - r.top) / r.height);
      ev.preventDefault();
    }
    seal.addEventListener("pointerdown", function (ev) { dragging = true; seal.setPointerCapture(ev.pointerId); ev.preventDefault(); });
    seal.addEventListener("pointermove", move);
    seal.addEventListener("pointerup", function () { dragging = false; });
    box.addEventListener("click", function (ev) {
      if (ev.target === img && loaded) { var r = box.getBoundingClientRect(); put((ev.clientX - r.left) / r.width, (ev.clientY - r.top) / r.height); }
    });
    seal.addEventListener("keydown", function (ev) {
      var step = ev.shiftKey ? 0.05 : 0.01, x = parseFloat(fx.value || "0.75"), y = parseFloat(fy.value || "0.85");
      var keys = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
      if (keys[ev.key]) { put(x + keys[ev.key][0], y + keys[ev.key][1]); ev.preventDefault(); }
    });
    window.addEventListener("resize", function () { if (loaded) { put(parseFloat(fx.value), parseFloat(fy.value)); } });
    position.addEventListener("change", show);
    file.addEventListener("change", function () { loaded = false; if (position.value === "point") { load(); } });
    if (page) { page.addEventListener("change", function () { loaded = false; if (position.value === "point") { load(); } }); }
    show();
  });
})();
