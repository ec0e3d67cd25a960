"""The project's own interface documents keep up with the code: every setting of the typed
schema is in docs/configuration.md, every ``flask --app wsgi`` command in docs/commands.md,
every route in docs/endpoints.md; and nothing cites a document outside the repository.

When one fails, the message lists exactly what is missing: add those to the page."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[str]:
    out = []
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        if isinstance(command, click.Group):
            out += _commands(command, path)
        else:
            out.append(" ".join(path))
    return out


def test_every_setting_is_documented(app):
    from tongban.config import schema

    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    missing = sorted(key for key in schema() if f"`{key}`" not in text)
    assert not missing, "settings missing from docs/configuration.md: " + ", ".join(missing)


def test_every_command_is_documented(app):
    text = (DOCS / "commands.md").read_text(encoding="utf-8")
    commands = _commands(app.cli)
    assert "demo seed" in commands and "users create" in commands
    missing = [c for c in commands if f"`{c}" not in text and f", `{c}" not in text]
    assert not missing, "commands missing from docs/commands.md: " + ", ".join(missing)


def _shape(rule: str) -> str:
    """A path with its parameters anonymous: /wallet/<identifier>/pdf -> /wallet/<>/pdf."""
    return re.sub(r"<[^>]*>", "<>", rule)


def test_every_route_is_documented(app):
    text = _shape((DOCS / "endpoints.md").read_text(encoding="utf-8"))
    rules = sorted({r.rule for r in app.url_map.iter_rules()})
    missing = [rule for rule in rules if f"`{_shape(rule)}`" not in text]
    assert not missing, "routes missing from docs/endpoints.md: " + ", ".join(missing)


@pytest.mark.parametrize("page", ["architecture", "commands", "configuration", "endpoints", "standards", "testing"])
def test_the_topic_pages_exist_and_the_readme_links_them(page):
    assert (DOCS / f"{page}.md").is_file()
    assert f"(docs/{page}.md)" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_nothing_cites_documents_outside_the_repository():
    """The project carries its own interface documents (docs/): no citation of a shared
    contract file or of the retired docs/interfaces-additions.md."""
    pattern = re.compile(r"INTERFACES\.md|/work/shared|interfaces-additions")
    offenders = []
    for path in ROOT.rglob("*"):
        if any(part in (".git", ".venv", "node_modules", "instance", "__pycache__") or part.endswith(".egg-info")
               for part in path.relative_to(ROOT).parts):
            continue
        if path.suffix not in (".py", ".md", ".html", ".js", ".css", ".toml", ".cfg", ".txt") and path.name not in (
                "Makefile", "run"):
            continue
        if path == Path(__file__).resolve():
            continue
        if pattern.search(path.read_text(encoding="utf-8", errors="replace")):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, "cite documents outside the repository: " + ", ".join(offenders)
