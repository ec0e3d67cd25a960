"""``flask backup create FILE`` / ``flask backup restore FILE``: the database and the instance
secrets in one encrypted archive; the passphrase is read from the first line of stdin.

What is in it: the database (SQLite: a consistent copy made with SQLite's online backup API
while servers keep running; PostgreSQL: ``pg_dump --format=custom`` when it is installed,
else a portable table-by-table dump through SQLAlchemy) and every file of the instance
folder except the SQLite database itself: ``kek``, ``secret_key``, ``audit_key``,
``audit_witness``, key files, ``config.py``.

The file: ``TONGBAN-BACKUP 1`` and a JSON header line (scrypt parameters and salt, a nonce
prefix), then the archive (tar) in AES-256-GCM chunks of 1 MiB, each authenticated with
the header, its number and whether it is the last (a cut, reordered or extended file is
refused). The tar is sealed as it is written and unpacked as it is opened, so no clear-text
copy of the whole archive is ever written (one pass over the data fewer each way). Restore
checks everything before it changes anything: every chunk is authenticated and the archive
unpacked into a temporary folder first, so a wrong passphrase, a damaged file or an archive
Tongban did not write (links, paths outside, no manifest) leaves the database and the
instance folder as they were.

Restore replaces the database's contents and the instance files; stop the servers (and
workers) first, run ``flask --app wsgi db upgrade`` afterwards if the backup is older than
the code.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import IO, cast

import click
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import MetaData, func, insert, select, text
from sqlalchemy.engine import make_url

from .errors import TongbanError
from .extensions import db

MAGIC = b"TONGBAN-BACKUP 1\n"
CHUNK = 1 << 20
SCRYPT = {"n": 2**15, "r": 8, "p": 1}
MIN_PASSPHRASE = 12
# never put in an archive: the database file (copied through the backup API), caches, temporaries
_SKIP_PREFIXES = (".gen-", ".audit_witness.", "tongban-metrics")


class BackupError(TongbanError):
    status = 400
    code = "backup_error"


class WrongPassphrase(BackupError):
    code = "wrong_passphrase"


# ---------------------------------------------------------------- the encrypted container


def _key(passphrase: str, salt: bytes, params: dict) -> bytes:
    return Scrypt(salt=salt, length=32, n=params["n"], r=params["r"], p=params["p"]).derive(passphrase.encode())


class _Sealer:
    """A file-like writer that seals what is written into the container, chunk by chunk (one
    chunk held back, so the last can be flagged as last); ``close`` writes the last."""

    def __init__(self, dst, passphrase: str) -> None:
        salt, self.prefix = os.urandom(16), os.urandom(7)
        self.header = json.dumps({"kdf": "scrypt", **SCRYPT, "salt": base64.b64encode(salt).decode(),
                                  "cipher": "AES-256-GCM", "chunk": CHUNK,
                                  "nonce_prefix": base64.b64encode(self.prefix).decode()}).encode() + b"\n"
        self.aead = AESGCM(_key(passphrase, salt, SCRYPT))
        self.dst, self.index, self.buf, self.closed = dst, 0, bytearray(), False
        dst.write(MAGIC + self.header)

    def _seal(self, chunk: bytes, last: bool) -> None:
        nonce = self.prefix + struct.pack(">I", self.index) + (b"\x01" if last else b"\x00")
        sealed = self.aead.encrypt(nonce, chunk, MAGIC + self.header + struct.pack(">I?", self.index, last))
        self.dst.write(struct.pack(">I", len(sealed)) + sealed)
        self.index += 1

    def write(self, data) -> int:
        self.buf += data
        while len(self.buf) > CHUNK:  # more follows this chunk: not the last
            self._seal(bytes(self.buf[:CHUNK]), False)
            del self.buf[:CHUNK]
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._seal(bytes(self.buf), True)
            self.buf.clear()


def encrypt_stream(src, dst, passphrase: str) -> None:
    sealer = _Sealer(dst, passphrase)
    shutil.copyfileobj(src, sealer, CHUNK)
    sealer.close()


def _opened_chunks(src, passphrase: str) -> Iterator[bytes]:
    """The plaintext, chunk by chunk, each authenticated before it is yielded; raises on a wrong
    passphrase, a damaged, cut, reordered or extended file."""
    if src.read(len(MAGIC)) != MAGIC:
        raise BackupError("not a Tongban backup")
    header = src.readline(4096)
    try:
        h = json.loads(header)
        params = {"n": int(h["n"]), "r": int(h["r"]), "p": int(h["p"])}
        salt, prefix = base64.b64decode(h["salt"]), base64.b64decode(h["nonce_prefix"])
    except (ValueError, KeyError, TypeError):
        raise BackupError("the backup's header is damaged") from None
    if h.get("kdf") != "scrypt" or len(prefix) != 7 or not (2**14 <= params["n"] <= 2**20) \
            or params["r"] > 16 or params["p"] > 4:
        raise BackupError("the backup's header is damaged")
    aead = AESGCM(_key(passphrase, salt, params))
    index = 0
    while True:
        size = src.read(4)
        if len(size) != 4:
            raise BackupError("the backup is cut short")
        sealed = src.read(struct.unpack(">I", size)[0])
        for last in (False, True):
            nonce = prefix + struct.pack(">I", index) + (b"\x01" if last else b"\x00")
            try:
                chunk = aead.decrypt(nonce, sealed, MAGIC + header + struct.pack(">I?", index, last))
                break
            except InvalidTag:
                continue
        else:
            if index == 0:
                raise WrongPassphrase("wrong passphrase, or the backup is damaged")
            raise BackupError("the backup is damaged")
        if last and src.read(1):
            raise BackupError("the backup has data after its end")
        yield chunk
        if last:
            return
        index += 1


def decrypt_stream(src, dst, passphrase: str) -> None:
    for chunk in _opened_chunks(src, passphrase):
        dst.write(chunk)


class _Opener:
    """A file-like reader of the plaintext (for ``tarfile``'s stream mode)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks, self.buf = chunks, bytearray()

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self.buf) < n:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.buf += chunk
        n = len(self.buf) if n < 0 else min(n, len(self.buf))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def finish(self) -> None:
        """Read to the end: the last chunk (and nothing after it) is checked too."""
        for _ in self.chunks:
            pass


