"""The shell's registries the packages plug into (docs/architecture.md): the shell names no
domain package, yet a new instance is bootstrapped in the right order, a restore invalidates
every package's caches, the demo seed is a command, and the seal verifier names licences."""

from __future__ import annotations


def test_bootstrap_steps_come_from_the_packages_in_order(app):
    from idp import ensure_authority
    from keys.ca import ensure_ca
    from keys.services import ensure_keys
    from licence.services import seed_catalogue
    from seal.services import ensure_authority_seal
    from tongban import bootstrap, create_app

    create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
                "TONGBAN_INSTANCE_DIR": app.config["TONGBAN_INSTANCE_DIR"]})  # a second app registers nothing twice
    steps = bootstrap.steps()
    assert len(steps) == len(set(steps))
    assert steps[:2] == [ensure_keys, ensure_authority]  # keys first, then the authority the seals belong to
    for later in (ensure_ca, ensure_authority_seal, seed_catalogue):
        assert later in steps[2:]
    assert steps.index(ensure_authority_seal) > steps.index(ensure_ca)  # the seal needs its CA


def test_bootstrap_makes_a_new_instance(app):
    from sqlalchemy import select

    from people.models import Organisation
    from seal.services import get_active_seal
    from tongban.bootstrap import bootstrap
    from tongban.extensions import db

    bootstrap()
    bootstrap()  # idempotent
    uscc = app.config["TONGBAN_AUTHORITY_USCC"]
    assert db.session.execute(select(Organisation).where(Organisation.uscc == uscc)).scalar_one()
    assert get_active_seal(uscc, "licence") is not None


def test_a_restore_bumps_every_declared_generation(app, monkeypatch):
    from tongban import backup, hotcache
    from tongban.cache import Generation, generations

    names = {g.name for g in generations()}
    assert {"clients", "denylist", "keys", "ca", "sm2ca", "licence-status"} <= names
    bumped = []
    monkeypatch.setattr(Generation, "bump", lambda self, app=None: bumped.append(self.name))
    # the hot cache's counter has its own bump (it publishes "*" to its log, with Redis a script)
    monkeypatch.setattr(hotcache._LogGeneration, "bump", lambda self, app=None: bumped.append(self.name))
    backup._bump_generations(app)
    assert sorted(bumped) == sorted(names)


def test_the_demo_seed_is_a_command_of_the_demo_package(app):
    assert "seed" in app.cli.commands["demo"].commands
    assert app.cli.commands["demo"].commands["seed"].callback.__module__ == "demo.data"


def test_the_seal_verifier_learns_about_licences_from_the_licence_package(app):
    from licence.verification import licence_in
    from seal import views

    assert views._DOCUMENT_RECOGNISERS.get("licence") is licence_in
    assert list(views._DOCUMENT_RECOGNISERS) == ["licence"]
