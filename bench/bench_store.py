"""Building a large store for a benchmark: the product's own path, then the documented bulk copy.

    from bench_store import BenchStore          # bench/ is on sys.path when a benchmark runs
    store = BenchStore.create(work, database_url=None)   # SQLite under work/home, or a fresh PG database
    store.grow_to(100_000, product_up_to=10_000, batch=2_000)
    ...; store.close(keep=False)

How a store grows (`BenchStore.grow_to`):
- up to `product_up_to` enquiries, the product's path: each batch is a new mbox (unique senders, about
  8 % replies to earlier mails, 4 % re-deliveries; bench_growth.write_batch) that `triage import`
  stores and `triage run --direct` processes with the starter model, each a real command;
- past that, `bulk_copy`: the product-made rows of every table an enquiry touches (raw record,
  enquiry, thread messages, audit rows, SLA timers, review item, CRM outbox, local lead and task) are
  copied in SQL, `INSERT ... SELECT` a round at a time, with fresh ids and keys (so dedupe and
  threading keys stay unique) and the same timestamps, lanes, intents and bytes. The counting
  triggers fire on these rows as on any other;
- the last `repeat` batches of every size are always product batches: the median of their rates is
  the ingest figure (one batch of 2,000 varied by 15 % from one run to the next on this machine).
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_growth import ROOT, ingest_batch, write_batch  # bench/ is on sys.path

sys.path.insert(0, str(ROOT))

# What a copied row changes: every unique or lookup key gets the round's suffix, ids are remapped.
SUFFIXED = {
    "raw_records": ("external_key",),
    "enquiries": ("message_key", "thread_key"),
    "enquiry_messages": ("message_key",),
    "crm_outbox": ("idempotency_key",),
    "crm_tasks": ("idempotency_key",),
}
ENQUIRY_REFS = {
    "raw_records": "enquiry_id",
    "enquiries": "id",
    "enquiry_messages": "enquiry_id",
    "decisions": "enquiry_id",
    "sla_timers": "enquiry_id",
    "review_items": "enquiry_id",
    "crm_outbox": "enquiry_id",
    "crm_leads": "external_id",
    "crm_tasks": "lead_external_id",
}
RAW_REFS = {"enquiries": "raw_id", "enquiry_messages": "raw_id"}
HASHES = {"enquiries": "content_hash", "enquiry_messages": "content_hash"}
COPY_ORDER = tuple(ENQUIRY_REFS)
MAX_ROUND = 0xFFFFFF  # six hex characters of round number in a copied enquiry id


def copied_enquiry_id(column: str, round_no: int) -> str:
    """SQL for the id of round `round_no`'s copy of an enquiry id (a uuid5 as 32 hex characters).

    The version nibble (character 13, always '5' in a product-made id) becomes '0', and the last six
    characters become the round: a copy never equals a product-made id, and two copies are equal only
    if their originals share 25 leading characters (100 random bits) and the round. (Replacing only
    the last six characters, as before, made round r's copy of an original ending in r's hex equal to
    that original: about one primary-key clash per 16M copies.)"""
    if not 0 < round_no <= MAX_ROUND:
        raise ValueError(f"round {round_no} is outside 1..{MAX_ROUND}")
    return (
        f"CASE WHEN {column} IS NULL THEN NULL ELSE "
        f"substr({column}, 1, 12) || '0' || substr({column}, 14, 13) || '{round_no:06x}' END"
    )


def copied_hash(column: str, round_no: int) -> str:
    """A 64-character content hash with its last 6 characters replaced by the round (an index, not
    a unique key: a copy must simply not look like a re-delivery of its original)."""
    return f"CASE WHEN {column} IS NULL THEN NULL ELSE substr({column}, 1, 58) || '{round_no:06x}' END"


def bulk_copy(engine: Any, rounds: int, *, start_round: int, enquiries_per_round: int | None = None) -> int:
    """Copy the product-made rows `rounds` times (round numbers from `start_round`); returns enquiries
    added. `enquiries_per_round` copies only the first that many enquiries (and their rows).

    Raw record ids are dense: each round's copies take the ids right after the current largest, in
    the originals' order (`bulk_raw` numbers them 1..n), so ids grow by exactly the rows added. The
    earlier scheme shifted by `round * (max id + 1)` with max id read again at every call, so the
    shift grew geometrically with the calls and ran past PostgreSQL's 32-bit integer (and, with a small
    product base, SQLite's 64 bits) long before 1M enquiries."""
    import sqlalchemy as sa

    from store.tables import Base

    tables = Base.metadata.tables
    postgresql = engine.dialect.name == "postgresql"
    added = 0
    with engine.begin() as connection:
        # The originals: product-made enquiries (not earlier copies), optionally the first N of them.
        base_ids = (
            "SELECT enquiries.id FROM enquiries JOIN raw_records ON raw_records.id = enquiries.raw_id "
            "WHERE raw_records.source NOT LIKE 'bulk:%' ORDER BY enquiries.id"
            + (f" LIMIT {enquiries_per_round}" if enquiries_per_round else "")
        )
        for temporary in ("bulk_base", "bulk_raw"):
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {temporary}"))
        connection.execute(sa.text(f"CREATE TEMPORARY TABLE bulk_base AS {base_ids}"))
        connection.execute(
            sa.text("CREATE TEMPORARY TABLE bulk_raw (old_id BIGINT PRIMARY KEY, n BIGINT NOT NULL)")
        )
        connection.execute(
            sa.text(
                "INSERT INTO bulk_raw (old_id, n) SELECT id, row_number() OVER (ORDER BY id) "
                "FROM raw_records WHERE enquiry_id IN (SELECT id FROM bulk_base) AND source NOT LIKE 'bulk:%'"
            )
        )
        per_round = int(connection.scalar(sa.text("SELECT count(*) FROM bulk_base")) or 0)
        for round_no in range(start_round, start_round + rounds):
            offset = int(connection.scalar(sa.text("SELECT max(id) FROM raw_records")) or 0)
            for name in COPY_ORDER:
                columns, values = _copy_columns(tables[name], name, round_no, offset)
                ref = ENQUIRY_REFS[name]
                source = f"{name} WHERE {ref} IN (SELECT id FROM bulk_base)"
                if name == "raw_records":
                    source = f"{name} JOIN bulk_raw ON bulk_raw.old_id = {name}.id"
                connection.execute(
                    sa.text(
                        f"INSERT INTO {name} ({', '.join(columns)}) SELECT {', '.join(values)} FROM {source}"
                    )
                )
            added += per_round
        connection.execute(sa.text("DROP TABLE bulk_base"))
        connection.execute(sa.text("DROP TABLE bulk_raw"))
        if postgresql:  # explicit ids above: move the sequence past them
            connection.execute(
                sa.text(
                    "SELECT setval(pg_get_serial_sequence('raw_records', 'id'), "
                    "(SELECT max(id) FROM raw_records))"
                )
            )
    with engine.connect() as connection:
        connection.execute(sa.text("ANALYZE"))
        connection.commit()
    return added