# ---------------------------------------------------------------- the database


def _sqlite_path(uri: str) -> str | None:
    url = make_url(uri)
    if url.get_backend_name() != "sqlite":
        return None
    if not url.database or url.database == ":memory:":
        raise BackupError("an in-memory database cannot be backed up")
    return url.database


def _pg_tool(name: str) -> str | None:
    if os.environ.get("TONGBAN_BACKUP_PORTABLE"):  # force the portable dump (tests, other versions)
        return None
    return shutil.which(name)


def _libpq(uri: str) -> tuple[str, dict[str, str]]:
    """The libpq URL without its password, and the environment carrying it (not on a command
    line that ``ps`` shows)."""
    url = make_url(uri).set(drivername="postgresql")
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return url.set(password=None).render_as_string(hide_password=False), env


def _encode(v):
    if isinstance(v, bytes | bytearray | memoryview):
        return {"$b": base64.b64encode(bytes(v)).decode()}
    if isinstance(v, datetime):
        return {"$dt": v.isoformat()}
    if isinstance(v, date):
        return {"$d": v.isoformat()}
    if isinstance(v, time):
        return {"$t": v.isoformat()}
    if isinstance(v, Decimal):
        return {"$n": str(v)}
    if isinstance(v, dict | list):
        return {"$j": v}
    return v


def _decode(v):
    if isinstance(v, dict) and len(v) == 1:
        (tag, raw), = v.items()
        if tag == "$b":
            return base64.b64decode(raw)
        if tag == "$dt":
            return datetime.fromisoformat(raw)
        if tag == "$d":
            return date.fromisoformat(raw)
        if tag == "$t":
            return time.fromisoformat(raw)
        if tag == "$n":
            return Decimal(raw)
        if tag == "$j":
            return raw
    return v


def _portable_dump(out) -> None:
    """One JSON line per table header and per row, tables in dependency order. Rows are streamed
    (a server-side cursor on PostgreSQL, ``yield_per``): memory stays flat whatever the size of a
    table; without it the driver fetched a whole table — every licence PDF — at once."""
    meta = MetaData()
    meta.reflect(bind=db.engine)
    # one snapshot for every table (the dump is consistent across them)
    with db.engine.connect() as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        for table in meta.sorted_tables:
            cols = [c.name for c in table.columns]
            out.write(json.dumps({"table": table.name, "columns": cols}).encode() + b"\n")
            rows = conn.execution_options(yield_per=500).execute(table.select())
            for row in rows:
                out.write(json.dumps([_encode(v) for v in row], ensure_ascii=False).encode() + b"\n")


