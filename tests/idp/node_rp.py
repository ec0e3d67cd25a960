"""Running a Node relying party (openid-client 6, a certified strict RP library) against the live
provider. ``make install`` installs openid-client into .venv/openid-client (or set
$TONGBAN_OPENID_CLIENT to a folder where it is installed). Without node or the library the tests
are skipped — except in CI (CI=true), where they fail."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
VERSION = "6.9.1"  # the pin in the Makefile (OPENID_CLIENT_VERSION)


def modules() -> Path:
    return Path(os.environ.get("TONGBAN_OPENID_CLIENT") or ROOT / ".venv" / "openid-client")


def available() -> bool:
    return bool(shutil.which("node")) and (modules() / "node_modules" / "openid-client").is_dir()


def require() -> None:
    """Skip (fail in CI) unless node and openid-client are at hand."""
    if available():
        return
    reason = (f"node and openid-client {VERSION} are needed: run `make install` (npm) or set "
              f"TONGBAN_OPENID_CLIENT to a folder with openid-client installed")
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(reason)
    pytest.skip(reason)


def _copy(source: Path, target: Path) -> None:
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.copyfile(source, partial)
    os.replace(partial, target)


def run(script: str, args: dict, timeout: int = 180) -> dict:
    """Run tests/idp/<script> with ``args`` (JSON in $OC_ARGS); the last line of its output is JSON."""
    require()
    folder = modules()
    target = folder / f"tongban_{script}"
    # next to node_modules, so that imports resolve; replaced whole, as two test workers may
    # copy the same file while the other's node reads it
    for name in (script, "openid_client_browser.mjs"):
        _copy(HERE / name, folder / f"tongban_{name}")
    env = {**os.environ, "OC_ARGS": json.dumps(args)}
    done = subprocess.run([shutil.which("node"), str(target)], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
