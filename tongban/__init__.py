"""Tongban (通办): one identity and one signing service for government systems."""

from __future__ import annotations

from inspect import iscoroutinefunction
from types import CodeType, FunctionType, MethodType

from flask import Flask

from .config import PROJECT_ROOT

# whether a function's code is a plain (not a coroutine) function: by code object, shared by
# every closure made from one ``def`` (so bounded by the program's code, not by requests)
_SYNC_CODE: dict[CodeType, bool] = {}


class App(Flask):
    """Flask, answering ``ensure_sync`` from memory: Flask asks it of every hook and view on
    every request (each application context's teardown functions included), and each answer
    costs an ``inspect.iscoroutinefunction``. Remembered only for plain functions (and methods
    bound to them) with nothing in their ``__dict__`` (``inspect.markcoroutinefunction`` and
    ``functools.wraps`` write there); everything else is asked of Flask every time, as before."""

    def ensure_sync(self, func):
        # a bound method (Flask-SQLAlchemy's teardown) is a new object on every access: judged by
        # its function, which is what iscoroutinefunction looks at
        plain = func.__func__ if type(func) is MethodType else func
        if type(plain) is FunctionType and not plain.__dict__:
            sync = _SYNC_CODE.get(plain.__code__)
            if sync is None:
                sync = _SYNC_CODE[plain.__code__] = not iscoroutinefunction(plain)
            if sync:
                return func
        return super().ensure_sync(func)


def create_app(config: dict | None = None) -> Flask:
    """The thin factory: load configuration, then each package's ``init_app``."""
    app = App(
        "tongban",
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
        instance_relative_config=False,
    )
    from . import config as cfg

    cfg.load(app, config)

    from . import (
        audit,
        backup,
        bootstrap,
        cookie_session,
        fastpath,
        health,
        hotcache,
        i18n,
        logs,
        malloc_trim,
        metrics,
        migrating,
        outbox,
        security,
        templating,
        views,
    )
    from . import shared_secrets as shared_secrets_
    from .extensions import csrf, db, init_after_request_writes

    logs.init_app(app)  # first: the request id exists before any other hook logs
    metrics.init_app(app)
    db.init_app(app)
    init_after_request_writes(app)
    migrating.init_app(app, db, directory=str(PROJECT_ROOT / "tongban" / "migrations"))  # Flask-Migrate, lazily
    csrf.init_app(app)
    cookie_session.init_app(app)
    i18n.init_app(app)
    templating.init_app(app)  # after i18n: replaces the templates' gettext it installs
    fastpath.init_app(app)  # innermost: security's proxy fix wraps it
    hotcache.init_app(app)
    security.init_app(app)
    views.init_app(app)
    health.init_app(app)
    audit.init_app(app)
    bootstrap.init_app(app)
    outbox.init_app(app)
    malloc_trim.init_app(app)  # a worker's freed C heap back to the kernel after busy spells
    backup.init_app(app)
    shared_secrets_.init_app(app)  # SECRET_KEY, KEK, audit key, issuer; idp adds the pairwise salt

    # the one place the shell knows the domain packages (docs/architecture.md): each registers
    # its blueprints, CLI groups, bootstrap steps, chores and cache generations itself
    import casserver
    import demo
    import federation
    import idp
    import keys
    import licence
    import people
    import rating
    import saml
    import seal

    keys.init_app(app)
    people.init_app(app)  # accounts, organisations, sessions: below the protocol
    idp.init_app(app)
    seal.init_app(app)
    licence.init_app(app)
    rating.init_app(app)
    federation.init_app(app)  # log in with an upstream OpenID provider (brokering)
    casserver.init_app(app)  # CAS 3.0 for legacy systems
    saml.init_app(app)  # SAML 2.0 identity provider
    demo.init_app(app)  # `flask demo seed`
    cfg.finish(app)
    return app
