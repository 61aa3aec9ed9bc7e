"""The service's state: one SQLite database in WAL mode (``DIR/service.db``) of tenants, hashed
tokens, jobs and workers, shared by the web process and every worker.

The job queue is the ``jobs`` table. A worker claims the oldest queued job, or a running job
whose lease has expired (its worker died), with one ``UPDATE ... RETURNING`` inside a
``BEGIN IMMEDIATE`` transaction, so two workers never claim the same job; it then renews the
lease while it works. WAL lets the web process read while a worker writes. Times are Unix
seconds (floats). See docs/service.md for why this is a table and not a queue library.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATABASE_FILE = "service.db"
TOKEN_PREFIX = "mrb_"
ACTIVE = ("queued", "running")
FINISHED = ("done", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, created REAL NOT NULL, max_job_seconds REAL);
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants(id), hash TEXT UNIQUE NOT NULL,
    prefix TEXT NOT NULL, created REAL NOT NULL, revoked REAL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants(id), status TEXT NOT NULL,
    created REAL NOT NULL, started REAL, finished REAL, updated REAL NOT NULL,
    request TEXT NOT NULL, stage TEXT, stage_done INTEGER, stage_total INTEGER, stage_started REAL,
    stages_finished INTEGER NOT NULL DEFAULT 0, error TEXT, skipped TEXT, headline TEXT,
    worker TEXT, lease_until REAL, attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0, delete_requested INTEGER NOT NULL DEFAULT 0,
    stored_bytes INTEGER NOT NULL DEFAULT 0, time_limit_s REAL, max_attempts INTEGER,
    compute_s REAL NOT NULL DEFAULT 0, attempt_error TEXT);
CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs(tenant_id, created DESC);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs(status, created);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL, started REAL NOT NULL, seen REAL NOT NULL,
    job_id TEXT);
"""

_ADDED_COLUMNS = (
    ("tenants", "max_job_seconds", "REAL"),
    ("jobs", "time_limit_s", "REAL"),
    ("jobs", "max_attempts", "INTEGER"),
    ("jobs", "compute_s", "REAL NOT NULL DEFAULT 0"),
    ("jobs", "attempt_error", "TEXT"),
)
"""Columns added since the first schema: a data directory made by an older version gets them at
start-up (``ALTER TABLE ... ADD COLUMN``)."""

DEFAULT_MAX_ATTEMPTS = 3
"""Attempts of a job queued without its own cap (by an older version)."""
GONE_WITHOUT_A_WORD = ("the worker running it stopped answering before it finished (killed, out of memory, or its "
                       "machine stopped)")


