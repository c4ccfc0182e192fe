"""Owner routing's rules, strategies, hours and validation, on both databases (pipeline/routing.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from config.routing import RoutingPolicy, load_routing
from models.errors import ConfigError
from pipeline.routing import Router, RouteRequest
from review import auth
from store import review_repo
from store.tables import RoutingCursor
from tests.builders import insert_enquiry

# A Wednesday, 10:00 UTC: 11:00 in Berlin, 05:00 in New York.
WEDNESDAY = datetime(2026, 11, 18, 10, 0, tzinfo=UTC)


def policy(**overrides: object) -> RoutingPolicy:
    data: dict[str, object] = {
        "version": 1,
        "default_team": "sales",
        "fallback_pool": "overflow",
        "teams": {"sales": {"strategy": "round_robin"}, "dach": {"strategy": "least_loaded"}},
        "pools": {"overflow": {"members": ["olga"]}},
        "rules": [{"name": "german speakers", "language": ["de"], "team": "dach"}],
    }
    data.update(overrides)
    return RoutingPolicy.model_validate(data)


def user(session: Session, name: str, teams: str, **fields: object) -> None:
    auth.create_user(session, name, role="sdr", password="correct horse battery")
    row = review_repo.get_user(session, name)
    assert row is not None
    row.teams = teams
    for key, value in fields.items():
        setattr(row, key, value)
    session.flush()


def requests(count: int, **fields: str) -> list[RouteRequest]:
    base = {"queue": "sales", "intent": "pricing", "segment": "smb"}
    return [RouteRequest(enquiry_id=f"e{n}", **{**base, **fields}) for n in range(count)]


def test_round_robin_is_weighted_and_resumes_where_the_last_run_stopped(session: Session) -> None:
    user(session, "ana", "sales", weight=2)
    user(session, "ben", "sales")
    router = Router(policy())
    first = router.route(session, requests(2), now=WEDNESDAY)
    session.commit()
    second = router.route(session, requests(4), now=WEDNESDAY)
    session.commit()
    order = [a.owner for a in first.values()] + [a.owner for a in second.values()]
    # Rotation ana, ben, ana (weight 2 interleaved); the second run goes on from the stored cursor.
    assert order == ["ana", "ben", "ana", "ana", "ben", "ana"]
    assert session.scalar(sa.select(RoutingCursor.position).where(RoutingCursor.team == "sales")) == 2


def test_rules_pick_the_team_by_language(session: Session) -> None:
    user(session, "ana", "sales")
    user(session, "dora", "dach")
    router = Router(policy())
    german = router.route(session, requests(1, language="de"), now=WEDNESDAY)["e0"]
    other = router.route(session, requests(1, language="fr"), now=WEDNESDAY)["e0"]
    assert (german.owner, german.team) == ("dora", "dach")
    assert "rule 'german speakers'" in german.reason
    assert (other.owner, other.team) == ("ana", "sales")


def test_working_hours_in_each_members_zone(session: Session) -> None:
    hours = {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00"}
    user(session, "berlin", "sales", timezone="Europe/Berlin")
    user(session, "newyork", "sales", timezone="America/New_York")
    user(session, "olga", "ops")
    router = Router(policy(teams={"sales": {"strategy": "least_loaded", "working_hours": hours}}, rules=[]))
    morning = router.route(session, requests(3), now=WEDNESDAY)
    assert {a.owner for a in morning.values()} == {"berlin"}  # New York is asleep at 05:00
    night = router.route(session, requests(1), now=WEDNESDAY.replace(hour=23))["e0"]
    assert night.owner == "olga" and "fallback pool overflow" in night.reason


def test_account_owner_first_unless_away_or_full(session: Session) -> None:
    user(session, "ana", "sales", capacity=1)
    user(session, "ben", "sales")
    eid = insert_enquiry(session)
    router = Router(policy())
    owned = router.route(session, requests(2, account_owner="ana", account="BigCo"), now=WEDNESDAY)
    assert owned["e0"].owner == "ana" and "account owner of BigCo" in owned["e0"].reason
    assert owned["e1"].owner == "ben" and "account owner ana at capacity" in owned["e1"].reason
    assert eid  # an enquiry exists, so the store is really the migrated one


def test_a_policy_naming_an_unknown_team_is_refused_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "routing.yaml").write_text(
        "version: 1\ndefault_team: sales\nfallback_pool: overflow\nteams:\n  sales: {}\n"
        "pools:\n  overflow: {}\nrules:\n  - name: x\n    team: nowhere\n"
    )
    with pytest.raises(ConfigError) as error:
        load_routing(tmp_path)
    assert "routing.yaml" in str(error.value) and "names team 'nowhere'" in str(error.value)


def test_the_bundled_routing_policy_loads() -> None:
    bundled = load_routing(Path("/nonexistent"))
    assert bundled.default_team in bundled.teams and bundled.fallback_pool in bundled.pools


# --- per-member working hours (their own, in their own zone; the team's when unset) ---------------------
TEAM_HOURS = {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00"}


def test_a_members_own_hours_in_their_zone_override_the_teams(session: Session) -> None:
    # WEDNESDAY 10:00 UTC: Berlin 11:00, Tokyo 19:00, New York 05:00.
    user(session, "berlin", "sales", timezone="Europe/Berlin")  # team hours: working
    user(session, "berlinlate", "sales", timezone="Europe/Berlin", working_hours="Mon-Fri 13:00-21:00")
    user(session, "tokyo", "sales", timezone="Asia/Tokyo", working_hours="Mon-Fri 14:00-22:00")
    user(session, "newyork", "sales", timezone="America/New_York", working_hours="Mon-Fri 04:00-12:00")
    user(session, "olga", "ops")
    router = Router(
        policy(teams={"sales": {"strategy": "least_loaded", "working_hours": TEAM_HOURS}}, rules=[])
    )
    morning = router.route(session, requests(6), now=WEDNESDAY)
    owners = [a.owner for a in morning.values()]
    # By the team's hours only Berlin would work; Tokyo and New York work by their own, and the late
    # Berlin shift (13:00) does not yet, though the team's hours would say it does.
    assert sorted(owners) == ["berlin", "berlin", "newyork", "newyork", "tokyo", "tokyo"]

    # 23:00 UTC: Berlin and its late shift are past midnight, Tokyo is at 08:00 Thursday, New York at
    # 18:00; nobody of the team works, so the fallback pool takes it, as it does for an away team.
    night = router.route(session, requests(1), now=WEDNESDAY.replace(hour=23))["e0"]
    assert night.owner == "olga" and "nobody working now; fallback pool overflow" in night.reason

    # 15:00 UTC: Berlin 16:00 (team and late shift both work), Tokyo 00:00, New York 10:00.
    afternoon = router.route(session, requests(3), now=WEDNESDAY.replace(hour=15))
    assert {a.owner for a in afternoon.values()} == {"berlin", "berlinlate", "newyork"}


def test_own_hours_count_even_when_the_team_has_none(session: Session) -> None:
    user(session, "ana", "sales", timezone="Europe/Berlin", working_hours="Sat-Sun 10:00-14:00")
    user(session, "ben", "sales")
    user(session, "olga", "ops")
    router = Router(policy(teams={"sales": {"strategy": "round_robin"}}, rules=[]))
    weekday = router.route(session, requests(3), now=WEDNESDAY)
    assert {a.owner for a in weekday.values()} == {"ben"}  # ana is off on weekdays
    saturday = router.route(session, requests(2), now=datetime(2026, 11, 21, 10, 0, tzinfo=UTC))
    assert sorted(a.owner or "" for a in saturday.values()) == ["ana", "ben"]


def test_an_account_owner_outside_their_hours_is_skipped_but_preferred_when_nobody_works(
    session: Session,
) -> None:
    user(session, "ana", "sales", timezone="America/New_York", working_hours="Mon-Fri 09:00-17:00")
    user(session, "ben", "sales", timezone="Europe/Berlin")
    user(session, "olga", "ops", timezone="Europe/Berlin", working_hours="Mon-Fri 09:00-17:00")
    router = Router(
        policy(teams={"sales": {"strategy": "least_loaded", "working_hours": TEAM_HOURS}}, rules=[])
    )
    owned = requests(1, account_owner="ana", account="BigCo")
    # 10:00 UTC: ana is at 05:00 in New York, ben works.
    early = router.route(session, owned, now=WEDNESDAY)["e0"]
    assert early.owner == "ben"
    assert "account owner ana outside working hours" in early.reason
    # 15:00 UTC: ana's 10:00, she gets her account's enquiry.
    later = router.route(session, owned, now=WEDNESDAY.replace(hour=15))["e0"]
    assert later.owner == "ana" and "account owner of BigCo" in later.reason
    # 23:00 UTC: nobody works (olga's pool hours are her own too); the owner, not a stranger.
    night = router.route(session, owned, now=WEDNESDAY.replace(hour=23))["e0"]
    assert night.owner == "ana" and "nobody working now; account owner of BigCo" in night.reason


def test_a_hand_edited_unreadable_hours_row_counts_as_the_teams_hours(session: Session) -> None:
    user(session, "ana", "sales", timezone="Europe/Berlin", working_hours="whenever")
    user(session, "olga", "ops")
    router = Router(
        policy(teams={"sales": {"strategy": "least_loaded", "working_hours": TEAM_HOURS}}, rules=[])
    )
    assert router.route(session, requests(1), now=WEDNESDAY)["e0"].owner == "ana"
    assert router.route(session, requests(1), now=WEDNESDAY.replace(hour=23))["e0"].owner == "olga"


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("Mon-Fri 09:00-17:00", "Mon-Fri 09:00-17:00"),
        ("mon,wed,FRI 8:00-12:30; saturday 10:00-24:00", "Mon,Wed,Fri 08:00-12:30; Sat 10:00-24:00"),
        ("Sat-Mon 09:00-10:00", "Mon,Sat-Sun 09:00-10:00"),
    ],
)
def test_hours_text_is_read_and_written_canonically(text: str, canonical: str) -> None:
    from config.routing import format_hours, parse_hours

    assert format_hours(parse_hours(text)) == canonical
    assert format_hours(parse_hours(canonical)) == canonical


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("Mon-Fri 17:00-09:00", "cannot cross midnight"),
        ("Funday 09:00-10:00", "'Funday' is not a day"),
        ("9-5", "is not DAYS HH:MM-HH:MM"),
        ("Mon 25:00-26:00", "is not a time of day"),
        (" ; ", "no working hours"),
    ],
)
def test_unreadable_hours_are_refused_saying_what_to_write(text: str, says: str) -> None:
    from config.routing import HoursError, parse_hours

    with pytest.raises(HoursError) as error:
        parse_hours(text)
    assert says in str(error.value)
