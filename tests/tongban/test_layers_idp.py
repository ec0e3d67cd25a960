"""The people layer and the OpenID protocol layer, read from the source with ``ast``.

* ``people/`` (accounts, organisations, staff roles, log-in sessions, log-in helpers) imports
  nothing from ``idp/``, ``seal/``, ``licence/`` or ``rating/``;
* ``seal/``, ``licence/`` and ``rating/`` take people from ``people/`` and import from ``idp/``
  only its resource-protection entry point ``idp.protection`` (``require_oauth`` from
  ``idp.server`` validates the bearer tokens their APIs accept; the other names an API needs);
* the modules of ``idp/`` import one another without a cycle, counting imports inside
  functions (an import moved into a function to dodge a circle is still the circle).

Function-level imports count everywhere. See docs/architecture-idp.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What the domain packages may use from idp/: its resource-protection entry point, whose
# names are the protocol pieces an API needs (bearer-token validation through
# idp.server.require_oauth, RFC 9470 step-up, the system behind a token, consent, API scopes).
ALLOWED_FROM_IDP = {
    "idp.protection": {"require_oauth", "require_acr", "get_client", "get_row", "consent_covers",
                       "register_scope", "RegisteredClient"},
}
# Packages that import the allowed idp names, by package (the rest import nothing from idp).
DOMAIN = ("seal", "licence", "rating")


def _modules(package: str) -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(module: str, path: Path) -> list[tuple[str, str | None, int]]:
    """(module imported, name imported or None, line) for every import in the file, at any depth."""
    is_package = path.name == "__init__.py"
    out: list[tuple[str, str | None, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out += [(target, a.name, node.lineno) for a in node.names]
    return out


def _top(name: str) -> str:
    return name.split(".")[0]


def test_people_imports_no_protocol_and_no_domain_package():
    bad = []
    for module, path in _modules("people").items():
        for target, name, line in imports(module, path):
            if _top(target) in ("idp", "seal", "licence", "rating", "demo"):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}{'.' + name if name else ''}")
    assert not bad, "people/ must not import these:\n" + "\n".join(bad)


def test_domain_packages_use_idp_only_through_its_entry_points():
    bad = []
    for package in DOMAIN:
        for module, path in _modules(package).items():
            for target, name, line in imports(module, path):
                if _top(target) != "idp":
                    continue
                if name is None or name not in ALLOWED_FROM_IDP.get(target, set()):
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}{'.' + name if name else ''}")
    assert not bad, ("seal/licence/rating take accounts, organisations, staff roles and log-in helpers "
                     "from people/; from idp/ only " + repr(ALLOWED_FROM_IDP) + ":\n" + "\n".join(bad))


def import_graph(package: str) -> dict[str, set[str]]:
    """Edges between the modules of ``package``; ``from pkg import mod`` is an edge to pkg.mod."""
    modules = _modules(package)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for target, name, _line in imports(module, path):
            full = f"{target}.{name}" if name else target
            dest = full if full in modules else target if target in modules else None
            if dest and dest != module:
                graph[module].add(dest)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = GREY
        stack.append(node)
        for nxt in sorted(graph[node]):
            if colour[nxt] == GREY:
                return [*stack[stack.index(nxt):], nxt]
            if colour[nxt] == WHITE and (found := visit(nxt)):
                return found
        stack.pop()
        colour[node] = BLACK
        return None

    for node in sorted(graph):
        if colour[node] == WHITE and (found := visit(node)):
            return found
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_inside_idp():
    cycle = find_cycle(import_graph("idp"))
    assert cycle is None, "import cycle in idp/: " + " -> ".join(cycle)


def test_no_import_cycle_inside_people():
    cycle = find_cycle(import_graph("people"))
    assert cycle is None, "import cycle in people/: " + " -> ".join(cycle)


def _function_level_imports(module: str, path: Path) -> list[tuple[str, int]]:
    is_package = path.name == "__init__.py"
    out = []
    for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    target = ".".join(base[: len(base) - (node.level - 1)] + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                out.append((target, node.lineno))
            elif isinstance(node, ast.Import):
                out += [(a.name, node.lineno) for a in node.names]
    return out


@pytest.mark.parametrize("package", ["idp", "people"])
def test_no_function_level_imports_of_the_identity_layers_outside_the_app_factory(package):
    """An import of idp/ or people/ inside a function is how a circle hides; only the package's
    ``init_app`` (``__init__.py``) may import its modules late (docs/architecture-idp.md)."""
    bad = []
    for module, path in _modules(package).items():
        if path.name == "__init__.py":
            continue
        for target, line in _function_level_imports(module, path):
            if _top(target) in ("idp", "people"):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target} inside a function")
    assert not bad, "\n".join(bad)
