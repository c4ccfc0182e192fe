"""Owners in the review pages (issue 12): "My items" first for an SDR, load per SDR for the ops lead,
reassigning moves the counts, routing again picks someone else."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.web import create_app
from config.settings import Settings
from review import assignment
from store.tables import DecisionRow, ReviewItem, User
from tests.review.review_builders import NOW, add_enquiry_with_item, add_users
from tests.review.test_review_http import login


@pytest.fixture
def items(session_factory: sessionmaker[Session]) -> dict[str, int]:
    """Three open items: the first due soonest and owned by sue, the last owned by sam."""
    with session_factory() as session:
        add_users(session)
        for user in session.scalars(sa.select(User).where(User.role == "sdr")):
            user.teams, user.capacity = "sales", 10
        ids = {}
        for name, due, owner in (("first", 10, "sue"), ("second", 20, None), ("third", 30, "sam")):
            item_id, _ = add_enquiry_with_item(session, subject=name, due_in_minutes=due)
            session.execute(
                sa.update(ReviewItem).where(ReviewItem.id == item_id).values(owner=owner, team="sales")
            )
            ids[name] = item_id
        session.commit()
    return ids


@pytest.fixture
def client(settings: Settings, items: dict[str, int]) -> Iterator[TestClient]:
    app = create_app(settings)
    app.state.clock = lambda: NOW
    with TestClient(app) as test_client:
        yield test_client
    app.state.engine.dispose()


def subjects(html: str) -> list[str]:
    import re

    return re.findall(r'<td class="subject"><a href="/review/items/\d+">([^<]+)</a>', html)


def test_sdr_sees_my_items_first_and_ops_lead_sees_loads(client: TestClient) -> None:
    login(client, "sam")
    assert subjects(client.get("/review").text) == ["third", "first", "second"]
    client.cookies.clear()
    login(client, "olga")
    page = client.get("/review").text
    assert subjects(page) == ["first", "second", "third"]  # no owner first: soonest due first
    assert (
        'id="loads"' in page
        and '<tr data-user="sue"><td>sue</td><td>sales</td><td class="num">1</td>' in page
    )


def test_reassign_moves_the_count_and_reroute_picks_someone_else(
    client: TestClient, items: dict[str, int], session_factory: sessionmaker[Session]
) -> None:
    token = login(client, "olga")
    response = client.post(
        f"/review/items/{items['first']}/reassign",
        data={"to_user": "sam", "csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 303
    with session_factory() as session:
        counts = {load.name: load.open_items for load in assignment.loads(session)}
    assert counts == {"sam": 2, "sue": 0}
    response = client.post(
        f"/review/items/{items['first']}/reroute", data={"csrf_token": token}, follow_redirects=False
    )
    assert response.status_code == 303
    with session_factory() as session:
        assert session.get(ReviewItem, items["first"]).owner == "sue"  # type: ignore[union-attr]
        reason = session.scalars(sa.select(DecisionRow.reasons).where(DecisionRow.task == "reroute")).one()
        assert reason[0].startswith("routed again by olga (was sam): assigned to sue")
        counts = {load.name: load.open_items for load in assignment.loads(session)}
    assert counts == {"sam": 1, "sue": 1}


def test_an_sdr_cannot_reroute(client: TestClient, items: dict[str, int]) -> None:
    token = login(client, "sam")
    response = client.post(
        f"/review/items/{items['second']}/reroute", data={"csrf_token": token}, follow_redirects=False
    )
    assert response.status_code == 403
