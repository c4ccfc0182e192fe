"""A team's own intents in the review queue, and accepted proposals as training labels (issue 13)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from models.retraining import corrections_frame
from review import service
from store import model_registry
from store.tables import Correction
from tests.review.review_builders import NOW, add_enquiry_with_item


def _promote_team_model(session: Session, labels: list[str]) -> None:
    model_registry.add_version(
        session,
        version="m-team",
        artifact_path="unused",
        provenance={"labels": labels},
        created_at=NOW,
        status="active",
    )


def test_a_correction_to_the_active_models_own_intent_is_allowed(session: Session) -> None:
    item_id, _ = add_enquiry_with_item(session)
    session.commit()
    with pytest.raises(service.ReviewError, match="intent must be one of"):
        service.correct(
            session, item_id, user="sam", intent="card_arrival", priority="high", queue="sales", now=NOW
        )
    _promote_team_model(session, ["card_arrival", "billing", "lost_card"])
    session.commit()

    assert service.allowed_intents(session)[-2:] == ("card_arrival", "lost_card")
    assert "billing" in service.allowed_intents(session)  # the taxonomy's intents stay
    service.correct(
        session, item_id, user="sam", intent="card_arrival", priority="high", queue="sales", now=NOW
    )
    session.commit()
    assert session.scalars(sa.select(Correction.intent)).one() == "card_arrival"
    # a typo is still refused, and the message lists the team's intents
    with pytest.raises(service.ReviewError, match="lost_card"):
        service.correct(
            session, item_id, user="sam", intent="card_arival", priority="high", queue="sales", now=NOW
        )


def test_an_accepted_proposal_is_a_confirmed_training_label(session: Session) -> None:
    item_id, enquiry_id = add_enquiry_with_item(session, intent="billing", queue="finance")
    session.commit()

    service.accept(session, item_id, user="sam", now=NOW)
    session.commit()

    label = session.scalars(sa.select(Correction)).one()
    assert (label.enquiry_id, label.intent, label.corrected_by) == (enquiry_id, "billing", "sam")
    assert label.previous["intent"] == "billing"  # confirmed: the label equals the proposal
    frame, labels = corrections_frame(session)
    assert labels == ["billing"] and len(frame) == 1
    view = service.item_view(session, item_id, now=NOW)
    assert not view.corrected and view.proposal["intent"] == "billing"
