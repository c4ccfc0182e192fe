"""`triage taxonomy init` and what it unlocks: the team's intents in lanes, review and promotion."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from app.cli import app as cli_app
from config.policy import load_policy
from config.settings import DEFAULT_POLICY_DIR
from models import registry
from models.lanes import decide
from models.records import Enrichment, Lane, Prediction
from review import service
from review.choices import taxonomy_choices
from store import model_registry
from store.tables import Correction
from tests.review.review_builders import NOW, add_enquiry_with_item, add_users

runner = CliRunner()
NO_FIRM = Enrichment(
    domain=None,
    free_mail=True,
    company=None,
    industry=None,
    employees=None,
    arr_estimate=None,
    segment="unknown",
)
LABELS = {"card_arrival": 5, "lost_card": 6, "not_ours": 4, "rare_one": 2}


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    rows = [
        {"text": f"{label} example {i}", "intent": label} for label, n in LABELS.items() for i in range(n)
    ]
    path = tmp_path / "team.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _init(data_file: Path, policy: Path, *extra: str) -> tuple[int, str]:
    result = runner.invoke(
        cli_app,
        [
            *("taxonomy", "init", "--data", str(data_file), "--text-col", "text", "--label-col", "intent"),
            *("--policy-dir", str(policy), *extra),
        ],
    )
    return result.exit_code, result.output


def test_init_writes_a_valid_policy_for_the_teams_labels_and_never_overwrites_silently(
    data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TRIAGE_POLICY_DIR", raising=False)
    policy_dir = tmp_path / "policy"
    code, output = _init(data_file, policy_dir, "--oos-label", "not_ours", "--json")
    assert code == 0, output
    report = json.loads(output)
    assert {Path(p).name for p in report["written"]} >= {
        "taxonomy.yaml",
        "decision_matrix.yaml",
        "lanes.yaml",
    }
    assert report["tasks"] == ["team_card_arrival", "team_lost_card", "team_rare_one"]
    assert report["label_counts"] == LABELS
    assert any("TRIAGE_POLICY_DIR" in line for line in report["review"])
    assert any("rare_one" in line and "fewer than 4" in line for line in report["review"])

    policy = load_policy(policy_dir)  # the whole directory is valid
    card = policy.taxonomy.intents["card_arrival"]
    assert (card.queue, card.priority, card.task) == ("card_arrival", "normal", "team_card_arrival")
    assert policy.matrix.tasks["team_card_arrival"].lane is Lane.HYBRID
    assert policy.matrix.tasks[policy.taxonomy.intents["not_ours"].task].lane is Lane.HUMAN_ONLY
    assert {"spam", "other"} <= set(policy.taxonomy.intents)
    # Nothing in the bundled defaults changed.
    assert "card_arrival" not in (DEFAULT_POLICY_DIR / "taxonomy.yaml").read_text()

    before = (policy_dir / "taxonomy.yaml").read_text()
    code, output = _init(data_file, policy_dir)
    assert code == 2 and "--force" in output
    assert (policy_dir / "taxonomy.yaml").read_text() == before
    code, output = _init(data_file, policy_dir, "--force")
    assert code == 0 and "wrote" in output and "to review" in output
    assert "not_ours" in load_policy(policy_dir).taxonomy.intents  # without --oos-label: a team intent

    code, output = _init(data_file, tmp_path / "other", "--oos-label", "not_our")
    assert code == 2 and "not_ours" in output  # a typo names the labels there are
    code, output = _init(data_file, DEFAULT_POLICY_DIR, "--force")
    assert code == 2 and "never edited" in output


def test_the_teams_intents_are_hybrid_correctable_and_checked_at_promotion(
    data_file: Path,
    tmp_path: Path,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    session_factory: sessionmaker[Session],
) -> None:
    policy_dir = tmp_path / "policy"
    assert _init(data_file, policy_dir, "--oos-label", "not_ours")[0] == 0
    policy = load_policy(policy_dir)
    confident = Prediction(
        intent="card_arrival",
        confidence=0.99,
        threshold=0.5,
        abstained=False,
        explanation=(),
        model_version="m-team",
    )
    decision = decide(prediction=confident, enrichment=NO_FIRM, text="where is my card", policy=policy)
    assert (decision.lane, decision.queue, decision.task) == (
        Lane.HYBRID,
        "card_arrival",
        "team_card_arrival",
    )

    taxonomy = taxonomy_choices(policy_dir)
    with session_factory() as session:
        add_users(session)
        item_id, _ = add_enquiry_with_item(session)
        session.commit()
        with pytest.raises(service.ReviewError, match="lost_card"):  # a typo lists the valid intents
            service.correct(
                session,
                item_id,
                user="sam",
                intent="lost_crad",
                priority="normal",
                queue="lost_card",
                now=NOW,
                taxonomy=taxonomy,
            )
        service.correct(
            session,
            item_id,
            user="sam",
            intent="lost_card",
            priority="normal",
            queue="lost_card",
            now=NOW,
            taxonomy=taxonomy,
        )
        session.commit()
        assert session.scalars(sa.select(Correction.intent)).one() == "lost_card"

    monkeypatch.setenv("TRIAGE_DATABASE_URL", db_url)
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRIAGE_POLICY_DIR", str(policy_dir))
    args = ["review", "correct", str(item_id), "--user", "sam", "--priority", "normal"]
    ok = runner.invoke(cli_app, [*args, "--intent", "card_arrival", "--queue", "card_arrival", "--json"])
    assert ok.exit_code == 0, ok.output
    typo = runner.invoke(cli_app, [*args, "--intent", "card_arival", "--queue", "card_arrival", "--json"])
    assert typo.exit_code != 0 and "card_arrival" in typo.output and "lost_card" in typo.output

    with session_factory() as session:
        model_registry.add_version(
            session,
            version="m-foreign",
            artifact_path="unused",
            provenance={"labels": ["card_arrival", "refund_status", "not_ours"], "oos_label": "not_ours"},
            created_at=NOW,
        )
        session.commit()
        with pytest.raises(registry.UnmappedLabels, match="refund_status") as refused:
            registry.promote(
                session, "m-foreign", approved_by="Olga", home=tmp_path, taxonomy_intents=taxonomy.intents
            )
        assert "not_ours" not in str(refused.value)  # the out-of-scope label goes to people by design
        row = model_registry.get_version(session, "m-foreign")
        assert row is not None and registry.unmapped_labels(row, taxonomy.intents) == ["refund_status"]
