"""The intake flow under Prefect: a real flow run over a real database, and a re-run that adds nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from models.records import Channel
from pipeline.jobs import import_path
from pipeline.runtime import Runtime
from store.tables import CrmOutbox, Enquiry, RawRecord
from tests.builders import form_json


@pytest.mark.slow
def test_intake_flow_processes_and_reruns_safely(
    prefect_harness: None, triage_home: Path, tmp_path: Path
) -> None:
    from flows.intake import intake_flow

    forms = tmp_path / "forms.jsonl"
    forms.write_bytes(
        b"\n".join(form_json(submission_id=f"s{i}", message=f"Demo for {i} people?") for i in range(6))
    )
    runtime = Runtime()
    import_path(runtime, forms, Channel.FORM)
    first = intake_flow()
    assert first["enquiries"] == 6 and first["ingested"] == {"email": 0, "form": 0, "chat": 0}
    assert (
        first["crm_written"] == first["crm_tasks_written"] == 6
    )  # no model: people see them; leads and tasks written
    second = intake_flow()
    assert second["processed"] == second["crm_written"] == 0
    with runtime.factory() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Enquiry)) == 6
        assert (
            session.scalar(
                sa.select(sa.func.count()).select_from(RawRecord).where(RawRecord.status != "enquiry")
            )
            == 0
        )
        sent = session.scalar(
            sa.select(sa.func.count()).select_from(CrmOutbox).where(CrmOutbox.status == "sent")
        )
        assert sent == 12  # a lead and an SDR task each
