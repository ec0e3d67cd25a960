"""Layered configuration: defaults here -> ``instance/config.py`` -> environment.

The instance folder (database, private keys, local config) is created on first
run; a random Flask secret key and a key-encryption key (KEK) are generated in it
then and reused afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask

PROJECT_ROOT = Path(__file__).resolve().parent.parent

DEFAULTS: dict = {
    "TONGBAN_ISSUER": "http://127.0.0.1:5000",
    "REDIS_URL": "",
    "TONGBAN_LOCKOUT_THRESHOLD": 5,
    "TONGBAN_LOCKOUT_MINUTES": 15,
    # wrong passwords lock one (account, address) pair for 1, 2, 4 ... up to LOCKOUT_MINUTES;
    # this many from all addresses together lock the account for addresses it has not
    # logged in from successfully within LOCKOUT_FAMILIAR_DAYS
    "TONGBAN_LOCKOUT_ACCOUNT_THRESHOLD": 50,
    "TONGBAN_LOCKOUT_FAMILIAR_DAYS": 30,
    # registrations per client address and in all, per window (seconds)
    "TONGBAN_REGISTER_RATE_PER_IP": 5,
    "TONGBAN_REGISTER_RATE_GLOBAL": 300,
    "TONGBAN_REGISTER_RATE_WINDOW": 3600,
    # registration SMS codes asked for per client address per REGISTER_RATE_WINDOW
    "TONGBAN_REGISTER_CODES_PER_IP": 10,
    # forgotten-password requests (code asked for or tried) per client address per window
    "TONGBAN_RESET_RATE_PER_IP": 10,
    "TONGBAN_RESET_RATE_WINDOW": 3600,
    # removing or replacing a second factor needs the password and a factor this recently
    "TONGBAN_MFA_FRESH_MINUTES": 5,
    # where queued text messages go: "" (a gateway installed as app.extensions
    # ["tongban.sms_gateway"], else they wait and expire) or "log" (the server log: development)
    "TONGBAN_SMS_GATEWAY": "",
    # throttling per client address, separate from the per-account lockout
    "TONGBAN_LOGIN_RATE_PER_IP": 30,
    "TONGBAN_LOGIN_RATE_WINDOW": 60,
    "TONGBAN_AUTHORITY_NAME": "通办市政务服务和数据管理局",
    "TONGBAN_AUTHORITY_USCC": "11330800002724839W",
    # token lifetimes, seconds
    "TONGBAN_ACCESS_TOKEN_LIFETIME": 600,
    "TONGBAN_ID_TOKEN_LIFETIME": 600,
    "TONGBAN_AUTH_CODE_LIFETIME": 60,
    "TONGBAN_REFRESH_TOKEN_LIFETIME": 30 * 86400,
    # a rotated-in key is published this long before it signs anything
    "TONGBAN_KEY_ACTIVATION_DELAY": 3600,
    # login sessions
    "TONGBAN_SESSION_IDLE_MINUTES": 120,
    "TONGBAN_SESSION_ABSOLUTE_HOURS": 12,
    "TONGBAN_PASSWORD_MIN_LENGTH": 10,
    # Argon2id cost of new password hashes (docs/sessions-and-security.md, "Password hashing
    # cost"); below ARGON2_FLOOR start-up stops, a hash at another cost is redone at log-in
    "TONGBAN_ARGON2_TIME_COST": 4,
    "TONGBAN_ARGON2_MEMORY_KIB": 9216,
    "TONGBAN_ARGON2_PARALLELISM": 1,
    "TONGBAN_DORMANT_DAYS": 90,
    # how often each worker writes its in-memory usage counters to the database
    "TONGBAN_USAGE_FLUSH_SECONDS": 5,
    "TONGBAN_PUBLIC_REGISTRATION": True,
    # the outbox (back-channel logout deliveries): attempts before giving up, how often an
    # idle worker looks for due items, whether web processes run a worker thread, HTTP timeout
    "TONGBAN_OUTBOX_MAX_ATTEMPTS": 8,
    "TONGBAN_OUTBOX_POLL_SECONDS": 5,
    "TONGBAN_OUTBOX_THREAD": True,
    "TONGBAN_OUTBOX_TIMEOUT": 5,
    "TONGBAN_LOGOUT_TOKEN_LIFETIME": 120,
    # the audit log: the chain's secret (64 hex digits; default: instance/audit_key), whether
    # web processes run a chainer thread, how long an event may wait to be chained, and how
    # often (rows or seconds, whichever first) the chainer signs a checkpoint
    "TONGBAN_AUDIT_KEY": "",
    "TONGBAN_AUDIT_CHAIN_THREAD": True,
    "TONGBAN_AUDIT_CHAIN_SECONDS": 1,
    "TONGBAN_AUDIT_CHECKPOINT_ROWS": 1000,
    "TONGBAN_AUDIT_CHECKPOINT_SECONDS": 600,
    # refusals of unauthenticated requests (bad client credentials, junk bearer tokens) audited per
    # minute per source address (IPv6: per /64); the rest are counted in one suppressed-event row
    "TONGBAN_AUDIT_REFUSALS_PER_MINUTE": 30,
    # claiming an enterprise: the account level needed, always with a second factor in the session
    "TONGBAN_ENTERPRISE_CLAIM_ACR": "L3",
    # dispute tries (SMS code) per enterprise per hour
    "TONGBAN_CLAIM_DISPUTE_RATE": 10,
    # wrong dispute codes per source address (IPv6: per /64) per hour, counted before the
    # per-enterprise limit so one source cannot use up an enterprise's tries
    "TONGBAN_CLAIM_DISPUTE_RATE_PER_IP": 5,
    # per-address limits (log-in, QR log-in, seal verifier) count an IPv6 /64 as one address
    # and each /48 as this many addresses
    "TONGBAN_RATE_IPV6_48_FACTOR": 16,
    # the clerk identity desk (ID-number recovery, undoing claims): the clerk's session level
    "TONGBAN_CLERK_IDENTITY_ACR": "L3",
    # licence:verify lookups each client system may make per minute (POST /api/v1/licences/verify)
    "TONGBAN_LICENCE_VERIFY_RATE": 120,
    # the public seal verifier: signatures examined per document, seconds one verification may
    # run (checked per signature and per revision compared), verifications at once per worker process
    "TONGBAN_VERIFY_MAX_SIGNATURES": 20,
    "TONGBAN_VERIFY_MAX_SECONDS": 20,
    "TONGBAN_VERIFY_CONCURRENCY": 2,
    # 好差评: days a citizen may rate a service after it was handled; working days a department
    # has to verify a bad rating and to respond, rectify and call back; holidays (YYYY-MM-DD)
    # and make-up working days (调休) for the working-day count
    "TONGBAN_RATING_PERIOD_DAYS": 15,
    "TONGBAN_RATING_VERIFY_DAYS": 1,
    "TONGBAN_RATING_RECTIFY_DAYS": 15,
    "TONGBAN_RATING_HOLIDAYS": [],
    "TONGBAN_RATING_MAKEUP_WORKDAYS": [],
    # operations (tongban/metrics.py, tongban/logs.py): who may read /metrics (a bearer token,
    # or a client address in these networks), the log format (json or text), one line per request
    "TONGBAN_METRICS_TOKEN": "",
    "TONGBAN_METRICS_ALLOW": ["127.0.0.1/32", "::1/128"],
    "TONGBAN_LOG_FORMAT": "json",
    "TONGBAN_ACCESS_LOG": True,
    "TONGBAN_FAST_PATH": True,
    # the hot cache of lean answers (tongban/hotcache.py): on/off, entries (least recently used evicted),
    # the longest an answer is kept even when nothing invalidates it, seconds between two looks
    # at whether Redis is still the same instance and history (restored from a backup, a replica
    # promoted)
    "TONGBAN_HOT_CACHE": True,
    "TONGBAN_HOT_CACHE_SIZE": 20000,
    "TONGBAN_HOT_CACHE_SECONDS": 60,
    "TONGBAN_HOT_CACHE_REDIS_CHECK_SECONDS": 1.0,
    # with a database other than SQLite and no REDIS_URL the hot cache is off (servers sharing the
    # database would not invalidate each other's answers) unless this says one machine serves it
    "TONGBAN_HOT_CACHE_WITHOUT_REDIS": False,
    "BABEL_DEFAULT_LOCALE": "zh_CN",
    "BABEL_DEFAULT_TIMEZONE": "Asia/Shanghai",
    "LANGUAGES": ["zh_CN", "en"],
    "WTF_CSRF_TIME_LIMIT": None,
    "SQLALCHEMY_TRACK_MODIFICATIONS": False,
    "MAX_CONTENT_LENGTH": 20 * 1024 * 1024,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_NAME": "tongban_ui",
    "SSO_COOKIE_NAME": "tongban_sso",
    "JSON_SORT_KEYS": False,
}

# ---------------------------------------------------------------- the settings schema
#
# Every setting has a type: declared here with ``register`` (or a package's ``declare``), or
# else taken from its default in ``DEFAULTS``. Environment variables (always strings) and
# strings in ``instance/config.py`` are converted to that type; a value that does not convert
# stops the start-up with one line naming the variable (``ConfigError``).


class ConfigError(ValueError):
    """A setting whose value cannot be used; the message names the variable."""


def _to_int(raw: str) -> int:
    return int(raw.strip().replace("_", ""), 10)


def _to_count(raw: str) -> int:
    n = _to_int(raw)
    if n < 0:
        raise ValueError("must not be negative")
    return n


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _to_bool(raw: str) -> bool:
    v = raw.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def _to_seconds(raw: str) -> int:
    """``600``, ``600s``, ``10m``, ``2h``, ``1d`` -> seconds."""
    v, unit = raw.strip().lower(), 1
    if v[-1:] in _UNITS:
        v, unit = v[:-1], _UNITS[v[-1]]
    return _to_count(v) * unit


def _to_float(raw: str) -> float:
    x = float(raw.strip())
    if x != x or x in (float("inf"), float("-inf")):
        raise ValueError("expected a finite number")
    return x


def _to_list(raw: str) -> list[str]:
    return [x.strip() for x in raw.split(",") if x.strip()]


def _to_hex(raw: str) -> str:
    bytes.fromhex(raw.strip())
    return raw.strip()


CONVERTERS: dict[str, Callable[[str], Any]] = {
    "str": str, "int": _to_int, "count": _to_count, "bool": _to_bool, "float": _to_float,
    "seconds": _to_seconds, "list": _to_list, "hex": _to_hex,
}
_EXPECTED = {
    "int": "an integer", "count": "a whole number >= 0", "bool": "a boolean (1/0, true/false)",
    "float": "a number", "seconds": "a duration in seconds (600, 10m, 2h, 1d)",
    "list": "a comma-separated list", "hex": "hexadecimal", "str": "text",
}


@dataclass(frozen=True)
class Setting:
    key: str
    default: Any
    type: str
    doc: str = ""


_SCHEMA: dict[str, Setting] = {}


def _type_of(default: Any) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, (list, tuple)):
        return "list"
    return "str"


def register(key: str, default: Any, type: str | None = None, doc: str = "") -> Setting:
    """Declare a setting (module level, at import). ``type`` is one of ``CONVERTERS``; without
    it the type is that of ``default``."""
    kind = type or _type_of(default)
    if kind not in CONVERTERS:
        raise ValueError(f"{key}: unknown setting type {kind!r}")
    setting = _SCHEMA[key] = Setting(key, default, kind, doc)
    return setting


def setting(key: str) -> Setting | None:
    """The declared setting, or one derived from ``DEFAULTS``; None for an unknown key."""
    found = _SCHEMA.get(key)
    if found is not None:
        return found
    if key in DEFAULTS:
        return Setting(key, DEFAULTS[key], _type_of(DEFAULTS[key]))
    return None


def schema() -> dict[str, Setting]:
    """Every known setting: ``DEFAULTS`` (types derived) and everything registered."""
    out = {k: setting(k) for k in DEFAULTS}
    out.update(_SCHEMA)
    return out  # type: ignore[return-value]


def convert(key: str, raw: Any, kind: str | None = None, source: str = "environment") -> Any:
    """Convert a string ``raw`` to ``key``'s type (other values are returned unchanged)."""
    if not isinstance(raw, str):
        return raw
    if kind is None:
        found = setting(key)
        kind = found.type if found else "str"
    try:
        return CONVERTERS[kind](raw)
    except ValueError:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise ConfigError(f"{key}={shown!r} ({source}): expected {_EXPECTED.get(kind, kind)}") from None