def _copy_columns(table: Any, name: str, round_no: int, offset: int) -> tuple[list[str], list[str]]:
    """The insert's columns and the select's expression for each: keys remapped for the round."""
    columns, values = [], []
    for column in table.columns:
        if column.primary_key and column.autoincrement is not False and name != "enquiries":
            if name == "raw_records":  # explicit and dense (see bulk_copy); other tables' ids are new
                columns.append("id")
                values.append(f"{offset} + bulk_raw.n")
            continue
        expression = f"{name}.{column.name}"
        if column.name == ENQUIRY_REFS[name]:
            expression = copied_enquiry_id(expression, round_no)
        elif column.name in SUFFIXED.get(name, ()):
            expression = f"{expression} || '#{round_no}'"  # NULL stays NULL
        elif column.name == RAW_REFS.get(name):
            expression = f"{offset} + (SELECT n FROM bulk_raw WHERE bulk_raw.old_id = {expression})"
        elif column.name == HASHES.get(name):
            expression = copied_hash(expression, round_no)
        elif name == "raw_records" and column.name == "source":
            expression = f"'bulk:' || {expression}"
        columns.append(column.name)
        values.append(expression)
    return columns, values


def load_corpus() -> tuple[list[str], list[str]]:
    """The texts (starter training data) and sender domains the generated mails are made of."""
    with (ROOT / "models" / "starter_data" / "train.csv").open(encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    with (ROOT / "connectors" / "data" / "firmographics.csv").open(encoding="utf-8") as handle:
        domains = [row["domain"] for row in csv.DictReader(handle)] + ["gmail.com", "outlook.com"]
    return texts, domains


def settle(engine: Any) -> None:
    """Let a fresh bulk copy settle as a store that grew over a year has: SQLite's WAL checkpointed,
    PostgreSQL's statistics gathered and its dirty buffers written, and the OS's dirty pages on disk.
    Without it, the first product batch after a copy to 1M ran at 66-68 records/s on SQLite in two
    builds, and the same kept store at 250-330 a few minutes later."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql("ANALYZE")
            connection.exec_driver_sql("CHECKPOINT")
        else:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    os.sync()


def median_batch(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """The batch with the median ingest rate, and the range of the rates beside it."""
    ordered = sorted(batches, key=lambda b: b["ingest_per_s"])
    rates = [b["ingest_per_s"] for b in ordered]
    return {**ordered[len(ordered) // 2], "batches": len(ordered), "ingest_range": [rates[0], rates[-1]]}


@dataclass
class BenchStore:
    """One benchmark store: its TRIAGE_HOME, its database, and how far the generated mail has got."""

    work: Path
    env: dict[str, str]
    admin_url: str | None = None  # the PostgreSQL server the database was made on (dropped at close)
    database: str | None = None
    offset: int = 0  # mails written so far (their numbers keep senders and message ids unique)
    bulk_round: int = 1
    rng: random.Random = field(default_factory=lambda: random.Random(15))
    corpus: tuple[list[str], list[str]] = field(default_factory=load_corpus)
    # Every product batch so far, in order: the first ones, into the empty store, are the baseline.
    batches: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def create(cls, work: Path, *, database_url: str | None = None, name: str = "bench") -> BenchStore:
        """A new, empty store with the starter model: SQLite under work/home, or a fresh database on
        the PostgreSQL server at `database_url`."""
        work.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TRIAGE_HOME": str(work / "home"), "PYTHONPATH": str(ROOT)}
        env.pop("TRIAGE_DATABASE_URL", None)
        store = cls(work=work, env=env)
        if database_url:
            import psycopg

            store.admin_url, store.database = database_url, f"{name}_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(database_url, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{store.database}"')
            env["TRIAGE_DATABASE_URL"] = database_url.rsplit("/", 1)[0] + f"/{store.database}"
        subprocess.run(
            [sys.executable, "-c", "from pipeline.runtime import Runtime; from pipeline import jobs; "
             "jobs.ensure_starter_model(Runtime())"],
            env=env, cwd=ROOT, check=True, capture_output=True,
        )  # fmt: skip
        return store

    @classmethod
    def reuse(cls, work: Path, where: str) -> BenchStore:
        """An already-built store: a PostgreSQL URL, a TRIAGE_HOME folder, or a SQLite file. Nothing
        is built into it; `close` leaves it as it is."""
        work.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("TRIAGE_DATABASE_URL", None)
        path = Path(where)
        if where.startswith("postgresql"):
            env["TRIAGE_HOME"] = str(work / "home")
            env["TRIAGE_DATABASE_URL"] = where
        elif path.is_dir():
            if not (path / "triage.db").exists() and "TRIAGE_DATABASE_URL" not in os.environ:
                raise SystemExit(f"{path} holds no triage.db")
            env["TRIAGE_HOME"] = str(path)
        elif path.is_file():
            env["TRIAGE_HOME"] = str(work / "home")
            env["TRIAGE_DATABASE_URL"] = f"sqlite:///{path.resolve()}"
        else:
            raise SystemExit(f"--reuse {where}: not a PostgreSQL URL, a TRIAGE_HOME folder or a SQLite file")
        return cls(work=work, env=env)

    @property
    def database_url(self) -> str:
        return (
            self.env.get("TRIAGE_DATABASE_URL") or f"sqlite:///{Path(self.env['TRIAGE_HOME']) / 'triage.db'}"
        )

    @property
    def backend(self) -> str:
        return "postgresql" if self.database_url.startswith("postgresql") else "sqlite"

    def enquiry_count(self) -> int:
        import sqlalchemy as sa

        from store.db import make_engine

        engine = make_engine(self.database_url)
        with engine.connect() as connection:
            count = int(connection.scalar(sa.text("SELECT count(*) FROM enquiries")) or 0)
        engine.dispose()
        return count

    def product_batch(self, n: int) -> dict[str, Any]:
        """`triage import` then `triage run --direct` of `n` new mails: the ingest rate of the batch."""
        path = self.work / f"batch-{self.offset}.mbox"
        texts, domains = self.corpus
        write_batch(path, self.offset, n, self.rng, texts, domains)
        batch = {"batch": n, **ingest_batch(path, n, self.env)}
        self.offset += n
        self.batches.append(batch)
        return batch

    def empty_figure(self, repeat: int) -> dict[str, Any] | None:
        """The baseline: the median of the first `repeat` product batches, made from the empty store."""
        return median_batch(self.batches[:repeat]) if len(self.batches) >= repeat else None

    def grow_to(
        self, target: int, *, product_up_to: int, batch: int, repeat: int = 1
    ) -> tuple[str, dict[str, Any]]:
        """Grow the store to about `target` enquiries; returns how it was made and the median figures of
        its last `repeat` (product) batches. Product batches up to `product_up_to`, bulk copies past it."""
        from store.db import make_engine

        made = "product"
        last = batch * repeat
        while self.enquiry_count() < min(target, product_up_to) - last:
            self.product_batch(batch)
        have = self.enquiry_count()
        if target - last > have:
            made = "product + bulk copy"
            engine = make_engine(self.database_url)
            while (have := self.enquiry_count()) < target - last:
                base = min(product_up_to, have)
                want = target - last - have
                rounds = min(5, max(1, want // base))
                bulk_copy(engine, rounds, start_round=self.bulk_round,
                          enquiries_per_round=None if want >= base else want)  # fmt: skip
                self.bulk_round += rounds
            # The copies' triggers left millions of counter deltas. The pipeline folds after every
            # run, a few thousand at a time; folding them here keeps the next product batch's figure
            # the ingest's, not a once-only fold of the whole copy.
            from store import counters
            from store.db import make_session_factory

            with make_session_factory(engine)() as session:
                counters.fold(session)
            settle(engine)
            engine.dispose()
        return made, median_batch([self.product_batch(batch) for _ in range(repeat)])

    def close(self, *, keep: bool) -> str | None:
        """Remove the store (and drop its PostgreSQL database), or keep it and say where it is."""
        if keep:
            where = f"TRIAGE_HOME={self.env['TRIAGE_HOME']}"
            return (
                f"TRIAGE_DATABASE_URL={self.env['TRIAGE_DATABASE_URL']} {where}" if self.database else where
            )
        shutil.rmtree(self.work, ignore_errors=True)
        if self.database and self.admin_url:
            import psycopg

            with psycopg.connect(self.admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        return None
