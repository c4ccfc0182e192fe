"""The benchmark's bulk copy (bench/bench_store.py) builds a store that holds together (issue 15)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tests.builders import insert_enquiry
from tests.review.review_builders import add_enquiry_with_item

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bench_store import bulk_copy  # bench/ is a folder of scripts, not a package


def test_bulk_copies_get_dense_raw_ids_and_enquiry_ids_that_never_clash(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        # Ends in round 1's number: the old id scheme copied it onto itself (a primary-key clash).
        clashing = uuid.uuid4().hex[:26] + "000001"
        insert_enquiry(session, id=clashing, message_key=f"<{clashing}@x>")
        for _ in range(2):
            add_enquiry_with_item(session)
        session.commit()
    # Calls after the first read a larger max id: the old shift grew geometrically with them.
    assert bulk_copy(engine, 3, start_round=1) == 9
    assert bulk_copy(engine, 2, start_round=4) == 6
    with engine.connect() as connection:
        count, distinct = connection.execute(
            sa.text("SELECT count(*), count(DISTINCT id) FROM enquiries")
        ).one()
        raw_count, raw_max = connection.execute(sa.text("SELECT count(*), max(id) FROM raw_records")).one()
        orphans = connection.scalar(
            sa.text(
                "SELECT count(*) FROM enquiries JOIN raw_records ON raw_records.id = enquiries.raw_id "
                "WHERE raw_records.enquiry_id <> enquiries.id"
            )
        )
        items = connection.scalar(sa.text("SELECT count(DISTINCT enquiry_id) FROM review_items"))
    assert (count, distinct) == (18, 18)
    assert (raw_count, raw_max) == (18, 18)  # dense: the ids grow by exactly the rows copied
    assert orphans == 0 and items == 12  # the two enquiries with a review item, six times each