def hash_token(token: str) -> str:
    """SHA-256 of a token. Tokens are 256 random bits, so a fast hash is enough: there is
    nothing to guess that a slow hash would protect."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Tenant:
    id: int
    name: str


@dataclass(frozen=True)
class TokenInfo:
    id: int
    tenant: str
    prefix: str
    created: float
    revoked: float | None


class Store:
    """The database of one data directory. Thread-safe: each thread gets its own connection."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DATABASE_FILE
        self._local = threading.local()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.db.executescript(_SCHEMA)  # idempotent; executescript commits by itself
        self._add_new_columns()

    def _add_new_columns(self) -> None:
        with self.transaction() as db:  # the write lock: a web process and a worker starting together add each once
            for table, column, declaration in _ADDED_COLUMNS:
                if column not in {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    # ---- connections ------------------------------------------------------------------
    @property
    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock at once (``BEGIN IMMEDIATE``)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ---- tenants and tokens -------------------------------------------------------------
    def create_token(self, tenant: str) -> str:
        """A new token for ``tenant`` (created when new); returned once, stored hashed."""
        tenant = tenant.strip()
        if not tenant or len(tenant) > 100 or not tenant.isprintable():
            raise ValueError(f"tenant name {tenant!r}: give 1-100 printable characters, e.g. --tenant acme")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO tenants(name, created) VALUES (?, ?)", (tenant, now))
            tenant_id = db.execute("SELECT id FROM tenants WHERE name = ?", (tenant,)).fetchone()["id"]
            db.execute("INSERT INTO tokens(tenant_id, hash, prefix, created) VALUES (?, ?, ?, ?)",
                       (tenant_id, hash_token(token), token[:len(TOKEN_PREFIX) + 6], now))
        return token

    def tenant_for_token(self, token: str) -> Tenant | None:
        """The tenant a valid, unrevoked token belongs to; None otherwise."""
        row = self.db.execute(
            "SELECT tenants.id, tenants.name FROM tokens JOIN tenants ON tenants.id = tokens.tenant_id "
            "WHERE tokens.hash = ? AND tokens.revoked IS NULL", (hash_token(token),)).fetchone()
        return Tenant(row["id"], row["name"]) if row else None

    def set_tenant_job_seconds(self, tenant: str, seconds: float | None) -> bool:
        """Give ``tenant`` its own compute-time limit per job (None: the service's); False when
        there is no such tenant."""
        with self.transaction() as db:
            cur = db.execute("UPDATE tenants SET max_job_seconds = ? WHERE name = ?", (seconds, tenant))
            return cur.rowcount == 1

    def tenant_job_seconds(self, tenant: Tenant) -> float | None:
        """The tenant's own compute-time limit per job; None: the service's applies."""
        row = self.db.execute("SELECT max_job_seconds FROM tenants WHERE id = ?", (tenant.id,)).fetchone()
        return row["max_job_seconds"] if row else None

    def list_tokens(self, tenant: str | None = None) -> list[TokenInfo]:
        sql = ("SELECT tokens.id, tenants.name, prefix, tokens.created, revoked FROM tokens "
               "JOIN tenants ON tenants.id = tokens.tenant_id")
        rows = self.db.execute(sql + (" WHERE tenants.name = ?" if tenant else "") + " ORDER BY tokens.id",
                               (tenant,) if tenant else ()).fetchall()
        return [TokenInfo(r["id"], r["name"], r["prefix"], r["created"], r["revoked"]) for r in rows]

    def revoke_token(self, token_id: int | None = None, *, prefix: str | None = None) -> int:
        """Revoke the token with this id (or every token starting with ``prefix``); how many were revoked."""
        with self.transaction() as db:
            if token_id is not None:
                cur = db.execute("UPDATE tokens SET revoked = ? WHERE id = ? AND revoked IS NULL", (time.time(), token_id))
            else:
                cur = db.execute("UPDATE tokens SET revoked = ? WHERE prefix LIKE ? AND revoked IS NULL",
                                 (time.time(), (prefix or "") + "%"))
            return cur.rowcount

    # ---- jobs: the web side ---------------------------------------------------------------
    def new_job_id(self) -> str:
        return secrets.token_hex(8)

    def add_job(self, job_id: str, tenant: Tenant, request: dict[str, Any], stored_bytes: int,
                max_active_jobs: int, *, time_limit_s: float | None = None,
                max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> bool:
        """Queue a job unless the tenant already has ``max_active_jobs`` queued or running
        (checked in the same statement, so two uploads at once cannot both pass).
        ``time_limit_s``: its compute-time limit (None: none); ``max_attempts``: the workers
        that may take it before it fails."""
        now = time.time()
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO jobs(id, tenant_id, status, created, updated, request, stored_bytes, time_limit_s, "
                "max_attempts) SELECT ?, ?, 'queued', ?, ?, ?, ?, ?, ? WHERE (SELECT COUNT(*) FROM jobs WHERE "
                "tenant_id = ? AND status IN ('queued', 'running')) < ?",
                (job_id, tenant.id, now, now, json.dumps(request), stored_bytes, time_limit_s, max_attempts, tenant.id,
                 max_active_jobs))
            return cur.rowcount == 1

    def active_jobs(self, tenant: Tenant) -> int:
        return self.db.execute("SELECT COUNT(*) FROM jobs WHERE tenant_id = ? AND status IN ('queued', 'running')",
                               (tenant.id,)).fetchone()[0]

    def stored_bytes(self, tenant: Tenant) -> int:
        return self.db.execute("SELECT COALESCE(SUM(stored_bytes), 0) FROM jobs WHERE tenant_id = ?",
                               (tenant.id,)).fetchone()[0]

    def job(self, job_id: str, tenant: Tenant | None = None) -> sqlite3.Row | None:
        """The job's row; None when it does not exist or belongs to another tenant."""
        if tenant is None:
            return self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self.db.execute("SELECT * FROM jobs WHERE id = ? AND tenant_id = ?", (job_id, tenant.id)).fetchone()

    def job_ids_starting(self, prefix: str, tenant: Tenant, limit: int = 2) -> list[str]:
        """Ids of the tenant's jobs that start with ``prefix`` (lower-case hex), at most ``limit``."""
        if not prefix or any(c not in "0123456789abcdef" for c in prefix):
            return []
        rows = self.db.execute("SELECT id FROM jobs WHERE tenant_id = ? AND id >= ? AND id < ? ORDER BY id LIMIT ?",
                               (tenant.id, prefix, prefix + "g", limit)).fetchall()
        return [r["id"] for r in rows]

    def queue_positions(self) -> dict[str, int]:
        """``{job id: position}`` of the queued jobs, 1 the next a worker takes (the oldest first)."""
        rows = self.db.execute("SELECT id FROM jobs WHERE status = 'queued' AND cancel_requested = 0 "
                               "ORDER BY created, id").fetchall()
        return {r["id"]: i for i, r in enumerate(rows, 1)}

    def queue_position(self, row: sqlite3.Row) -> int | None:
        """The queued job's position (1: the next a worker takes); None when it is not queued."""
        if row["status"] != "queued" or row["cancel_requested"]:
            return None
        ahead = self.db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND cancel_requested = 0 AND "
                                "(created < ? OR (created = ? AND id < ?))",
                                (row["created"], row["created"], row["id"])).fetchone()[0]
        return ahead + 1

    def jobs(self, tenant: Tenant, limit: int, offset: int) -> tuple[list[sqlite3.Row], int]:
        rows = self.db.execute("SELECT * FROM jobs WHERE tenant_id = ? ORDER BY created DESC, id LIMIT ? OFFSET ?",
                               (tenant.id, limit, offset)).fetchall()
        total = self.db.execute("SELECT COUNT(*) FROM jobs WHERE tenant_id = ?", (tenant.id,)).fetchone()[0]
        return rows, total

    def request_cancel(self, job_id: str, *, delete: bool) -> str | None:
        """Ask a job to stop (and its files to go, with ``delete``). A job no worker holds (queued,
        or running with an expired lease: its worker died) is cancelled at once; a running one by
        its worker, which ends the job's process. Returns the status after."""
        now = time.time()
        with self.transaction() as db:
            db.execute("UPDATE jobs SET cancel_requested = 1, delete_requested = MAX(delete_requested, ?), updated = ? "
                       "WHERE id = ?", (int(delete), now, job_id))
            _cancel_unattended(db, now, job_id)
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row["status"] if row else None

    def cancel_unattended(self) -> None:
        """Cancel every job asked to stop that no worker holds any more (its worker died)."""
        with self.transaction() as db:
            _cancel_unattended(db, time.time())

    def forget_job(self, job_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def live_workers(self, within_s: float) -> int:
        return self.db.execute("SELECT COUNT(*) FROM workers WHERE seen > ?", (time.time() - within_s,)).fetchone()[0]

    # ---- jobs: the worker side --------------------------------------------------------------
    def register_worker(self, worker_id: str, pid: int, host: str) -> None:
        now = time.time()
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO workers(id, pid, host, started, seen) VALUES (?, ?, ?, ?, ?)",
                       (worker_id, pid, host, now, now))

    def worker_seen(self, worker_id: str, job_id: str | None) -> None:
        with self.transaction() as db:
            db.execute("UPDATE workers SET seen = ?, job_id = ? WHERE id = ?", (time.time(), job_id, worker_id))

    def remove_worker(self, worker_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM workers WHERE id = ?", (worker_id,))

    def claim(self, worker_id: str, lease_s: float) -> sqlite3.Row | None:
        """Take the oldest queued job, or a running one whose lease expired; None when there is none.

        A running job whose lease expired after its last allowed attempt (its worker died each
        time) is not taken again: it fails here, with the last attempt's error."""
        now = time.time()
        with self.transaction() as db:
            exhausted = db.execute(
                "SELECT id, attempts, attempt_error FROM jobs WHERE status = 'running' AND lease_until < ? AND "
                "cancel_requested = 0 AND attempts >= COALESCE(max_attempts, ?)", (now, DEFAULT_MAX_ATTEMPTS)).fetchall()
            for row in exhausted:
                db.execute("UPDATE jobs SET status = 'failed', finished = ?, updated = ?, error = ?, stage = NULL, "
                           "lease_until = NULL WHERE id = ?",
                           (now, now, attempts_error(row["attempts"], row["attempt_error"]), row["id"]))
            return db.execute(
                "UPDATE jobs SET status = 'running', worker = ?, lease_until = ?, started = COALESCE(started, ?), "
                "attempts = attempts + 1, updated = ? WHERE id = (SELECT id FROM jobs WHERE cancel_requested = 0 AND "
                "(status = 'queued' OR (status = 'running' AND lease_until < ?)) ORDER BY created, id LIMIT 1) "
                "RETURNING *", (worker_id, now + lease_s, now, now, now)).fetchone()

    def deleted_and_finished(self) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM jobs WHERE delete_requested = 1 AND status IN ('done', 'failed', "
                               "'cancelled')").fetchall()

    def renew_lease(self, job_id: str, worker_id: str, lease_s: float, compute_s: float | None = None) -> bool:
        """Extend the lease (and record the compute time used so far); False when the job is no
        longer this worker's (it was reclaimed)."""
        with self.transaction() as db:
            cur = db.execute("UPDATE jobs SET lease_until = ?, compute_s = COALESCE(?, compute_s) WHERE id = ? AND "
                             "worker = ? AND status = 'running'", (time.time() + lease_s, compute_s, job_id, worker_id))
            return cur.rowcount == 1

    def cancel_requested(self, job_id: str) -> bool:
        row = self.db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row is None or bool(row["cancel_requested"])

    def set_progress(self, job_id: str, worker_id: str, *, stage: str, done: int, total: int,
                     stage_started: float, stages_finished: int) -> None:
        with self.transaction() as db:
            db.execute("UPDATE jobs SET stage = ?, stage_done = ?, stage_total = ?, stage_started = ?, "
                       "stages_finished = ?, updated = ? WHERE id = ? AND worker = ?",
                       (stage, done, total, stage_started, stages_finished, time.time(), job_id, worker_id))

    def finish(self, job_id: str, worker_id: str | None, status: str, *, error: str | None = None,
               skipped: list[str] | None = None, headline: dict[str, Any] | None = None,
               stored_bytes: int | None = None, compute_s: float | None = None,
               failed_stage: str | None = None) -> bool:
        """Record the end of a job (only if it is still this worker's); False when it was not.
        A failed job keeps in ``stage`` the stage it failed in (``failed_stage``)."""
        assert status in FINISHED
        now = time.time()
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE jobs SET status = ?, finished = ?, updated = ?, error = ?, skipped = ?, headline = ?, "
                "stored_bytes = COALESCE(?, stored_bytes), compute_s = COALESCE(?, compute_s), stage = ?, "
                "lease_until = NULL WHERE id = ? AND (? IS NULL OR worker = ?)",
                (status, now, now, error, json.dumps(skipped or []), json.dumps(headline) if headline else None,
                 stored_bytes, compute_s, failed_stage if status == "failed" else None, job_id, worker_id, worker_id))
            return cur.rowcount == 1

    def release(self, job_id: str, worker_id: str, *, compute_s: float | None = None,
                attempt_error: str | None = None) -> None:
        """Give a running job back to the queue: the next worker resumes it. Without
        ``attempt_error`` its worker is stopping (a shutdown, not the job's fault: the attempt
        does not count against :meth:`claim`'s cap); with it, the attempt ended in that error
        (its process was killed) and counts."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET status = 'queued', worker = NULL, lease_until = NULL, updated = ?, "
                       "compute_s = COALESCE(?, compute_s), attempt_error = COALESCE(?, attempt_error), "
                       "attempts = CASE WHEN ? IS NULL THEN MAX(attempts - 1, 0) ELSE attempts END "
                       "WHERE id = ? AND worker = ? AND status = 'running'",
                       (time.time(), compute_s, attempt_error, attempt_error, job_id, worker_id))


def attempts_error(attempts: int, last_error: str | None) -> str:
    """A job's error when it is given up after ``attempts`` attempts that ended without a result."""
    return (f"stopped after {attempts} attempt{'s' if attempts != 1 else ''}, the most this service allows a job; "
            f"the last ended: {last_error or GONE_WITHOUT_A_WORD}. A job that keeps ending this way may need more "
            "memory than a worker has: try fewer or smaller images, or ask the service's administrator")


def _cancel_unattended(db: sqlite3.Connection, now: float, job_id: str | None = None) -> None:
    """Cancelled now: jobs asked to stop that no worker holds (queued, or running past their lease)."""
    db.execute("UPDATE jobs SET status = 'cancelled', finished = ?, updated = ?, stage = NULL, lease_until = NULL "
               "WHERE cancel_requested = 1 AND (status = 'queued' OR (status = 'running' AND lease_until < ?))"
               + (" AND id = ?" if job_id is not None else ""), (now, now, now) + ((job_id,) if job_id is not None else ()))
