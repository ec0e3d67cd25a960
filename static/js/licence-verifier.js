/* Offline verifier for Tongban e-licence codes (TBL1:...): Base45 -> zlib -> COSE_Sign1 (ES256) ->
   CBOR claims; the signature is checked with the published keys, the status with the signed status
   list (IETF Token Status List, 2 bits per licence). Everything runs in this browser. */
/* The decoding core, pure and bounded: a code or status list is attacker-supplied input, so every
   length is checked against what is left, items, nesting and decompressed size are capped, and
   trailing bytes are refused. Exposed to Node (tests) through module.exports. */
var TongbanOffline = (function () {
  "use strict";
  var B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";
  var LIMITS = { code: 4400, token: 4096, statusList: 8 * 1024 * 1024, items: 512, depth: 8 };
  var T = function (key) { return key; };
  function setMessages(fn) { T = fn; }
  function b45decode(s) {
    if (s.length > LIMITS.code || s.length % 3 === 1) throw new Error(T("bad_base45"));
    var out = [];
    for (var i = 0; i < s.length; i += 3) {
      var chunk = s.substr(i, 3), n = 0;
      for (var j = chunk.length - 1; j >= 0; j--) {
        var v = B45.indexOf(chunk[j]);
        if (v < 0) throw new Error(T("bad_base45"));
        n = n * 45 + v;
      }
      if (n > (chunk.length === 3 ? 65535 : 255)) throw new Error(T("bad_base45"));  // RFC 9285
      if (chunk.length === 3) { out.push(n >> 8, n & 255); } else { out.push(n); }
    }
    return new Uint8Array(out);
  }
  function b64url(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    return Uint8Array.from(atob(s), function (c) { return c.charCodeAt(0); });
  }
  // zlib inflate that stops as soon as the output would exceed ``cap`` bytes (no decompression bomb)
  async function inflate(bytes, cap) {
    var reader = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate")).getReader();
    var chunks = [], total = 0;
    for (;;) {
      var r = await reader.read();
      if (r.done) break;
      total += r.value.length;
      if (total > cap) { await reader.cancel(); throw new Error(T("too_large")); }
      chunks.push(r.value);
    }
    var out = new Uint8Array(total), o = 0;
    chunks.forEach(function (c) { out.set(c, o); o += c.length; });
    return out;
  }
  // a CBOR subset (RFC 8949): definite lengths, ints, byte/text strings, arrays, maps, tags, simple values
  function cbor(bytes) {
    var pos = 0, count = 0, view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    function bad() { throw new Error(T("bad_code")); }
    function need(k) { if (k < 0 || pos + k > bytes.length) bad(); }
    function len(info) {
      if (info < 24) return info;
      if (info === 24) { need(1); return bytes[pos++]; }
      if (info === 25) { need(2); var a = view.getUint16(pos); pos += 2; return a; }
      if (info === 26) { need(4); var b = view.getUint32(pos); pos += 4; return b; }
      if (info === 27) {
        need(8);
        var hi = view.getUint32(pos), lo = view.getUint32(pos + 4);
        pos += 8;
        if (hi > 0x1fffff) bad();  // beyond 2^53: no such length or integer in our codes
        return hi * 4294967296 + lo;
      }
      bad();  // indefinite lengths and reserved values are refused
    }
    function item(depth) {
      if (depth > LIMITS.depth || ++count > LIMITS.items) bad();
      need(1);
      var first = bytes[pos++], major = first >> 5, info = first & 31, n, i, out;
      if (major === 7) {
        if (info === 20) return false; if (info === 21) return true; if (info === 22 || info === 23) return null;
        if (info === 27) { need(8); var f = view.getFloat64(pos); pos += 8; return f; }
        bad();
      }
      n = len(info);
      switch (major) {
        case 0: return n;
        case 1: return -1 - n;
        case 2: need(n); out = bytes.slice(pos, pos + n); pos += n; return out;
        case 3:
          need(n);
          try { out = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(pos, pos + n)); } catch (e) { bad(); }
          pos += n;
          return out;
        case 4:
          if (n > bytes.length - pos) bad();  // every item takes at least one byte
          out = []; for (i = 0; i < n; i++) out.push(item(depth + 1)); return out;
        case 5:
          if (2 * n > bytes.length - pos) bad();
          out = new Map();
          for (i = 0; i < n; i++) {
            var k = item(depth + 1);
            if ((typeof k !== "number" && typeof k !== "string") || out.has(k)) bad();
            out.set(k, item(depth + 1));
          }
          return out;
        case 6: return { tag: n, value: item(depth + 1) };
      }
      bad();
    }
    var value = item(0);
    if (pos !== bytes.length) bad();  // trailing data
    return value;
  }
  // the status list JWT's claims, checked: type, structure, expiry (exp), and the list decompressed (capped)
  async function statusList(claims, now) {
    var sl = claims && claims.status_list;
    if (!sl || [1, 2, 4, 8].indexOf(sl.bits) < 0 || typeof sl.lst !== "string") throw new Error(T("status_bad"));
    if (typeof claims.exp !== "number" || claims.exp * 1000 <= now) throw new Error(T("status_expired"));
    return { bits: sl.bits, lst: await inflate(b64url(sl.lst), LIMITS.statusList), exp: claims.exp * 1000,
             sub: claims.sub, iat: claims.iat, ttl: Math.min(Number(claims.ttl) || 300, 86400) * 1000 };
  }
  function statusAt(list, idx, now) {
    if (!list || list.exp <= now || !Number.isInteger(idx) || idx < 0) return -1;
    var bits = list.bits, per = 8 / bits, byte = Math.floor(idx / per);
    if (byte >= list.lst.length) return -1;
    return (list.lst[byte] >> ((idx % per) * bits)) & ((1 << bits) - 1);
  }
  // Base45 -> bounded inflate -> COSE_Sign1 [protected, unprotected, payload, signature]
  async function decodeCode(text) {
    var obj = cbor(await inflate(b45decode(text), LIMITS.token));
    if (obj && obj.tag === 18) obj = obj.value;
    if (!Array.isArray(obj) || obj.length !== 4 || !(obj[0] instanceof Uint8Array) || !(obj[2] instanceof Uint8Array)
        || !(obj[3] instanceof Uint8Array) || obj[3].length !== 64) throw new Error(T("bad_code"));
    var header = cbor(obj[0]);
    if (!(header instanceof Map)) throw new Error(T("bad_code"));
    return { protected: obj[0], header: header, payload: obj[2], signature: obj[3] };
  }
  return { LIMITS: LIMITS, setMessages: setMessages, b45decode: b45decode, b64url: b64url, inflate: inflate,
           cbor: cbor, statusList: statusList, statusAt: statusAt, decodeCode: decodeCode };
})();
if (typeof module !== "undefined" && module.exports) module.exports = TongbanOffline;