def declare(app: Flask, defaults: dict[str, Any], types: dict[str, str] | None = None) -> None:
    """For a package's ``init_app``: register its settings, set the defaults nothing else set,
    and convert a value that came from the environment or a config file as a string."""
    types = types or {}
    pending = app.extensions.get(_PENDING, {})
    for key, default in defaults.items():
        register(key, default, types.get(key))
        if key in pending:
            app.config[key] = convert(key, pending.pop(key))
        elif key in app.config:
            app.config[key] = convert(key, app.config[key], source="configuration")
        else:
            app.config[key] = default


# Settings the packages read, declared here with their types; the packages' own
# ``setdefault`` calls then find them set.
register("TONGBAN_KEK", None, "hex", "key-encryption key, 32 bytes hex (default: a file in the instance folder)")
register("TONGBAN_TRUSTED_PROXIES", 0, "count",
         "proxies in front that set X-Forwarded-For/-Proto/-Host (0: the headers are ignored)")
for _key in ("TONGBAN_ACCESS_TOKEN_LIFETIME", "TONGBAN_ID_TOKEN_LIFETIME", "TONGBAN_AUTH_CODE_LIFETIME",
             "TONGBAN_REFRESH_TOKEN_LIFETIME", "TONGBAN_KEY_ACTIVATION_DELAY", "TONGBAN_LOGIN_RATE_WINDOW",
             "TONGBAN_USAGE_FLUSH_SECONDS", "TONGBAN_OUTBOX_POLL_SECONDS", "TONGBAN_LOGOUT_TOKEN_LIFETIME"):
    register(_key, DEFAULTS[_key], "seconds")