def _portable_restore(src) -> None:
    meta = MetaData()
    with db.engine.begin() as conn:
        meta.reflect(bind=conn)
        tables = {t.name: t for t in meta.sorted_tables}
        pg = conn.dialect.name == "postgresql"
        if pg:
            conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE"))
        else:
            for t in reversed(meta.sorted_tables):
                conn.execute(t.delete())
        table, cols = None, []
        batch: list[dict] = []

        def flush():
            if batch:
                conn.execute(insert(table), batch)
                batch.clear()

        size = 0
        for line in src:
            item = json.loads(line)
            if isinstance(item, dict):
                flush()
                table = tables.get(item["table"])
                if table is None:
                    raise BackupError(f"the backup holds table {item['table']!r}, which this database lacks")
                cols = item["columns"]
                continue
            batch.append({c: _decode(v) for c, v in zip(cols, item, strict=True) if c in table.c})
            size += len(line)
            if len(batch) >= 1000 or size >= 16 << 20:  # big rows (PDFs): at most ~16 MiB a batch
                flush()
                size = 0
        flush()
        if pg:  # serial columns continue after the restored rows
            for t in tables.values():
                for c in t.primary_key.columns:
                    seq = conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"),
                                       {"t": f'"{t.name}"', "c": c.name}).scalar()
                    if seq:  # names from the database's own catalogue, quoted
                        top = conn.execute(select(func.max(c))).scalar()
                        conn.execute(text("SELECT setval(:s, :v, false)"), {"s": seq, "v": (top or 0) + 1})


def dump_database(workdir: Path) -> str:
    """Write the database to ``workdir``; returns the format's name."""
    uri = current_app.config["SQLALCHEMY_DATABASE_URI"]
    path = _sqlite_path(uri)
    if path is not None:
        src = sqlite3.connect(path)
        dst = sqlite3.connect(workdir / "database.sqlite")
        try:
            with dst:
                src.backup(dst)
        finally:
            dst.close()
            src.close()
        return "sqlite"
    pg_dump = _pg_tool("pg_dump") if make_url(uri).get_backend_name() == "postgresql" else None
    if pg_dump:
        url, env = _libpq(uri)
        # --compress=1: most of the bytes are PDFs, compressed already; zlib's default level 6
        # took 2.6 times the time of level 1 for 6 % less (bench/backup.py, docs/deploy.md §9)
        result = subprocess.run([pg_dump, "--format=custom", "--compress=1", "--no-owner",  # noqa: S603
                                 "--no-privileges", "--file", str(workdir / "database.pgdump"), url],
                                capture_output=True, text=True, check=False, env=env)
        if result.returncode == 0:
            return "pg_dump"
        # another server version, say: the portable dump still works
    with open(workdir / "database.jsonl", "wb") as out:
        _portable_dump(out)
    return "portable"


def restore_database(workdir: Path, fmt: str) -> None:
    uri = current_app.config["SQLALCHEMY_DATABASE_URI"]
    db.session.remove()
    path = _sqlite_path(uri)
    if fmt == "sqlite":
        if path is None:
            raise BackupError("this backup holds a SQLite database; restore it into SQLite")
        db.engine.dispose()
        src = sqlite3.connect(workdir / "database.sqlite")
        dst = sqlite3.connect(path, timeout=30)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
        return
    if fmt == "pg_dump":
        pg_restore = shutil.which("pg_restore")
        if pg_restore is None or make_url(uri).get_backend_name() != "postgresql":
            raise BackupError("this backup was made with pg_dump; restoring it needs pg_restore and PostgreSQL")
        db.engine.dispose()
        url, env = _libpq(uri)
        result = subprocess.run([pg_restore, "--clean", "--if-exists", "--no-owner", "--no-privileges",  # noqa: S603
                                 "--single-transaction", "--dbname", url,
                                 str(workdir / "database.pgdump")],
                                capture_output=True, text=True, check=False, env=env)
        if result.returncode != 0:
            raise BackupError("pg_restore failed: " + (result.stderr.strip().splitlines() or ["?"])[-1][:300])
        return
    if fmt == "portable":
        with open(workdir / "database.jsonl", "rb") as dump:
            _portable_restore(dump)
        return
    raise BackupError(f"unknown database format {fmt!r}")


# ---------------------------------------------------------------- the instance folder


def _instance_files(app: Flask) -> list[Path]:
    folder = Path(app.config["TONGBAN_INSTANCE_DIR"])
    skip = set()
    path = _sqlite_path(app.config["SQLALCHEMY_DATABASE_URI"])
    if path is not None:
        p = Path(path).resolve()
        skip = {p, Path(f"{p}-wal"), Path(f"{p}-shm"), Path(f"{p}-journal"), Path(f"{p}.upgrade-lock")}
    out = []
    for f in sorted(folder.rglob("*")):
        if f.is_file() and not f.is_symlink() and f.resolve() not in skip \
                and not f.name.startswith(_SKIP_PREFIXES) and "__pycache__" not in f.parts:
            out.append(f)
    return out


