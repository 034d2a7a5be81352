"""Where the service keeps run records, sessions and insights: one small protocol, two stores.

A record is a JSON-able dict. A write returns only once the store has it (SQLite: the
transaction committed; Redis: the server answered, so with AOF on it survives a restart of
the Redis server). ``open_store(url)`` picks the store: ``sqlite:///path.db`` (the
embedded default; ``sqlite:///:memory:`` for a throw-away one) or ``redis://HOST:PORT/DB``
(``?retry_ms=N``: how long a command is retried while Redis is away, default 15000).
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import sqlite3
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse

from .._base.errors import ServiceError

INSIGHTS_KEPT = 1000  # per learner by default; older ones are dropped
DEFAULT_RETRY_MS = 15_000.0  # the Redis store retries a command this long (?retry_ms=N)


class Store(Protocol):
    """The service's persistence seam. Every method is a coroutine; records are dicts."""

    async def open(self) -> None:
        """Connect / create tables; called once before any other method."""

    async def close(self) -> None:
        """Release connections."""

    async def save_run(self, record: dict[str, Any]) -> None:
        """Insert or replace the run ``record["runId"]`` (keys: runId, status, createdMs, …)."""

    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The run's record, or None."""

    async def list_runs(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` runs (by createdMs), only those with ``status`` if given."""

    async def page_runs(
        self,
        *,
        status: str | None = None,
        plan_id: str | None = None,
        learner_id: str | None = None,
        since_ms: float | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of run summaries (``SUMMARY_FIELDS``), newest first (createdMs, then
        runId, descending), filtered; and the cursor of the next page (None on the last).
        Reads only the page, never every run."""

    async def interrupt_running(self, now_ms: float) -> list[str]:
        """Mark every run still ``running`` as ``interrupted`` (at start-up); returns their ids."""

    async def save_session(self, session: dict[str, Any]) -> None:
        """Insert or replace the session of ``session["learnerId"]``."""

    async def get_session(self, learner_id: str) -> dict[str, Any] | None:
        """The learner's latest session, or None."""

    async def list_sessions(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every learner's latest session (only those with ``status`` if given)."""

    async def add_insight(self, learner_id: str, insight: dict[str, Any]) -> None:
        """Append an insight to the learner's list (the newest ``insights_kept`` are kept)."""

    async def list_insights(self, learner_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The learner's newest ``limit`` insights, newest first."""

    async def add_responses(self, rows: list[dict[str, Any]]) -> None:
        """Append learners' responses (keys ``RESPONSE_FIELDS``; learning analytics)."""

    async def list_responses(
        self, *, learner_id: str | None = None, since_ms: float | None = None
    ) -> list[dict[str, Any]]:
        """Responses (of ``learner_id``, at or after ``since_ms`` when given), oldest first
        (by tsMs, then as added)."""

    async def count_responses(self) -> int:
        """How many responses the store holds."""

    async def runs_between(
        self, since_ms: float, until_ms: float, *, limit: int = 500, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of full run records created in [``since_ms``, ``until_ms``], oldest
        first (createdMs, then runId), and the cursor of the next page (None on the last):
        the twin pages through a window, never the whole history."""

    async def latest_run_ms(self) -> float | None:
        """The newest run's createdMs, or None when the store holds no run."""

    async def save_prediction(self, record: dict[str, Any]) -> None:
        """Insert or replace the twin's prediction ``record["id"]`` (keys: id, createdMs, …)."""

    async def get_prediction(self, prediction_id: str) -> dict[str, Any] | None:
        """The prediction, or None."""

    async def list_predictions(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest ``limit`` predictions (by createdMs), newest first."""


def open_store(url: str) -> Store:
    """The store for ``url``: ``sqlite:///FILE`` or ``redis://HOST:PORT/DB`` (not yet opened)."""
    if not isinstance(url, str):
        raise TypeError(f"store url must be a string, got {type(url).__name__}")
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        if not path:
            raise ServiceError(
                f"store url {url!r}: write sqlite:///FILE (e.g. sqlite:///orchkit.db, "
                "sqlite:////abs/path.db or sqlite:///:memory:)"
            )
        return SQLiteStore(path)
    if scheme in ("redis", "rediss", "unix"):
        url, retry_ms = _retry_option(url)
        return RedisStore(url, retry_for_ms=retry_ms)
    raise ServiceError(
        f"store url {url!r}: unknown scheme {scheme!r} (use sqlite:///FILE or redis://HOST:PORT/DB)"
    )


def _retry_option(url: str) -> tuple[str, float]:
    """``url`` without its ``retry_ms`` query parameter, and that parameter (the Redis
    store's retry window in ms, default 15000); ``ServiceError`` if it is not a number of
    ms in (0, 3600000]."""
    parts = urlparse(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = [v for k, v in query if k == "retry_ms"]
    if not given:
        return url, DEFAULT_RETRY_MS
    try:
        retry_ms = float(given[-1])
    except ValueError:
        retry_ms = math.nan
    if not 0 < retry_ms <= 3_600_000:
        raise ServiceError(
            f"store url: retry_ms={given[-1]!r:.40} must be a number of ms in (0, 3600000] "
            "(how long a Redis command is retried while Redis is away)"
        )
    rest = urlencode([(k, v) for k, v in query if k != "retry_ms"])
    return urlunparse(parts._replace(query=rest)), retry_ms


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), allow_nan=False, default=str)


# -- paging (the dashboard's run list): summaries only, keyset cursors --------------------

SUMMARY_FIELDS = (
    "runId",
    "planId",
    "status",
    "kind",
    "learnerId",
    "createdAt",
    "createdMs",
    "finishedAt",
    "durationMs",
    "error",
)
PAGE_SCAN_LIMIT = 5000  # Redis: records read per page at most (a rare filter: a short page)


def encode_cursor(created_ms: float, run_id: str) -> str:
    """The opaque cursor of the page after the run (``created_ms``, ``run_id``)."""
    text = json.dumps([created_ms, run_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """(createdMs, runId) of a cursor ``encode_cursor`` made; ValueError naming the field."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, run_id = json.loads(raw)
        if isinstance(created, bool) or not isinstance(created, (int, float)):
            raise TypeError
        if not isinstance(run_id, str):
            raise TypeError
        return float(created), run_id
    except (ValueError, TypeError, UnicodeDecodeError):
        raise ValueError(
            f"parameter 'cursor': {cursor!r:.60} is not a cursor this server gave (use the "
            "nextCursor of the previous page, or leave it out for the first page)"
        ) from None


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record.get(k) for k in SUMMARY_FIELDS}


# -- learners' responses (learning analytics, SPEC §18) -----------------------------------

RESPONSE_FIELDS = (
    "learnerId",  # who answered
    "skill",  # the concept the item exercises
    "correct",  # bool
    "tsMs",  # when the answer was scored, ms since the epoch
    "runId",  # the run that served it (None: a direct agent call without one)
    "activityId",
    "responseTimeMs",  # the learner's own time to answer, if the client said
    "source",  # "call" (a direct agent call) or "run" (a step of a plan run)
)


class SQLiteStore:
    """Runs, sessions and insights in one SQLite file (WAL).

    Each write is its own committed transaction, done on the event loop: with WAL and
    ``synchronous=NORMAL`` a commit appends to the log without waiting for the disk
    (~50 µs here), cheaper than a hop to a thread, which under load waits for the GIL (up to
    5 ms a hop). Every ~1000 pages of log SQLite checkpoints it into the database inside a
    commit, an fsync (measured here: 0.5% of writes took over 1 ms, the longest 7 ms). A
    committed write survives the server process being killed; a power cut may lose the last
    few (use the Redis store with AOF ``always`` for more).
    """

    def __init__(self, path: str | Path, *, insights_kept: int = INSIGHTS_KEPT):
        self.path = str(path)
        self.insights_kept = insights_kept
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives a process crash
            db.executescript("""
                CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, status TEXT NOT NULL,
                    created_ms REAL NOT NULL, record TEXT NOT NULL);
                CREATE INDEX IF NOT EXISTS runs_by_time ON runs (created_ms);
                CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, created_ms);
                CREATE INDEX IF NOT EXISTS runs_by_plan
                    ON runs (json_extract(record, '$.planId'), created_ms);
                CREATE INDEX IF NOT EXISTS runs_by_learner
                    ON runs (json_extract(record, '$.learnerId'), created_ms);
                CREATE TABLE IF NOT EXISTS sessions (learner_id TEXT PRIMARY KEY,
                    status TEXT NOT NULL, record TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS insights (id INTEGER PRIMARY KEY AUTOINCREMENT,
                    learner_id TEXT NOT NULL, record TEXT NOT NULL);
                CREATE INDEX IF NOT EXISTS insights_by_learner ON insights (learner_id, id);
                CREATE TABLE IF NOT EXISTS responses (id INTEGER PRIMARY KEY AUTOINCREMENT,
                    learner_id TEXT NOT NULL, ts_ms REAL NOT NULL, record TEXT NOT NULL);
                CREATE INDEX IF NOT EXISTS responses_by_learner ON responses (learner_id, ts_ms);
                CREATE INDEX IF NOT EXISTS responses_by_time ON responses (ts_ms);
                CREATE TABLE IF NOT EXISTS predictions (id TEXT PRIMARY KEY,
                    created_ms REAL NOT NULL, record TEXT NOT NULL);
                CREATE INDEX IF NOT EXISTS predictions_by_time ON predictions (created_ms);
            """)
            self._db = db
        except (sqlite3.Error, OSError) as exc:
            raise ServiceError(f"cannot open the SQLite store {self.path!r}: {exc}") from None

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def save_run(self, record: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?)",
            (record["runId"], record["status"], record["createdMs"], _dumps(record)),
        )

    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT record FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    async def list_runs(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        if status is None:
            sql, args = "SELECT record FROM runs ORDER BY created_ms DESC, run_id LIMIT ?", (limit,)
        else:
            sql = (
                "SELECT record FROM runs WHERE status = ? ORDER BY created_ms DESC, run_id LIMIT ?"
            )
            args = (status, limit)
        rows = self._db.execute(sql, args).fetchall()
        return [json.loads(r[0]) for r in rows]

    async def page_runs(
        self,
        *,
        status: str | None = None,
        plan_id: str | None = None,
        learner_id: str | None = None,
        since_ms: float | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        where, args = [], []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if plan_id is not None:  # the expression indexes runs_by_plan / runs_by_learner
            where.append("json_extract(record, '$.planId') = ?")
            args.append(plan_id)
        if learner_id is not None:
            where.append("json_extract(record, '$.learnerId') = ?")
            args.append(learner_id)
        if since_ms is not None:
            where.append("created_ms >= ?")
            args.append(since_ms)
        if cursor is not None:
            where.append("(created_ms, run_id) < (?, ?)")
            args.extend(decode_cursor(cursor))
        fields = ", ".join(f"'$.{k}'" for k in SUMMARY_FIELDS)
        sql = (
            f"SELECT run_id, created_ms, json_extract(record, {fields}) FROM runs"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY created_ms DESC, run_id DESC LIMIT ?"
        )
        rows = self._db.execute(sql, (*args, limit + 1)).fetchall()
        page = [dict(zip(SUMMARY_FIELDS, json.loads(r[2]))) for r in rows[:limit]]
        more = len(rows) > limit
        return page, encode_cursor(rows[limit - 1][1], rows[limit - 1][0]) if more else None

    @contextlib.contextmanager
    def _transaction(self):
        """Several statements as one committed transaction (rolled back on any error)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    async def interrupt_running(self, now_ms: float) -> list[str]:
        ids = []
        with self._transaction() as db:
            for (text,) in db.execute(
                "SELECT record FROM runs WHERE status = 'running'"
            ).fetchall():
                rec = _interrupted(json.loads(text), now_ms)
                db.execute(
                    "UPDATE runs SET status = ?, record = ? WHERE run_id = ?",
                    (rec["status"], _dumps(rec), rec["runId"]),
                )
                ids.append(rec["runId"])
        return ids

    async def save_session(self, session: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?)",
            (session["learnerId"], session["status"], _dumps(session)),
        )

    async def get_session(self, learner_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT record FROM sessions WHERE learner_id = ?", (learner_id,)
        ).fetchone()
        return None if row is None else json.loads(row[0])

    async def list_sessions(self, status: str | None = None) -> list[dict[str, Any]]:
        if status is None:
            sql, args = "SELECT record FROM sessions ORDER BY learner_id", ()
        else:
            sql, args = (
                "SELECT record FROM sessions WHERE status = ? ORDER BY learner_id",
                (status,),
            )
        rows = self._db.execute(sql, args).fetchall()
        return [json.loads(r[0]) for r in rows]

    async def add_insight(self, learner_id: str, insight: dict[str, Any]) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO insights (learner_id, record) VALUES (?, ?)",
                (learner_id, _dumps(insight)),
            )
            db.execute(
                "DELETE FROM insights WHERE learner_id = ? AND id NOT IN (SELECT id "
                "FROM insights WHERE learner_id = ? ORDER BY id DESC LIMIT ?)",
                (learner_id, learner_id, self.insights_kept),
            )

    async def list_insights(self, learner_id: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT record FROM insights WHERE learner_id = ? ORDER BY id DESC LIMIT ?",
            (learner_id, limit),
        ).fetchall()
        return [json.loads(r[0]) for r in rows]

    async def add_responses(self, rows: list[dict[str, Any]]) -> None:
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO responses (learner_id, ts_ms, record) VALUES (?, ?, ?)",
                [(r["learnerId"], r["tsMs"], _dumps(r)) for r in rows],
            )

    async def list_responses(
        self, *, learner_id: str | None = None, since_ms: float | None = None
    ) -> list[dict[str, Any]]:
        where, args = [], []
        if learner_id is not None:
            where.append("learner_id = ?")
            args.append(learner_id)
        if since_ms is not None:
            where.append("ts_ms >= ?")
            args.append(since_ms)
        sql = (
            "SELECT record FROM responses"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY ts_ms, id"
        )
        return [json.loads(r[0]) for r in self._db.execute(sql, args).fetchall()]

    async def count_responses(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    async def runs_between(
        self, since_ms: float, until_ms: float, *, limit: int = 500, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        where, args = ["created_ms >= ?", "created_ms <= ?"], [since_ms, until_ms]
        if cursor is not None:
            where.append("(created_ms, run_id) > (?, ?)")
            args.extend(decode_cursor(cursor))
        rows = self._db.execute(
            "SELECT run_id, created_ms, record FROM runs WHERE "
            + " AND ".join(where)
            + " ORDER BY created_ms, run_id LIMIT ?",
            (*args, limit + 1),
        ).fetchall()
        page = [json.loads(r[2]) for r in rows[:limit]]
        more = len(rows) > limit
        return page, encode_cursor(rows[limit - 1][1], rows[limit - 1][0]) if more else None

    async def latest_run_ms(self) -> float | None:
        row = self._db.execute("SELECT MAX(created_ms) FROM runs").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    async def save_prediction(self, record: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO predictions VALUES (?, ?, ?)",
            (record["id"], record["createdMs"], _dumps(record)),
        )

    async def get_prediction(self, prediction_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT record FROM predictions WHERE id = ?", (prediction_id,)
        ).fetchone()
        return None if row is None else json.loads(row[0])

    async def list_predictions(self, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT record FROM predictions ORDER BY created_ms DESC, id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [json.loads(r[0]) for r in rows]


def _interrupted(record: dict[str, Any], now_ms: float) -> dict[str, Any]:
    return {
        **record,
        "status": "interrupted",
        "finishedMs": now_ms,
        "error": "the server stopped while this run was in flight",
    }


class RedisStore:
    """Runs, sessions and insights in Redis (redis-py asyncio), under the ``orchkit:`` prefix.

    Keys (``prefix`` first): ``run:<id>`` (JSON), ``runs`` (sorted set by createdMs),
    ``runs:running`` (set), ``session:<learnerId>`` (JSON), ``sessions`` (set),
    ``insights:<learnerId>`` (list, newest first), ``responses`` and
    ``responses:<learnerId>`` (sorted sets by tsMs of JSON members, each with its ``seq``
    from the counter ``responses:seq``, so no two are equal), ``prediction:<id>`` (JSON) and
    ``predictions`` (sorted set by createdMs; the twin's).
    A command that meets a lost connection is retried with backoff for up to
    ``retry_for_ms`` (a Redis restart; ``?retry_ms=N`` in the store URL), so a write is
    acknowledged only once Redis has it. Past that window the command fails; the service
    then keeps the record and retries it until written (``Service``'s outbox).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "orchkit:",
        retry_for_ms: float = DEFAULT_RETRY_MS,
        insights_kept: int = INSIGHTS_KEPT,
    ):
        self.url = url
        self.PREFIX = prefix
        self.retry_for_ms = retry_for_ms
        self.insights_kept = insights_kept
        self._r: Any = None

    async def open(self) -> None:
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import ExponentialBackoff
            from redis.exceptions import ConnectionError, TimeoutError
        except ImportError:
            raise ServiceError(
                "the Redis store needs redis-py: pip install 'orchkit[server]'"
            ) from None
        retries = max(1, int(self.retry_for_ms / 250))
        self._r = aioredis.from_url(
            self.url,
            decode_responses=True,
            socket_connect_timeout=2,
            retry=Retry(ExponentialBackoff(cap=0.25, base=0.01), retries),
            retry_on_error=[ConnectionError, TimeoutError, OSError],
        )
        try:
            await self._r.ping()
        except Exception as exc:  # noqa: BLE001 - any failure here is "cannot reach it"
            await self._r.aclose()
            raise ServiceError(f"cannot reach the Redis store at {self.url}: {exc}") from None

    async def close(self) -> None:
        if self._r is not None:
            await self._r.aclose()
            self._r = None

    async def save_run(self, record: dict[str, Any]) -> None:
        p, rid = self.PREFIX, record["runId"]
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(f"{p}run:{rid}", _dumps(record))
            pipe.zadd(f"{p}runs", {rid: record["createdMs"]})
            if record["status"] == "running":
                pipe.sadd(f"{p}runs:running", rid)
            else:
                pipe.srem(f"{p}runs:running", rid)
            await pipe.execute()

    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        text = await self._r.get(f"{self.PREFIX}run:{run_id}")
        return None if text is None else json.loads(text)

    async def list_runs(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        start, page = 0, max(limit, 100)
        while len(out) < limit:
            ids = await self._r.zrevrange(f"{self.PREFIX}runs", start, start + page - 1)
            if not ids:
                break
            texts = await self._r.mget([f"{self.PREFIX}run:{i}" for i in ids])
            for text in texts:
                if text is not None:
                    rec = json.loads(text)
                    if status is None or rec.get("status") == status:
                        out.append(rec)
            start += page
        return out[:limit]

    async def page_runs(
        self,
        *,
        status: str | None = None,
        plan_id: str | None = None,
        learner_id: str | None = None,
        since_ms: float | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The sorted set ``runs`` walked newest first from the cursor, in batches; the
        filters other than time apply to the records read, at most ``PAGE_SCAN_LIMIT`` of
        them per page (then the page may be short, with a cursor to go on from)."""
        key = f"{self.PREFIX}runs"
        after = None if cursor is None else decode_cursor(cursor)
        top = "+inf" if after is None else repr(after[0])
        low = "-inf" if since_ms is None else repr(float(since_ms))
        page: list[dict[str, Any]] = []
        offset, scanned, last = 0, 0, None
        batch = min(max(limit + 1, 100), 1000)
        while scanned < PAGE_SCAN_LIMIT:
            pairs = await self._r.zrevrangebyscore(
                key, top, low, start=offset, num=batch, withscores=True
            )
            if not pairs:
                return page, None
            offset += len(pairs)
            if after is not None:  # ties at the cursor's time: only those after it
                pairs = [(m, s) for m, s in pairs if s < after[0] or m < after[1]]
            texts = await self._r.mget([f"{self.PREFIX}run:{m}" for m, _ in pairs])
            for (member, score), text in zip(pairs, texts):
                scanned += 1
                if text is None:
                    continue
                rec = json.loads(text)
                if (
                    (status is None or rec.get("status") == status)
                    and (plan_id is None or rec.get("planId") == plan_id)
                    and (learner_id is None or rec.get("learnerId") == learner_id)
                ):
                    if len(page) == limit:  # one more exists: this page is full
                        tail = page[-1]
                        return page, encode_cursor(tail["createdMs"], tail["runId"])
                    page.append(_summary(rec))
                last = (score, member)
        return page, None if last is None else encode_cursor(*last)

    async def interrupt_running(self, now_ms: float) -> list[str]:
        p = self.PREFIX
        ids = sorted(await self._r.smembers(f"{p}runs:running"))
        for rid in ids:
            rec = await self.get_run(rid)
            if rec is not None and rec.get("status") == "running":
                await self.save_run(_interrupted(rec, now_ms))
            else:
                await self._r.srem(f"{p}runs:running", rid)
        return ids

    async def save_session(self, session: dict[str, Any]) -> None:
        p, lid = self.PREFIX, session["learnerId"]
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(f"{p}session:{lid}", _dumps(session))
            pipe.sadd(f"{p}sessions", lid)
            await pipe.execute()

    async def get_session(self, learner_id: str) -> dict[str, Any] | None:
        text = await self._r.get(f"{self.PREFIX}session:{learner_id}")
        return None if text is None else json.loads(text)

    async def list_sessions(self, status: str | None = None) -> list[dict[str, Any]]:
        ids = sorted(await self._r.smembers(f"{self.PREFIX}sessions"))
        if not ids:
            return []
        texts = await self._r.mget([f"{self.PREFIX}session:{i}" for i in ids])
        recs = [json.loads(t) for t in texts if t is not None]
        return [r for r in recs if status is None or r.get("status") == status]

    async def add_insight(self, learner_id: str, insight: dict[str, Any]) -> None:
        key = f"{self.PREFIX}insights:{learner_id}"
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.lpush(key, _dumps(insight))
            pipe.ltrim(key, 0, self.insights_kept - 1)
            await pipe.execute()

    async def list_insights(self, learner_id: str, limit: int = 100) -> list[dict[str, Any]]:
        texts = await self._r.lrange(f"{self.PREFIX}insights:{learner_id}", 0, limit - 1)
        return [json.loads(t) for t in texts]

    async def add_responses(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        p = self.PREFIX
        last = await self._r.incrby(f"{p}responses:seq", len(rows))
        async with self._r.pipeline(transaction=True) as pipe:
            for seq, row in enumerate(rows, start=last - len(rows) + 1):
                member = {_dumps({**row, "seq": seq}): row["tsMs"]}
                pipe.zadd(f"{p}responses", member)
                pipe.zadd(f"{p}responses:{row['learnerId']}", member)
            await pipe.execute()

    async def list_responses(
        self, *, learner_id: str | None = None, since_ms: float | None = None
    ) -> list[dict[str, Any]]:
        key = f"{self.PREFIX}responses" + ("" if learner_id is None else f":{learner_id}")
        low = "-inf" if since_ms is None else repr(float(since_ms))
        rows = [json.loads(t) for t in await self._r.zrangebyscore(key, low, "+inf")]
        rows.sort(key=lambda r: (r["tsMs"], r.pop("seq")))
        return rows

    async def count_responses(self) -> int:
        return int(await self._r.zcard(f"{self.PREFIX}responses"))

    async def runs_between(
        self, since_ms: float, until_ms: float, *, limit: int = 500, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The sorted set ``runs`` walked oldest first from the cursor (ties at the
        cursor's time: those after its run id)."""
        key = f"{self.PREFIX}runs"
        after = None if cursor is None else decode_cursor(cursor)
        low = repr(float(since_ms)) if after is None else repr(max(after[0], float(since_ms)))
        num = limit + 1
        while True:
            pairs = await self._r.zrangebyscore(
                key, low, repr(float(until_ms)), start=0, num=num, withscores=True
            )
            kept = [(m, sc) for m, sc in pairs if after is None or sc > after[0] or m > after[1]]
            if len(kept) > limit or len(pairs) < num:
                break
            num *= 2  # many runs tied at the cursor's time: read past them
        texts = (
            await self._r.mget([f"{self.PREFIX}run:{m}" for m, _ in kept[:limit]]) if kept else []
        )
        page = [json.loads(t) for t in texts if t is not None]
        if len(kept) > limit:
            member, score = kept[limit - 1]
            return page, encode_cursor(score, member)
        return page, None

    async def latest_run_ms(self) -> float | None:
        top = await self._r.zrevrange(f"{self.PREFIX}runs", 0, 0, withscores=True)
        return float(top[0][1]) if top else None

    async def save_prediction(self, record: dict[str, Any]) -> None:
        p, pid = self.PREFIX, record["id"]
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(f"{p}prediction:{pid}", _dumps(record))
            pipe.zadd(f"{p}predictions", {pid: record["createdMs"]})
            await pipe.execute()

    async def get_prediction(self, prediction_id: str) -> dict[str, Any] | None:
        text = await self._r.get(f"{self.PREFIX}prediction:{prediction_id}")
        return None if text is None else json.loads(text)

    async def list_predictions(self, limit: int = 1000) -> list[dict[str, Any]]:
        ids = await self._r.zrevrange(f"{self.PREFIX}predictions", 0, limit - 1)
        if not ids:
            return []
        texts = await self._r.mget([f"{self.PREFIX}prediction:{i}" for i in ids])
        return [json.loads(t) for t in texts if t is not None]
