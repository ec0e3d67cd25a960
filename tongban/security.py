"""Security headers on every response."""

from __future__ import annotations

from flask import Flask, Response, g, request

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
)
CSP_FRAMEABLE = CSP.replace("frame-ancestors 'none'", "frame-ancestors *")


def allow_framing() -> None:
    """For the few views whose point is to be framed (front-channel logout, session checks)."""
    g.allow_framing = True


def cacheable(seconds: int, *, private: bool = False) -> None:
    """Mark a response as cacheable: public (discovery, JWKS, static assets) or, with
    ``private``, only by the user's own browser (e.g. pictures behind a log-in)."""
    g.cache_seconds = seconds
    g.cache_private = private


def init_app(app: Flask) -> None:
    https = app.config["TONGBAN_ISSUER"].startswith("https://")

    common = [
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Permissions-Policy", "camera=(self), geolocation=(), microphone=()"),
    ]
    hsts = ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")

    @app.after_request
    def _headers(response: Response) -> Response:
        # one pass over the existing names: this runs on every hot-path response
        h = response.headers
        present = {k.lower() for k, _ in h.items()}
        framable = g.get("allow_framing", False)
        extra = list(common)
        extra.append(("Content-Security-Policy", CSP_FRAMEABLE if framable else CSP))
        if not framable:
            extra.append(("X-Frame-Options", "DENY"))
        if https or request.is_secure:
            extra.append(hsts)
        seconds = g.get("cache_seconds")
        if seconds is None and request.endpoint == "static":
            seconds = 3600
        if seconds:
            scope = "private" if g.get("cache_private") else "public"
            extra.append(("Cache-Control", f"{scope}, max-age={seconds}"))
        else:
            if "cache-control" in present:
                del h["Cache-Control"]
                present.discard("cache-control")
            extra.append(("Cache-Control", "no-store"))
            extra.append(("Pragma", "no-cache"))
        for k, v in extra:
            if k.lower() not in present:
                h.add(k, v)
        return response