register("TONGBAN_MIGRATION_LOCK_WAIT", 600, "seconds",
         "how long `flask db upgrade` waits for another one running on the same database before it gives up")
register("TONGBAN_OUTBOX_TIMEOUT", 5.0, "float", "HTTP timeout of a back-channel logout delivery, seconds")
register("TONGBAN_PURGE_INTERVAL_SECONDS", 3600, "seconds",
         "how often the background chores delete expired codes, refresh tokens and deny-list entries")
register("TONGBAN_MALLOC_TRIM_SECONDS", 10, "seconds",
         "how often a worker that was busy hands freed C heap back to the kernel (glibc malloc_trim; "
         "tongban/malloc_trim.py); 0: never")
# people: Argon2 runs at once per process (people/passwords.py)
register("TONGBAN_ARGON2_CONCURRENCY", 0, "count",
         "Argon2 runs at once per process; 0: one per CPU the process may run on (people/passwords.py)")
# idp (mfa.DEFAULTS, device, QR log-in)
register("TONGBAN_TOTP_ISSUER", "Tongban")
register("TONGBAN_TOTP_DRIFT_STEPS", 1, "count")
register("TONGBAN_MFA_ATTEMPTS", 10, "count")
register("TONGBAN_MFA_WINDOW", 300, "seconds")
register("TONGBAN_SMS_CODE_MINUTES", 5, "count")
register("TONGBAN_SMS_CODE_ATTEMPTS", 5, "count")
register("TONGBAN_SMS_RATE_PER_PHONE", 5, "count")
register("TONGBAN_SMS_RATE_WINDOW", 3600, "seconds")
register("TONGBAN_LICENCE_READ_ACR", "L2")
register("TONGBAN_DEVICE_CODE_LIFETIME", 600, "seconds")
register("TONGBAN_DEVICE_INTERVAL", 5, "seconds")
register("TONGBAN_DEVICE_CODE_TRIES", 20, "count")
register("TONGBAN_DEVICE_CODE_TRIES_WINDOW", 600, "seconds")
register("TONGBAN_QR_LIFETIME", 120, "seconds")
register("TONGBAN_QR_RATE_PER_IP", 30, "count")
register("TONGBAN_QR_RATE_WINDOW", 60, "seconds")
# CIBA, poll mode (idp.ciba; docs/oidc-grants.md)
register("TONGBAN_CIBA_LIFETIME", 300, "seconds", "CIBA: how long a request waits for the citizen (default)")
register("TONGBAN_CIBA_MAX_LIFETIME", 600, "seconds", "CIBA: the longest requested_expiry accepted")
register("TONGBAN_CIBA_INTERVAL", 5, "seconds", "CIBA: the polling interval (slow_down adds 5 s)")
register("TONGBAN_CIBA_BINDING_MESSAGE_MAX", 40, "count", "CIBA: binding_message length limit, characters")
register("TONGBAN_CIBA_RATE_PER_CLIENT", 60, "count", "CIBA: requests per client per window")
register("TONGBAN_CIBA_RATE_WINDOW", 60, "seconds")
register("TONGBAN_CIBA_PENDING_PER_USER", 3, "count", "CIBA: requests waiting for one citizen at once")
register("TONGBAN_CIBA_FRESH_MINUTES", 30, "count",
         "CIBA: approving needs a log-in (authentication) at most this many minutes old")
