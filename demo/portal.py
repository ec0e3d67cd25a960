"""A demo department portal: a relying party of Tongban built with Authlib's Flask client.

Its sessions are kept server-side, keyed by a random id in its own cookie and indexed by
Tongban's ``sid``, so that a back-channel logout token really logs the browser out.
"""

from __future__ import annotations

import secrets
import threading
import time
from urllib.parse import urlencode

from authlib.integrations.flask_client import OAuth
from flask import Flask, abort, redirect, render_template, request, session
from flask_babel import Babel
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

from tongban.config import PROJECT_ROOT

from . import PORTALS, PortalSpec

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
CLOCK_SKEW = 60


class SessionStore:
    """Server-side sessions: local id -> user; Tongban sid -> local ids."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_id: dict[str, dict] = {}
        self.seen_jti: dict[str, float] = {}

    def create(self, data: dict) -> str:
        lid = secrets.token_urlsafe(24)
        with self.lock:
            self.by_id[lid] = data
        return lid

    def get(self, lid: str | None) -> dict | None:
        with self.lock:
            return self.by_id.get(lid) if lid else None

    def drop(self, lid: str | None) -> None:
        with self.lock:
            self.by_id.pop(lid or "", None)

    def drop_where(self, sid: str | None, sub: str | None) -> int:
        """Back-channel logout: every local session of that Tongban session (or of that user)."""
        with self.lock:
            gone = [lid for lid, d in self.by_id.items()
                    if (sid and d.get("sid") == sid) or (not sid and sub and d.get("sub") == sub)]
            for lid in gone:
                del self.by_id[lid]
            return len(gone)

    def replayed(self, jti: str, exp: float) -> bool:
        now = time.time()
        with self.lock:
            for k in [k for k, e in self.seen_jti.items() if e < now]:
                del self.seen_jti[k]
            if jti in self.seen_jti:
                return True
            self.seen_jti[jti] = exp
            return False


class LogoutTokenError(Exception):
    pass


def validate_logout_token(raw: str, *, issuer: str, client_id: str, keys: KeySet,
                          algorithms=("RS256", "ES256")) -> dict:
    """Back-Channel Logout 1.0 §2.6, strictly."""
    try:
        header = extract_compact(raw.encode()).headers()
    except (JoseError, ValueError) as e:
        raise LogoutTokenError("not a JWS") from e
    if header.get("typ") != "logout+jwt":
        raise LogoutTokenError("typ is not logout+jwt")
    if header.get("alg") not in algorithms:
        raise LogoutTokenError("unexpected alg")
    try:
        claims = jwt.decode(raw, keys, algorithms=list(algorithms)).claims
    except (JoseError, ValueError) as e:
        raise LogoutTokenError(f"bad signature: {e}") from e
    now = time.time()
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    problems = [
        claims.get("iss") != issuer and "iss",
        client_id not in audiences and "aud",
        not isinstance(claims.get("iat"), int) and "iat",
        isinstance(claims.get("iat"), int) and claims["iat"] > now + CLOCK_SKEW and "iat in the future",
        isinstance(claims.get("exp"), int) and claims["exp"] < now - CLOCK_SKEW and "expired",
        not claims.get("jti") and "jti",
        not (claims.get("sid") or claims.get("sub")) and "sid/sub",
        not isinstance(claims.get("events"), dict) and "events",
        isinstance(claims.get("events"), dict) and BACKCHANNEL_EVENT not in claims["events"] and "event",
        "nonce" in claims and "nonce present",
    ]
    bad = [p for p in problems if p]
    if bad:
        raise LogoutTokenError(", ".join(bad))
    return claims


def create_portal(spec: PortalSpec, *, issuer: str, client_secret: str, base_url: str | None = None,
                  secret_key: str | None = None) -> Flask:
    base = (base_url or spec.base_url).rstrip("/")
    app = Flask(f"demo.{spec.key}", template_folder=str(PROJECT_ROOT / "templates"),
                static_folder=str(PROJECT_ROOT / "static"))
    app.config.update(
        SECRET_KEY=secret_key or secrets.token_hex(32), SESSION_COOKIE_NAME=spec.cookie,
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
        BABEL_DEFAULT_LOCALE="zh_CN", BABEL_TRANSLATION_DIRECTORIES=str(PROJECT_ROOT / "translations"),
    )

    def _locale():
        lang = request.args.get("lang") or request.cookies.get("lang")
        if lang in ("zh_CN", "en"):
            return lang
        return "en" if request.accept_languages.best_match(["zh_CN", "zh", "en"]) == "en" else "zh_CN"

    Babel(app, locale_selector=_locale)
    store = SessionStore()
    app.extensions["demo_store"] = store
    oauth = OAuth(app)
    rp = oauth.register(
        "tongban", client_id=spec.client_id, client_secret=client_secret,
        server_metadata_url=f"{issuer}/.well-known/openid-configuration",
        client_kwargs={"scope": "openid profile", "code_challenge_method": "S256", "timeout": 10},
    )
    others = [p for p in PORTALS if p.key != spec.key]

    def current():
        data = store.get(session.get("lid"))
        if data is None:
            session.pop("lid", None)
        return data

    @app.after_request
    def _headers(resp):
        resp.headers.setdefault("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
        resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    @app.get("/")
    def home():
        user = current()
        if user is None and not session.get("tried_silent"):
            # already logged in at Tongban? then this portal is too, without a click
            session["tried_silent"] = True
            return redirect(f"{base}/login?silent=1")
        return render_template("demo/portal.html", spec=spec, user=user, others=others)

    @app.get("/login")
    def login():
        session["tried_silent"] = True
        extra = {"prompt": "none"} if request.args.get("silent") else {}
        return rp.authorize_redirect(f"{base}/callback", **extra)

    @app.get("/callback")
    def callback():
        if request.args.get("error"):  # login_required after a silent try: show the log-in button
            return redirect(f"{base}/")
        token = rp.authorize_access_token()  # state, PKCE, the ID token (iss, aud, nonce, signature)
        claims = token["userinfo"]
        session.pop("lid", None)
        session["lid"] = store.create({"sub": claims["sub"], "sid": claims.get("sid"),
                                       "name": claims.get("name") or claims["sub"],
                                       "id_token": token["id_token"], "at": int(time.time())})
        session.pop("tried_silent", None)
        return redirect(f"{base}/")

    @app.post("/logout")
    def logout():
        user = current()
        store.drop(session.pop("lid", None))
        session["tried_silent"] = True
        end_session = rp.load_server_metadata()["end_session_endpoint"]
        params = {"post_logout_redirect_uri": f"{base}/", "client_id": spec.client_id}
        if user is not None:
            params["id_token_hint"] = user["id_token"]
        return redirect(end_session + "?" + urlencode(params))

    @app.post("/backchannel-logout")
    def backchannel_logout():
        raw = request.form.get("logout_token")
        if not raw:
            abort(400)
        try:
            keys = KeySet.import_key_set(rp.fetch_jwk_set())
            claims = validate_logout_token(raw, issuer=rp.load_server_metadata()["issuer"],
                                           client_id=spec.client_id, keys=keys)
        except LogoutTokenError as e:
            app.logger.warning("logout token refused: %s", e)
            return {"error": "invalid_request", "error_description": str(e)}, 400
        if store.replayed(claims["jti"], claims.get("exp", time.time() + 300)):
            return {"error": "invalid_request", "error_description": "replayed"}, 400
        store.drop_where(claims.get("sid"), claims.get("sub"))
        return "", 200

    @app.get("/whoami")
    def whoami():
        """For scripts and tests: the user this portal sees, if any."""
        user = current()
        return {"logged_in": user is not None, "sub": user and user["sub"], "sid": user and user["sid"]}

    return app
