"""The one-way layers (docs/architecture.md), enforced: every module of the project's packages
is parsed with ``ast`` and every import in it (module level and inside functions, absolute and
relative) is checked against a small table of forbidden directions.

To add a rule, add a row to FORBIDDEN; to allow one module an exception, add it to EXCEPTIONS
with the reason."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHELL = "tongban"
DOMAIN = ("people", "idp", "keys", "seal", "licence", "rating", "demo", "federation", "casserver", "saml")
PACKAGES = (SHELL, *DOMAIN)

# importer package -> packages it must never import (directly or in a function)
FORBIDDEN: dict[str, set[str]] = {
    "tongban": set(DOMAIN),  # the shell knows no domain package (the factory excepted, below)
    "keys": {"people", "idp", "seal", "licence", "rating", "demo", "federation", "casserver", "saml"},  # bottom
    "people": {"idp", "seal", "licence", "rating", "demo", "federation", "casserver", "saml"},
    "idp": {"seal", "licence", "rating", "demo", "federation", "casserver", "saml"},
    "federation": {"seal", "licence", "rating", "demo", "casserver", "saml"},
    "casserver": {"seal", "licence", "rating", "demo", "federation", "saml"},
    "saml": {"seal", "licence", "rating", "demo", "federation"},  # SPs live in casserver's legacy register
    "seal": {"licence", "rating", "demo", "federation", "casserver", "saml"},
    "licence": {"demo", "federation", "casserver", "saml"},
    "rating": {"demo", "federation", "casserver", "saml"},
}

# module (path relative to the repository) -> packages it may import despite FORBIDDEN, and why
EXCEPTIONS: dict[str, tuple[set[str], str]] = {
    "tongban/__init__.py": (set(DOMAIN), "the app factory wires every package's init_app"),
}


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts)


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) for every import in the module, wherever it is."""
    package = path.relative_to(ROOT).parts[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: inside its own package
                found.append((node.lineno, package))
            elif node.module:
                found.append((node.lineno, node.module.split(".")[0]))
    return found


def violations(paths: list[Path] | None = None) -> list[str]:
    out = []
    for path in paths if paths is not None else [p for pkg in PACKAGES for p in _modules(pkg)]:
        rel = path.relative_to(ROOT).as_posix()
        importer = rel.split("/")[0]
        allowed = EXCEPTIONS.get(rel, (set(), ""))[0]
        for line, target in imported_packages(path):
            if target in FORBIDDEN.get(importer, set()) and target not in allowed:
                out.append(f"{rel}:{line}: {importer} must not import {target}")
    return out


def test_every_package_is_scanned():
    for package in PACKAGES:
        assert _modules(package), f"no modules found for {package}"
    assert set(FORBIDDEN) <= set(PACKAGES)


def test_no_import_goes_against_the_layers():
    found = violations()
    assert not found, "imports against the layers (docs/architecture.md):\n" + "\n".join(found)


@pytest.mark.parametrize("source, message", [
    ("from idp.accounts import ensure_org\n", "tongban must not import idp"),
    ("def f():\n    import seal.services\n", "tongban must not import seal"),
    ("def f():\n    if True:\n        from demo.data import seed\n", "tongban must not import demo"),
])
def test_the_check_sees_function_level_imports(tmp_path, monkeypatch, source, message):
    """A forbidden import hidden inside a function (as the shell's used to be) is caught."""
    fake_root = tmp_path
    (fake_root / "tongban").mkdir()
    module = fake_root / "tongban" / "sneaky.py"
    module.write_text(source)
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", fake_root)
    found = violations([module])
    assert found and message in found[0]


def test_relative_imports_stay_in_their_package(tmp_path, monkeypatch):
    (tmp_path / "keys").mkdir()
    module = tmp_path / "keys" / "x.py"
    module.write_text("from . import services\nfrom .ca import CA\nfrom tongban.clock import utcnow\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    assert violations([module]) == []
    module.write_text("from idp.models import User\n")
    assert violations([module]) == ["keys/x.py:1: keys must not import idp"]