# modern OIDC profile: PAR, signed request objects, private_key_jwt (docs/oidc-modern.md)
register("TONGBAN_REQUIRE_PAR", False, "bool",
         "every client must push its authorization requests (RFC 9126 POST /oauth/par)")
register("TONGBAN_PAR_LIFETIME", 60, "seconds", "how long a pushed request_uri may first be used")
register("TONGBAN_PAR_INTERACTION_LIFETIME", 600, "seconds",
         "how long the browser that first used a request_uri may finish logging in with it")
register("TONGBAN_CLIENT_ASSERTION_MAX_LIFETIME", 300, "seconds",
         "the furthest in the future a client assertion's (private_key_jwt) exp may lie")
register("TONGBAN_REQUEST_OBJECT_MAX_LIFETIME", 3600, "seconds",
         "the longest a request object may be valid (exp - nbf, and exp from now)")
register("TONGBAN_JWKS_URI_TIMEOUT", 5.0, "float", "HTTP timeout fetching a client's jwks_uri, seconds")
register("TONGBAN_FETCH_ALLOW_PRIVATE", False, "bool",
         "a client's jwks_uri or sector_identifier_uri may be on a private, loopback or reserved address")
register("TONGBAN_JWKS_URI_MAX_BYTES", 65536, "count", "the largest client JWKS document fetched")
register("TONGBAN_JWKS_URI_CACHE_SECONDS", 300, "seconds", "how long a fetched client JWKS is reused")
# keys, seal, licence
register("TONGBAN_CA_KEY_ALG", "ec")
register("TONGBAN_SEAL_KEY_BACKEND", "local")
register("TONGBAN_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so")
register("TONGBAN_PKCS11_TOKEN", "")
register("TONGBAN_PKCS11_PIN", "")
register("TONGBAN_SEAL_MAX_BYTES", 20 * 1024 * 1024, "count")
register("TONGBAN_SEAL_VERIFY_RATE", 60, "count")
register("TONGBAN_LICENCE_LINK_MINUTES", 5, "count")
# OpenID Connect modern profile: DPoP (idp/dpop.py), pairwise subjects (idp/pairwise.py)
register("TONGBAN_DPOP_PROOF_WINDOW", 60, "seconds", "a DPoP proof's iat may be this far from now")
register("TONGBAN_DPOP_NONCE_SECONDS", 300, "seconds", "how long each server-issued DPoP nonce step lasts")
register("TONGBAN_DPOP_REQUIRE_NONCE", True, "bool", "the token endpoint requires a server-issued DPoP nonce")
register("TONGBAN_DPOP_REQUIRE_NONCE_RESOURCE", False, "bool", "resource servers require a DPoP nonce too")
register("TONGBAN_PAIRWISE_SALT", None, "hex",
         "secret salt of pairwise subject identifiers, 32 bytes hex (default: a file in the instance folder)")