def create(target: Path, passphrase: str) -> dict:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if len(passphrase) < MIN_PASSPHRASE:
        raise BackupError(f"the passphrase must be at least {MIN_PASSPHRASE} characters")
    folder = Path(app.config["TONGBAN_INSTANCE_DIR"])
    with tempfile.TemporaryDirectory(prefix="tongban-backup-") as tmp:
        work = Path(tmp)
        fmt = dump_database(work)
        files = _instance_files(app)
        manifest = {"version": 1, "created": datetime.now().astimezone().isoformat(timespec="seconds"),
                    "database": fmt, "instance_files": [f.relative_to(folder).as_posix() for f in files]}
        partial = target.with_name(f".{target.name}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            # the tar is written straight into the sealer: no clear-text copy of the archive on disk
            with os.fdopen(fd, "wb") as dst:
                sealer = _Sealer(dst, passphrase)
                with tarfile.open(fileobj=cast(IO[bytes], sealer), mode="w|", bufsize=CHUNK) as tar:
                    data = json.dumps(manifest, ensure_ascii=False).encode()
                    info = tarfile.TarInfo("manifest.json")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                    for name in ("database.sqlite", "database.pgdump", "database.jsonl"):
                        if (work / name).exists():
                            tar.add(work / name, arcname=f"db/{name}")
                    for f in files:
                        tar.add(f, arcname=f"instance/{f.relative_to(folder).as_posix()}")
                sealer.close()
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    return manifest


def _safe_name(name: str) -> PurePosixPath:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise BackupError(f"the backup holds an unsafe path {name!r}")
    return p


def restore(source: Path, passphrase: str) -> dict:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    folder = Path(app.config["TONGBAN_INSTANCE_DIR"])
    if not source.is_file():
        raise BackupError(f"no such file: {source}")
    with tempfile.TemporaryDirectory(prefix="tongban-restore-") as tmp:
        work = Path(tmp)
        x = work / "x"
        # everything is decrypted, authenticated and unpacked into the temporary folder before
        # anything is changed (the archive is unpacked as it is decrypted: no clear-text copy)
        files: dict[str, PurePosixPath] = {}
        with open(source, "rb") as src:
            plain = _Opener(_opened_chunks(src, passphrase))
            try:
                with tarfile.open(fileobj=cast(IO[bytes], plain), mode="r|", bufsize=CHUNK) as tar:
                    for m in tar:
                        if not m.isfile():
                            raise BackupError(f"the backup holds a non-file entry {m.name!r}")
                        files[m.name] = _safe_name(m.name)
                        tar.extract(m, x, filter="data")
            except tarfile.TarError:
                raise BackupError("the backup's archive is damaged") from None
            plain.finish()
        try:
            manifest = json.loads((x / "manifest.json").read_bytes()) if "manifest.json" in files else None
        except ValueError:
            manifest = None
        if not isinstance(manifest, dict):
            raise BackupError("the backup has no manifest")
        x = work / "x"
        restore_database(x / "db", manifest.get("database", ""))
        for name, p in files.items():
            if p.parts[0] != "instance":
                continue
            dest = folder.joinpath(*p.parts[1:])
            dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp_dest = dest.with_name(f".{dest.name}.restoring")
            fd = os.open(tmp_dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write((x / name).read_bytes())
            os.replace(tmp_dest, dest)
    # every process re-reads what the restored data changed (cached keys, systems, deny list)
    _bump_generations(app)
    return manifest


def _bump_generations(app: Flask) -> None:
    try:
        from .cache import generations

        for gen in generations():  # systems, the token deny list, signing keys, ... (declared by the packages)
            gen.bump(app)
    except Exception:  # a stopped service re-reads everything when it starts anyway
        logging.getLogger(__name__).warning("could not bump the cache generations", exc_info=True)
    app.extensions.pop("tongban.audit_keys", None)


# ---------------------------------------------------------------- CLI

backup_cli = AppGroup("backup", help="Encrypted backups: the database and the instance secrets.")


def _passphrase() -> str:
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise BackupError("give the passphrase on the first line of stdin")
    return line


@backup_cli.command("create")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@with_appcontext
def create_cmd(file: Path):
    """Write an encrypted backup to FILE (passphrase: first line of stdin)."""
    try:
        manifest = create(file, _passphrase())
    except BackupError as e:
        click.echo(f"error: {e.message}", err=True)
        sys.exit(1)
    click.echo(json.dumps({"file": str(file), "database": manifest["database"],
                           "instance_files": len(manifest["instance_files"])}))


@backup_cli.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@with_appcontext
def restore_cmd(file: Path):
    """Replace the database and instance secrets with FILE's (passphrase: first line of stdin)."""
    try:
        manifest = restore(file, _passphrase())
    except BackupError as e:
        click.echo(f"error: {e.message}", err=True)
        sys.exit(1)
    click.echo(json.dumps({"restored": str(file), "created": manifest.get("created"),
                           "database": manifest.get("database")}))


def init_app(app: Flask) -> None:
    app.cli.add_command(backup_cli)
