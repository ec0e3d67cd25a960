// Passkeys (WebAuthn): buttons with data-passkey="register" or "authenticate".
// The server sends the options (PublicKeyCredential*Options as JSON, binary fields in
// base64url) and checks the result; this file only converts and calls the browser.
(function () {
  "use strict";

  function toBytes(b64url) {
    var s = b64url.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) { s += "="; }
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
    return out.buffer;
  }

  function toB64url(buf) {
    var bytes = new Uint8Array(buf), s = "";
    for (var i = 0; i < bytes.length; i++) { s += String.fromCharCode(bytes[i]); }
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function post(url, csrf, body) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRFToken": csrf},
      body: JSON.stringify(body || {})
    }).then(function (r) {
      return r.json().then(function (data) {
        if (!r.ok) { throw new Error(data.message || r.statusText); }
        return data;
      });
    });
  }

  function register(btn) {
    var csrf = btn.dataset.csrf;
    return post(btn.dataset.optionsUrl, csrf).then(function (o) {
      o.challenge = toBytes(o.challenge);
      o.user.id = toBytes(o.user.id);
      (o.excludeCredentials || []).forEach(function (c) { c.id = toBytes(c.id); });
      return navigator.credentials.create({publicKey: o});
    }).then(function (cred) {
      var resp = cred.response;
      return post(btn.dataset.verifyUrl, csrf, {
        name: navigator.platform || "",
        credential: {
          id: cred.id, rawId: toB64url(cred.rawId), type: cred.type,
          response: {
            clientDataJSON: toB64url(resp.clientDataJSON),
            attestationObject: toB64url(resp.attestationObject),
            transports: resp.getTransports ? resp.getTransports() : []
          },
          clientExtensionResults: cred.getClientExtensionResults()
        }
      });
    });
  }

  function authenticate(btn) {
    var csrf = btn.dataset.csrf;
    return post(btn.dataset.optionsUrl, csrf).then(function (o) {
      o.challenge = toBytes(o.challenge);
      (o.allowCredentials || []).forEach(function (c) { c.id = toBytes(c.id); });
      return navigator.credentials.get({publicKey: o});
    }).then(function (cred) {
      var resp = cred.response;
      return post(btn.dataset.verifyUrl, csrf, {
        id: cred.id, rawId: toB64url(cred.rawId), type: cred.type,
        response: {
          clientDataJSON: toB64url(resp.clientDataJSON),
          authenticatorData: toB64url(resp.authenticatorData),
          signature: toB64url(resp.signature),
          userHandle: resp.userHandle ? toB64url(resp.userHandle) : null
        },
        clientExtensionResults: cred.getClientExtensionResults()
      });
    });
  }

  document.querySelectorAll("[data-passkey]").forEach(function (btn) {
    if (btn.dataset.passkeyBound) { return; }
    btn.dataset.passkeyBound = "1";
    if (!window.PublicKeyCredential) { btn.hidden = true; return; }
    btn.addEventListener("click", function () {
      btn.disabled = true;
      var run = btn.dataset.passkey === "register" ? register : authenticate;
      run(btn).then(function (data) {
        window.location.assign(data.next);
      }).catch(function () {
        btn.disabled = false;
        window.alert(btn.dataset.error);
      });
    });
  });
})();