register("TONGBAN_SECTOR_FETCH_TIMEOUT", 5.0, "float", "HTTP timeout fetching a sector_identifier_uri, seconds")
# CAS and SAML (casserver/, saml/; docs/cas-saml.md)
register("TONGBAN_CAS_TICKET_SECONDS", 10, "seconds", "how long a CAS service ticket may wait for its validation")
register("TONGBAN_SAML_ASSERTION_SECONDS", 300, "seconds", "SAML assertion lifetime (NotOnOrAfter)")
register("TONGBAN_SAML_REQUEST_MAX_AGE", 300, "seconds",
         "an AuthnRequest older than this (IssueInstant) is refused; also how long it may wait for the log-in")
register("TONGBAN_SAML_XMLSEC_BINARY", "/usr/bin/xmlsec1", "str", "the xmlsec1 binary pysaml2 signs with")
register("TONGBAN_WALLET_CODE_SECONDS", 300, "seconds",
         "lifetime of the offline code the wallet shows; the page renews it before it expires")

_PASSTHROUGH = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")
_NOT_CONFIG = ("TONGBAN_INSTANCE_DIR", "TONGBAN_SERVE_ISSUER")
_PENDING = "tongban_env_pending"


def _set_in_instance_config(folder: Path, key: str) -> bool:
    path = folder / "config.py"
    return path.exists() and key in path.read_text(encoding="utf-8", errors="replace")


