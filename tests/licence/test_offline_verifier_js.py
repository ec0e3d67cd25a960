"""The browser's offline verifier (static/js/licence-verifier.js) run under Node: bounded parsing.

A code or status list is attacker input: lengths beyond the data, deep nesting, too many items,
decompression bombs and trailing bytes are refused without allocating what they claim.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import zlib
from pathlib import Path

import base45
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "static" / "js" / "licence-verifier.js"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")

HARNESS = r"""
const O = require(process.argv[1]);
const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const hex = (h) => Uint8Array.from(Buffer.from(h, "hex"));
const show = (v) => v instanceof Map ? Object.fromEntries([...v].map(([k, x]) => [String(k), show(x)]))
  : v instanceof Uint8Array ? "bytes:" + v.length : Array.isArray(v) ? v.map(show) : v;
(async () => {
  const out = {};
  for (const [name, c] of Object.entries(input)) {
    try {
      if (c.kind === "code") {
        const cose = await O.decodeCode(c.text);
        out[name] = { ok: show(O.cbor(cose.payload)) };
      } else if (c.kind === "cbor") {
        out[name] = { ok: show(O.cbor(hex(c.hex))) };
      } else if (c.kind === "status") {
        const list = await O.statusList(c.claims, c.now);
        out[name] = { ok: c.idx.map((i) => O.statusAt(list, i, c.at || c.now)) };
      }
    } catch (e) {
      out[name] = { error: e.message };
    }
  }
  process.stdout.write(JSON.stringify(out));
})();
"""


def _run(cases: dict) -> dict:
    r = subprocess.run([NODE, "-e", HARNESS, str(SCRIPT)], input=json.dumps(cases), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _code(cbor_bytes: bytes) -> str:
    return base45.b45encode(zlib.compress(cbor_bytes, 9)).decode()


def test_codes_are_parsed_within_bounds(issue):
    from licence import offline

    lic = issue()
    raw = offline.make_token(lic)[len(offline.PREFIX):]
    cose = zlib.decompress(base45.b45decode(raw))
    cases = {
        "good": {"kind": "code", "text": raw},
        "trailing": {"kind": "code", "text": _code(cose + b"\x00")},
        "bomb": {"kind": "code", "text": _code(b"\x00" * 2_000_000)},
        "not_base45": {"kind": "code", "text": ":::"},
        "too_long": {"kind": "code", "text": "A" * 6000},
        "deep": {"kind": "cbor", "hex": ("81" * 100) + "00"},
        "huge_bytes": {"kind": "cbor", "hex": "5b" + "ff" * 8},
        "huge_array": {"kind": "cbor", "hex": "9a" + "ff" * 4},
        "many_items": {"kind": "cbor", "hex": "9903e8" + "00" * 1000},
        "indefinite": {"kind": "cbor", "hex": "9f00ff"},
        "duplicate_key": {"kind": "cbor", "hex": "a201010102"},
        "truncated_text": {"kind": "cbor", "hex": "6568656c"},
        "bad_utf8": {"kind": "cbor", "hex": "62c328"},
        "cbor_trailing": {"kind": "cbor", "hex": "0000"},
        "fine": {"kind": "cbor", "hex": "a201616102820203"},
    }
    # the server's own status list, as the page fetches it
    jwt = offline.status_list_jwt()
    claims = json.loads(base64.urlsafe_b64decode(jwt.split(".")[1] + "=="))
    cases["server_list"] = {"kind": "status", "claims": claims, "now": int(time.time() * 1000),
                            "idx": [lic.status_idx]}
    out = _run(cases)
    assert out["good"]["ok"]["-260"]["id"] == lic.identifier
    assert out["good"]["ok"]["65535"]["status_list"]["uri"] == claims["sub"]  # the list the code names
    assert out["server_list"] == {"ok": [0]}
    assert out["fine"] == {"ok": {"1": "a", "2": [2, 3]}}
    assert out["bomb"] == {"error": "too_large"}
    for name in ("not_base45", "too_long"):
        assert out[name] == {"error": "bad_base45"}, name
    for name in ("trailing", "deep", "huge_bytes", "huge_array", "many_items", "indefinite", "duplicate_key",
                 "truncated_text", "bad_utf8", "cbor_trailing"):
        assert out[name] == {"error": "bad_code"}, name


def _lst(data: bytes) -> str:
    return base64.urlsafe_b64encode(zlib.compress(data, 9)).rstrip(b"=").decode()


def test_status_list_expiry_and_limits():
    now = int(time.time())
    ms = now * 1000
    claims = {"sub": "u", "iat": now, "exp": now + 600, "ttl": 300,
              "status_list": {"bits": 2, "lst": _lst(bytes([0b10010000]))}}
    out = _run({
        "fresh": {"kind": "status", "claims": claims, "now": ms, "idx": [0, 1, 2, 3, 4, -1, 1.5]},
        "used_after_exp": {"kind": "status", "claims": claims, "now": ms, "at": ms + 601_000, "idx": [0]},
        "expired": {"kind": "status", "claims": {**claims, "exp": now - 1}, "now": ms, "idx": [0]},
        "no_exp": {"kind": "status", "claims": {k: v for k, v in claims.items() if k != "exp"}, "now": ms,
                   "idx": [0]},
        "bad_bits": {"kind": "status", "claims": {**claims, "status_list": {"bits": 3, "lst": "AA"}}, "now": ms,
                     "idx": [0]},
        "bomb": {"kind": "status", "claims": {**claims, "status_list": {"bits": 2, "lst": _lst(b"\0" * 20_000_000)}},
                 "now": ms, "idx": [0]},
    })
    assert out["fresh"] == {"ok": [0, 0, 1, 2, -1, -1, -1]}
    assert out["used_after_exp"] == {"ok": [-1]}
    assert out["expired"] == {"error": "status_expired"} and out["no_exp"] == {"error": "status_expired"}
    assert out["bad_bits"] == {"error": "status_bad"} and out["bomb"] == {"error": "too_large"}