(typeof document === "undefined") || (function () {
  "use strict";
  var O = TongbanOffline;
  var script = document.currentScript;
  var KEYS_URL = script.dataset.keys, STATUS_URL = script.dataset.status, PREFIX = "TBL1:";
  var $ = function (id) { return document.getElementById(id); };
  // the page's messages, translated by the server (JSON in a data attribute: no inline script)
  var holder = $("verifier-messages");
  var MESSAGES = holder ? JSON.parse(holder.dataset.json || "{}") : {};
  var T = function (key) { return MESSAGES[key] || key; };
  O.setMessages(T);
  var keys = {}, statusList = null;
  var b64url = O.b64url, cbor = O.cbor;

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
    var parts = jwt.split(".");
    if (parts.length !== 3 || jwt.length > 16 * 1024 * 1024) throw new Error(T("status_bad"));
    var header = JSON.parse(new TextDecoder().decode(b64url(parts[0])));
    var key = Object.prototype.hasOwnProperty.call(keys, header.kid) ? keys[header.kid] : null;
    if (!key) throw new Error(T("status_key_unknown"));
    var ok = await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, key, b64url(parts[2]),
      new TextEncoder().encode(parts[0] + "." + parts[1]));
    if (!ok || header.typ !== "statuslist+jwt") throw new Error(T("status_sig_bad"));
    var claims = JSON.parse(new TextDecoder().decode(b64url(parts[1])));
    var fresh = await O.statusList(claims, Date.now());
    fresh.fetched = Date.now();
    statusList = fresh;
    $("keys-state").textContent = T("keys_loaded").replace("{n}", Object.keys(keys).length).replace("{t}",
      beijing(claims.iat));
  }
  // times in Beijing time, whatever the checking phone's own time zone
  function beijing(seconds) {
    return new Date(seconds * 1000).toLocaleString(document.documentElement.lang || "zh-CN",
      { timeZone: "Asia/Shanghai", hour12: false }) + " (UTC+8)";
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
      var now = Date.now();
      // refresh the list when it is older than its ttl; offline, the cached one serves until its exp
      if (!statusList || now > statusList.fetched + statusList.ttl) {
        try { await loadStatus(); } catch (e) { /* offline: use the last list while it has not expired */ }
      }
      var cose = await O.decodeCode(raw.slice(PREFIX.length)), header = cose.header;
      if (header.get(1) !== -7) throw new Error(T("bad_alg"));
      if (!(header.get(4) instanceof Uint8Array)) throw new Error(T("bad_code"));
      var kid = new TextDecoder().decode(header.get(4));
      if (!Object.prototype.hasOwnProperty.call(keys, kid)) { await loadKeys(); }
      if (!Object.prototype.hasOwnProperty.call(keys, kid)) throw new Error(T("key_unknown"));
      var ok = await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, keys[kid], cose.signature,
        sigStructure(cose.protected, cose.payload));
      if (!ok) throw new Error(T("sig_bad"));
      var claims = cbor(cose.payload);
      if (!(claims instanceof Map) || !(claims.get(-260) instanceof Map) || typeof claims.get(4) !== "number")
        throw new Error(T("bad_code"));
      var lic = claims.get(-260), ref = claims.get(65535), list = ref instanceof Map ? ref.get("status_list") : null;
      var expired = claims.get(4) * 1000 < now;
      var status = T("no_status");
      var st = -1;
      if (statusList && statusList.exp <= now) {
        status = T("status_expired");
      } else if (statusList && list instanceof Map && list.get("uri") === statusList.sub) {
        st = O.statusAt(statusList, list.get("idx"), now);
        status = { 0: T("st_valid"), 1: T("st_invalid"), 2: T("st_suspended") }[st] || T("st_unknown");
      }
      var good = !expired && st === 0;
      show(good, good ? T("ok") : (expired ? T("expired") : T("sig_ok_status") + status), [
        [T("f_type"), lic.get("tn")], [T("f_holder"), lic.get("h") + "（" + lic.get("hid") + "）"], [T("f_issuer"), lic.get("i")],
        [T("f_issued"), lic.get("ia")], [T("f_until"), lic.get("vu")], [T("f_id"), lic.get("id")], [T("f_status"), status],
        [T("f_token_time"), beijing(claims.get(6))]]);
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