def instance_dir(config: dict | None = None) -> Path:
    path = (config or {}).get("TONGBAN_INSTANCE_DIR") or os.environ.get("TONGBAN_INSTANCE_DIR")
    return Path(path or PROJECT_ROOT / "instance").resolve()


def _secret_file(folder: Path, name: str, nbytes: int) -> bytes:
    """Read or create (0600) a random secret in the instance folder."""
    path = folder / name
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another worker created it first
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(nbytes))
    return bytes.fromhex(path.read_text().strip())


def load(app: Flask, overrides: dict | None = None) -> None:
    folder = instance_dir(overrides)
    folder.mkdir(parents=True, exist_ok=True)
    app.instance_path = str(folder)
    app.config.update({k: s.default for k, s in _SCHEMA.items() if k not in DEFAULTS})
    app.config.update(DEFAULTS)
    app.config["TONGBAN_INSTANCE_DIR"] = str(folder)
    app.config["DATABASE_URL"] = f"sqlite:///{folder / 'tongban.db'}"
    app.config.from_pyfile(str(folder / "config.py"), silent=True)
    for key in list(app.config):
        if key.startswith("TONGBAN_") and setting(key) is not None:
            app.config[key] = convert(key, app.config[key], source="instance/config.py")
    pending = {}
    for key, raw in os.environ.items():
        if key in _PASSTHROUGH:
            app.config[key] = raw
        elif key.startswith("TONGBAN_") and key not in _NOT_CONFIG:
            if setting(key) is None:
                pending[key] = raw  # a package may default it in its init_app: see ``finish``
            else:
                app.config[key] = convert(key, raw)
    if overrides:
        app.config.update(overrides)
        for key in overrides:
            pending.pop(key, None)
    app.extensions[_PENDING] = pending
    # `make serve` passes http://$HOST:$PORT, used only when nothing above set the issuer
    serve_issuer = os.environ.get("TONGBAN_SERVE_ISSUER")
    if serve_issuer and app.config["TONGBAN_ISSUER"] == DEFAULTS["TONGBAN_ISSUER"] and not (
        os.environ.get("TONGBAN_ISSUER") or (overrides or {}).get("TONGBAN_ISSUER")
        or _set_in_instance_config(folder, "TONGBAN_ISSUER")
    ):
        app.config["TONGBAN_ISSUER"] = serve_issuer
    check_argon2(app.config)
    proxies = app.config["TONGBAN_TRUSTED_PROXIES"]
    if not isinstance(proxies, int) or isinstance(proxies, bool) or proxies < 0:
        raise ConfigError(f"TONGBAN_TRUSTED_PROXIES={proxies!r}: expected a whole number >= 0")
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _secret_file(folder, "secret_key", 32).hex()
    kek = app.config.get("TONGBAN_KEK")
    app.config["TONGBAN_KEK"] = bytes.fromhex(kek) if isinstance(kek, str) and kek else (
        kek or _secret_file(folder, "kek", 32))
    app.config.setdefault("SQLALCHEMY_DATABASE_URI", app.config["DATABASE_URL"])
    if not overrides or "SQLALCHEMY_DATABASE_URI" not in overrides:
        app.config["SQLALCHEMY_DATABASE_URI"] = app.config["DATABASE_URL"]
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("postgresql://"):
        uri = "postgresql+psycopg://" + uri[len("postgresql://"):]
        app.config["SQLALCHEMY_DATABASE_URI"] = uri
    app.config["TONGBAN_ISSUER"] = app.config["TONGBAN_ISSUER"].rstrip("/")
    secure = app.config["TONGBAN_ISSUER"].startswith("https://")
    # Flask's own defaults hold SESSION_COOKIE_SECURE=False, so ``setdefault`` would change
    # nothing: with an https issuer every cookie is Secure unless explicitly configured off
    # (tongban.security also marks any cookie set another way)
    if not _explicit(app, folder, overrides, "SESSION_COOKIE_SECURE"):
        app.config["SESSION_COOKIE_SECURE"] = secure
    app.config["PREFERRED_URL_SCHEME"] = "https" if secure else "http"
    if uri.startswith("sqlite"):
        _private_sqlite_file(uri)
        app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"connect_args": {"timeout": 30}})
    else:
        app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"pool_size": 10, "max_overflow": 20})


