"""`triage sla due|watch|timers` and `triage report sla`, and the weekly report e-mail."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from app.commands.sla import report_app, sla_app
from connectors.notify import NotifySettings, SmtpSettings
from sla.policies import SlaPolicies
from sla.report import send_weekly_report
from sla.service import TimerStart, start_timers
from store.db import transaction
from tests.sla.sla_helpers import add_enquiries, smtp_server

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_due_prints_iso_instants_with_offsets(policy_file: object, tmp_path: Path) -> None:
    yaml_path = tmp_path / "sla.yaml"
    yaml_path.write_text(
        (ROOT / "config" / "defaults" / "sla.yaml")
        .read_text()
        .replace("timezone: UTC", "timezone: America/New_York")
    )
    result = runner.invoke(
        sla_app,
        ["due", "--received", "2026-03-06T17:00:00-05:00", "--priority", "normal", "--intent", "support",
         "--channel", "email", "--queue", "support", "--json", "--policies", str(yaml_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    # Friday 17:00 in New York + 480 business minutes: 30 on Friday, 450 on Monday after DST began.
    assert document == {
        "policy": "standard",
        "first_response_due": "2026-03-09T16:30:00-04:00",
        "resolution_due": "2026-03-13T14:30:00-04:00",
        "escalations": [
            {"at": "2026-03-09T16:30:00-04:00", "action": "notify_ops_lead"},
            {"at": "2026-03-10T16:00:00-04:00", "action": "escalate_manager"},
        ],
    }


def test_due_for_spam_and_bad_input() -> None:
    spam = runner.invoke(sla_app, ["due", "--received", "2026-03-06T10:00:00Z", "--priority", "high",
                                   "--intent", "spam", "--json"])  # fmt: skip
    assert spam.exit_code == 0 and json.loads(spam.output)["first_response_due"] is None
    naive = runner.invoke(sla_app, ["due", "--received", "2026-03-06T10:00:00", "--priority", "high"])
    assert naive.exit_code == 2 and "offset" in naive.output


def test_due_imports_no_prefect() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from app.commands.sla import sla_app; "
        "r = CliRunner().invoke(sla_app, ['due', '--received', '2026-03-06T10:00Z', '--priority', 'low']); "
        "assert r.exit_code == 0, r.output; print('prefect' in sys.modules)"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert output.stdout.strip() == "False"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_watch_timers_and_report_commands(
    db_url: str,
    session_factory: sessionmaker[Session],
    policies: SlaPolicies,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monday = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    with transaction(session_factory) as session:
        add_enquiries(session, ["e1", "e2"], received_at=monday)
        items = [TimerStart(i, monday, "normal", "support", "email", "support", "smb") for i in ("e1", "e2")]
        start_timers(session, items, policies, now=monday)
    monkeypatch.setenv("TRIAGE_DATABASE_URL", db_url)
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "home"))
    timers = runner.invoke(sla_app, ["timers", "--json"])
    assert timers.exit_code == 0, timers.output
    assert [row["enquiry_id"] for row in json.loads(timers.output)] == ["e1", "e2", "e1", "e2"]
    watch = runner.invoke(sla_app, ["watch", "--now", "2026-03-03T09:00:00Z", "--json"])
    assert watch.exit_code == 0, watch.output
    summary = json.loads(watch.output)
    # No destinations configured: escalations are recorded and the roles reported as skipped.
    assert (summary["breached"], summary["escalations_fired"]) == (2, 2)
    assert summary["skipped_roles"] == ["ops_lead", "slack"]
    out, csv_path = tmp_path / "r" / "report.html", tmp_path / "r" / "report.csv"
    report = runner.invoke(
        report_app,
        ["sla", "--since", "2026-03-01", "--until", "2026-03-08", "--out", str(out), "--csv", str(csv_path)],
    )
    assert report.exit_code == 0, report.output
    assert 'data-figure="breached">2<' in out.read_text()
    assert len(csv_path.read_text().splitlines()) == 3
    backwards = runner.invoke(
        report_app, ["sla", "--since", "2026-03-08", "--until", "2026-03-01", "--out", str(out)]
    )
    assert backwards.exit_code == 2


def test_weekly_report_is_mailed_inline_and_attached(
    session_factory: sessionmaker[Session], policies: SlaPolicies, tmp_path: Path
) -> None:
    now = datetime(2026, 3, 9, 6, 0, tzinfo=UTC)  # Monday morning: last week is 2 to 8 March
    with transaction(session_factory) as session:
        add_enquiries(session, ["e1"], received_at=now - timedelta(days=6))
        start_timers(
            session,
            [TimerStart("e1", now - timedelta(days=6), "normal", "support", "email", "support", "smb")],
            policies,
            now=now,
        )
    with smtp_server() as smtp, session_factory() as session:
        notify = NotifySettings(
            smtp=SmtpSettings(host=smtp.host, port=smtp.port, starttls=False),
            recipients={"ops_lead": ["ops@example.com"]},
        )
        result = send_weekly_report(session, policies, notify, now=now, out_dir=tmp_path / "reports")
    assert result["sent_to"] == ["ops@example.com"] and result["timers"] == 1 and result["breached"] == 1
    assert Path(str(result["path"])).name == "sla-report-2026-03-02-to-2026-03-08.html"
    [(recipients, message)] = smtp.messages
    assert recipients == ["ops@example.com"]
    assert message["Subject"] == "Weekly SLA report: 100.0% breached (1 of 1)"
    parts = {part.get_content_type(): part for part in message.walk() if not part.is_multipart()}
    assert {"text/plain", "text/html"} <= set(parts)
    attachments = [part for part in message.walk() if part.get_filename()]
    assert [part.get_filename() for part in attachments] == ["sla-report-2026-03-02-to-2026-03-08.html"]
    payload = attachments[0].get_payload(decode=True)
    assert isinstance(payload, bytes) and b'data-figure="timers">1<' in payload
