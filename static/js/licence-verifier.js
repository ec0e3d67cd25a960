/* Offline verifier for Tongban e-licence codes (TBL1:...): Base45 -> zlib -> COSE_Sign1 (ES256) ->
   CBOR claims; the signature is checked with the published keys, the status with the signed status
   list (IETF Token Status List, 2 bits per licence). Everything runs in this browser. */
(function () {
  "use strict";
  var script = document.currentScript;
  var KEYS_URL = script.dataset.keys, STATUS_URL = script.dataset.status, PREFIX = "TBL1:";
  var B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";
  var $ = function (id) { return document.getElementById(id); };
  // the page's messages, translated by the server (JSON in a data attribute: no inline script)
  var holder = $("verifier-messages");
  var MESSAGES = holder ? JSON.parse(holder.dataset.json || "{}") : {};
  var T = function (key) { return MESSAGES[key] || key; };
  var keys = {}, statusBytes = null, statusTTL = 0;

  function b45decode(s) {
    var out = [];
    for (var i = 0; i < s.length; i += 3) {
      var chunk = s.substr(i, 3), n = 0;
      for (var j = chunk.length - 1; j >= 0; j--) {
        var v = B45.indexOf(chunk[j]);
        if (v < 0) throw new Error(T("bad_base45"));
        n = n * 45 + v;
      }
      if (chunk.length === 3) { out.push(n >> 8, n & 255); } else { out.push(n); }
    }
    return new Uint8Array(out);
  }
  function b64url(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    return Uint8Array.from(atob(s), function (c) { return c.charCodeAt(0); });
  }
  async function inflate(bytes) {
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }
  function cbor(bytes) {
    var pos = 0, view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    function len(info) {
      if (info < 24) return info;
      if (info === 24) return bytes[pos++];
      if (info === 25) { var a = view.getUint16(pos); pos += 2; return a; }
      if (info === 26) { var b = view.getUint32(pos); pos += 4; return b; }
      if (info === 27) { var c = view.getUint32(pos) * 4294967296 + view.getUint32(pos + 4); pos += 8; return c; }
      throw new Error("CBOR: unsupported length");
    }
    function item() {
      var first = bytes[pos++], major = first >> 5, info = first & 31, n, i, out;
      if (major === 7) {
        if (info === 20) return false; if (info === 21) return true; if (info === 22 || info === 23) return null;
        if (info === 27) { var f = view.getFloat64(pos); pos += 8; return f; }
        throw new Error("CBOR: unsupported simple value");
      }
      n = len(info);
      switch (major) {
        case 0: return n;
        case 1: return -1 - n;
        case 2: out = bytes.slice(pos, pos + n); pos += n; return out;
        case 3: out = new TextDecoder().decode(bytes.slice(pos, pos + n)); pos += n; return out;
        case 4: out = []; for (i = 0; i < n; i++) out.push(item()); return out;
        case 5: out = new Map(); for (i = 0; i < n; i++) { var k = item(); out.set(k, item()); } return out;
        case 6: return { tag: n, value: item() };
      }
      throw new Error("CBOR: bad item");
    }
    return item();
  }
  function cborHead(major, n) {
    if (n < 24) return [(major << 5) | n];
    if (n < 256) return [(major << 5) | 24, n];
    if (n < 65536) return [(major << 5) | 25, n >> 8, n & 255];
    return [(major << 5) | 26, (n >>> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255];
  }
  function sigStructure(protectedBytes, payload) {
    var ctx = new TextEncoder().encode("Signature1"), parts = [[0x84], cborHead(3, ctx.length), ctx,
      cborHead(2, protectedBytes.length), protectedBytes, [0x40], cborHead(2, payload.length), payload];
    var total = parts.reduce(function (s, p) { return s + p.length; }, 0), out = new Uint8Array(total), o = 0;
    parts.forEach(function (p) { out.set(p, o); o += p.length; });
    return out;
  }
  async function importKey(jwk) {
    return crypto.subtle.importKey("jwk", { kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y }, { name: "ECDSA", namedCurve: "P-256" },
      false, ["verify"]);
  }
  async function loadKeys() {
    var resp = await fetch(KEYS_URL, { cache: "no-cache" });
    var set = await resp.json();
    keys = {};
    for (var k of set.keys) { if (k.kty === "EC") keys[k.kid] = await importKey(k); }
  }
  async function loadStatus() {
    var jwt = (await (await fetch(STATUS_URL, { cache: "no-cache" })).text()).trim();
    var parts = jwt.split("."), header = JSON.parse(new TextDecoder().decode(b64url(parts[0])));
    var key = keys[header.kid];
    if (!key) throw new Error(T("status_key_unknown"));
    var ok = await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, key, b64url(parts[2]),
      new TextEncoder().encode(parts[0] + "." + parts[1]));
    if (!ok || header.typ !== "statuslist+jwt") throw new Error(T("status_sig_bad"));
    var claims = JSON.parse(new TextDecoder().decode(b64url(parts[1])));
    statusBytes = { bits: claims.status_list.bits, lst: await inflate(b64url(claims.status_list.lst)) };
    statusTTL = Date.now() + (claims.ttl || 300) * 1000;
    $("keys-state").textContent = T("keys_loaded").replace("{n}", Object.keys(keys).length).replace("{t}",
      new Date(claims.iat * 1000).toLocaleString());
  }
  function statusAt(idx) {
    var bits = statusBytes.bits, per = 8 / bits, b = statusBytes.lst[Math.floor(idx / per)] || 0;
    return (b >> ((idx % per) * bits)) & ((1 << bits) - 1);
  }
  function show(ok, title, rows) {
    var box = $("result");
    box.textContent = "";
    box.className = "card " + (ok ? "verdict-ok" : "verdict-bad");
    var h = document.createElement("h2");
    h.textContent = title;
    box.appendChild(h);
    var dl = document.createElement("dl");
    dl.className = "facts";
    rows.forEach(function (r) {
      var dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = r[0]; dd.textContent = r[1] == null ? T("no_end") : r[1];
      dl.appendChild(dt); dl.appendChild(dd);
    });
    box.appendChild(dl);
  }
  async function check() {
    var raw = $("code").value.trim();
    try {
      if (raw.indexOf(PREFIX) !== 0) throw new Error(T("not_ours").replace("{prefix}", PREFIX));
      if (!Object.keys(keys).length) await loadKeys();
      if (!statusBytes || Date.now() > statusTTL) { try { await loadStatus(); } catch (e) { /* offline: use the last list */ } }
      var obj = cbor(await inflate(b45decode(raw.slice(PREFIX.length))));
      if (obj && obj.tag === 18) obj = obj.value;
      var prot = obj[0], payload = obj[2], sig = obj[3], header = cbor(prot);
      if (header.get(1) !== -7) throw new Error(T("bad_alg"));
      var kid = new TextDecoder().decode(header.get(4));
      if (!keys[kid]) { await loadKeys(); }
      if (!keys[kid]) throw new Error(T("key_unknown"));
      var ok = await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, keys[kid], sig, sigStructure(prot, payload));
      if (!ok) throw new Error(T("sig_bad"));
      var claims = cbor(payload), lic = claims.get(-260), ref = claims.get(65535);
      var expired = claims.get(4) * 1000 < Date.now();
      var status = T("no_status");
      var st = -1;
      if (statusBytes && ref) {
        st = statusAt(ref.get("status_list").get("idx"));
        status = { 0: T("st_valid"), 1: T("st_invalid"), 2: T("st_suspended") }[st] || T("st_unknown");
      }
      var good = !expired && st === 0;
      show(good, good ? T("ok") : (expired ? T("expired") : T("sig_ok_status") + status), [
        [T("f_type"), lic.get("tn")], [T("f_holder"), lic.get("h") + "（" + lic.get("hid") + "）"], [T("f_issuer"), lic.get("i")],
        [T("f_issued"), lic.get("ia")], [T("f_until"), lic.get("vu")], [T("f_id"), lic.get("id")], [T("f_status"), status],
        [T("f_token_time"), new Date(claims.get(6) * 1000).toLocaleString()]]);
    } catch (e) {
      show(false, T("failed"), [[T("reason"), e.message]]);
    }
  }
  async function scan() {
    var video = $("camera"), detector = new window.BarcodeDetector({ formats: ["qr_code"] });
    var stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
    video.srcObject = stream; video.hidden = false; await video.play();
    var timer = setInterval(async function () {
      var codes = await detector.detect(video).catch(function () { return []; });
      if (codes.length) {
        clearInterval(timer); stream.getTracks().forEach(function (t) { t.stop(); }); video.hidden = true;
        $("code").value = codes[0].rawValue; check();
      }
    }, 300);
  }
  $("check").addEventListener("click", check);
  if ("BarcodeDetector" in window && navigator.mediaDevices) {
    $("scan").hidden = false;
    $("scan").addEventListener("click", function () { scan().catch(function (e) { show(false, T("no_camera"), [[T("reason"), e.message]]); }); });
  }
  loadKeys().then(loadStatus).catch(function () { $("keys-state").textContent = T("offline"); });
})();
