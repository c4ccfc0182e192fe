"""IMAP intake benchmark: SpamAssassin corpus → Dovecot on 127.0.0.1 → ImapSource (+ parse_email).

    python bench/bench_imap.py [--json] [--batch-size 500] [--copies 1] [--end-to-end [--database-url URL]]

Starts a throwaway Dovecot (as the tests do), appends the 6,046 SpamAssassin mails (`--copies` times),
then reads them in a fresh child process, so that its peak RSS is the reader's alone and not the
corpus this parent process loaded to append. Reports mails per second for reading only and for reading
plus parsing, and the reader's peak memory. `--end-to-end` instead measures the real path: ImapSource →
`pipeline.intake.ingest_source` → `pipeline.process.process_pending` into stored enquiries (a fresh
SQLite file unless `--database-url` names an empty database), with the bundled policies and no model.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# Run as a plain script from anywhere: the repo's top-level packages must be importable.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from process_tree import PeakTreeMemory  # noqa: E402  (bench/ is on sys.path when a benchmark runs)

from connectors.imap import ImapSource  # noqa: E402
from connectors.mime import parse_email  # noqa: E402
from models.errors import SkippableError  # noqa: E402
from tests.support.dovecot import DovecotServer, append_messages, make_root, run_dovecot  # noqa: E402

CORPUS = REPO.parent / "shared" / "data" / "spamassassin"


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_reader(server: DovecotServer, folder: str, batch_size: int) -> dict[str, Any]:
    """Read the folder twice, without and with parsing; runs in the child process."""
    source = ImapSource(server.mailbox(folder=folder, batch_size=batch_size))
    started = time.perf_counter()
    read_only = sum(len(batch.records) for batch in source.read(None))
    read_seconds = time.perf_counter() - started

    outcomes = {"enquiry": 0, "skipped": 0, "rejected": 0}
    cpu_started = _cpu_seconds()
    started = time.perf_counter()
    for batch in source.read(None):
        for record in batch.records:
            try:
                enquiry = parse_email(record.payload, source=record.source, received_at=record.received_at)
            except SkippableError:
                outcomes["rejected"] += 1
                continue
            outcomes["skipped" if enquiry.skip_reason else "enquiry"] += 1
    parse_seconds = time.perf_counter() - started
    parse_cpu_seconds = _cpu_seconds() - cpu_started
    return {
        "mails": read_only,
        "read_mails_per_second": round(read_only / read_seconds, 1),
        "read_parse_mails_per_second": round(sum(outcomes.values()) / parse_seconds, 1),
        # Per second of this process's own CPU: steadier than wall time on a busy machine.
        "read_parse_mails_per_cpu_second": round(sum(outcomes.values()) / parse_cpu_seconds, 1),
        "outcomes": outcomes,
        "reader_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def measure_end_to_end(
    server: DovecotServer, folder: str, batch_size: int, database_url: str
) -> dict[str, Any]:
    """Mail in Dovecot → stored enquiries, through the pipeline's own functions; runs in the child."""
    import tempfile

    from config.settings import Settings
    from pipeline.intake import ingest_source
    from pipeline.process import process_pending
    from pipeline.runtime import Runtime

    # The real composition (policies, SLA timers, parse workers); no model: this measures intake.
    runtime = Runtime(Settings(home=Path(tempfile.mkdtemp(prefix="bench-imap-")), database_url=database_url))
    factory = runtime.factory
    context = runtime.pipeline_context()
    source = ImapSource(server.mailbox(folder=folder, batch_size=batch_size))
    with PeakTreeMemory(os.getpid()) as memory:  # this process and the workers it starts
        started = time.perf_counter()
        ingested = ingest_source(factory, source)
        ingest_seconds = time.perf_counter() - started
        processed = process_pending(factory, context, batch_size=batch_size)
        total_seconds = time.perf_counter() - started
    return {
        "mails": ingested.read,
        "ingest_mails_per_second": round(ingested.read / ingest_seconds, 1),
        "end_to_end_mails_per_second": round(ingested.read / total_seconds, 1),
        "outcomes": dict(processed.outcomes),
        "stage_seconds": processed.as_dict().get("stage_seconds", {}),
        "reader_peak_rss_mb": round(memory.peak_mb, 1),
    }


def main(argv: list[str] | None = None) -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--copies", type=int, default=1, help="append the corpus this many times")
    parser.add_argument("--end-to-end", action="store_true", help="measure into stored enquiries")
    parser.add_argument("--database-url", help="an empty database for --end-to-end (default: temp SQLite)")
    parser.add_argument("--reader", nargs=3, metavar=("PORT", "FOLDER", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.reader:  # child mode: measure and report as JSON on stdout
        port, folder, root = args.reader
        server = DovecotServer("127.0.0.1", int(port), "test", "secret", Path(root))
        if args.end_to_end:
            url = args.database_url or f"sqlite:///{Path(root) / 'bench.db'}"
            print(json.dumps(measure_end_to_end(server, folder, args.batch_size, url)))
        else:
            print(json.dumps(measure_reader(server, folder, args.batch_size)))
        return 0

    if not CORPUS.is_dir():
        print(f"{CORPUS} is absent: the SpamAssassin corpus is needed", file=sys.stderr)
        return 2
    raws = [path.read_bytes() for path in sorted(CORPUS.rglob("*.txt"))] * args.copies
    root = make_root("bench-dovecot-")
    try:
        with run_dovecot(root) as server:
            started = time.perf_counter()
            append_messages(server, "INBOX", raws)
            append_seconds = time.perf_counter() - started
            command = [sys.executable, __file__, "--batch-size", str(args.batch_size)]
            if args.end_to_end:
                command += ["--end-to-end"] + (
                    ["--database-url", args.database_url] if args.database_url else []
                )
            command += ["--reader", str(server.port), "INBOX", str(root)]
            child = subprocess.run(command, check=False, capture_output=True, text=True)
            if child.returncode != 0:
                print(child.stderr, file=sys.stderr)
                return child.returncode
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result: dict[str, Any] = json.loads(child.stdout)
    result.update(
        {
            "benchmark": "imap_end_to_end" if args.end_to_end else "imap_intake",
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "batch_size": args.batch_size,
            "append_seconds": round(append_seconds, 2),
            "corpus_mails": len(raws),
        }
    )
    if args.json:
        print(json.dumps(result))
    else:
        print(f"IMAP intake, {result['mails']} mails from Dovecot on 127.0.0.1 (batch {args.batch_size})")
        if args.end_to_end:
            print(f"  ingest (raw)    {result['ingest_mails_per_second']:>9,.0f} mails/s")
            print(f"  into enquiries  {result['end_to_end_mails_per_second']:>9,.0f} mails/s")
            print(f"  process stages  {result['stage_seconds']} (seconds)")
        else:
            print(f"  read only       {result['read_mails_per_second']:>9,.0f} mails/s")
            print(f"  read + parse    {result['read_parse_mails_per_second']:>9,.0f} mails/s")
            print(
                f"  read + parse    {result['read_parse_mails_per_cpu_second']:>9,.0f} mails per CPU second"
            )
        print(f"  reader peak RSS {result['reader_peak_rss_mb']:>9,.0f} MB")
        print(f"  outcomes        {result['outcomes']}")
        print(f"  (appending took {append_seconds:.1f} s)")
    return 0 if result["mails"] == len(raws) else 1


if __name__ == "__main__":
    sys.exit(main())