def check_environment(environ=None) -> None:
    """Convert every declared setting in the environment (``make serve`` runs this before it
    starts workers, which would otherwise fail one after another): ConfigError if one is bad."""
    values = dict(ARGON2_DEFAULTS)
    for key, raw in (os.environ if environ is None else environ).items():
        if key.startswith("TONGBAN_") and key not in _NOT_CONFIG and setting(key) is not None:
            values[key] = convert(key, raw)
    check_argon2(values)


# ---------------------------------------------------------------- the password-hashing cost

ARGON2_KEYS = ("TONGBAN_ARGON2_TIME_COST", "TONGBAN_ARGON2_MEMORY_KIB", "TONGBAN_ARGON2_PARALLELISM")
ARGON2_DEFAULTS = {k: DEFAULTS[k] for k in ARGON2_KEYS}
# The floor: OWASP's Password Storage Cheat Sheet lists equally strong Argon2id settings from
# m=47104 KiB t=1 to m=7168 KiB t=5 (p=1); its cheapest, m x t = 35840 KiB, is the least
# memory-hardness work accepted, and 7168 KiB the least memory. The ceilings stop a typo
# from making every log-in take seconds or gigabytes.
ARGON2_MIN_MEMORY_KIB = 7168
ARGON2_MIN_WORK = 7168 * 5
ARGON2_MAX_MEMORY_KIB = 1024 * 1024
ARGON2_MAX_TIME_COST = 20
ARGON2_MAX_PARALLELISM = 16


def check_argon2(values) -> None:
    """ConfigError (naming the variable) if the Argon2id cost is below the floor or absurd."""
    t, m, p = (values.get(k, ARGON2_DEFAULTS[k]) for k in ARGON2_KEYS)
    for key, v in zip(ARGON2_KEYS, (t, m, p), strict=True):
        if not isinstance(v, int) or isinstance(v, bool):
            raise ConfigError(f"{key}={v!r}: expected a whole number")
    if not 1 <= t <= ARGON2_MAX_TIME_COST:
        raise ConfigError(f"TONGBAN_ARGON2_TIME_COST={t}: expected 1 to {ARGON2_MAX_TIME_COST} passes")
    if not ARGON2_MIN_MEMORY_KIB <= m <= ARGON2_MAX_MEMORY_KIB:
        raise ConfigError(f"TONGBAN_ARGON2_MEMORY_KIB={m}: expected {ARGON2_MIN_MEMORY_KIB} to "
                          f"{ARGON2_MAX_MEMORY_KIB} KiB (OWASP's least is 7168 KiB = 7 MiB)")
    if not 1 <= p <= ARGON2_MAX_PARALLELISM:
        raise ConfigError(f"TONGBAN_ARGON2_PARALLELISM={p}: expected 1 to {ARGON2_MAX_PARALLELISM} lanes")
    if t * m < ARGON2_MIN_WORK:
        raise ConfigError(
            f"TONGBAN_ARGON2_TIME_COST={t} with TONGBAN_ARGON2_MEMORY_KIB={m}: below the floor "
            f"(time cost x memory must be at least {ARGON2_MIN_WORK} KiB, OWASP's least: e.g. t=4 with "
            f"m=9216, t=2 with m=19456, t=1 with m=47104, t=5 with m=7168)")


def _explicit(app: Flask, folder: Path, overrides: dict | None, key: str) -> bool:
    return key in (overrides or {}) or _set_in_instance_config(folder, key)


def finish(app: Flask) -> None:
    """After every package's ``init_app``: an environment value of a setting a package only
    defaults there (``app.config.setdefault``) takes that default's type; nothing else knows
    the variable, it stays a string."""
    for key, raw in app.extensions.pop(_PENDING, {}).items():
        if key in app.config:
            app.config[key] = convert(key, raw, _type_of(app.config[key]))
        else:
            app.config[key] = raw


def _private_sqlite_file(uri: str) -> None:
    """Create the database file 0600 before SQLite does (it would use 0644 under the usual
    umask); SQLite gives its -wal, -shm and -journal files the database file's mode. Files made
    by an older version are tightened."""
    from sqlalchemy.engine import make_url

    try:
        path = make_url(uri).database
    except Exception:  # SQLAlchemy reports a bad URL itself, later
        return
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return
    except FileExistsError:
        pass
    except OSError:
        return  # no such folder, read-only...: SQLite says so when it connects
    for name in (path, path + "-wal", path + "-shm", path + "-journal"):
        try:
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)
        except OSError:
            pass
