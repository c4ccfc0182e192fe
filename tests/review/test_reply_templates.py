"""Reply templates: loaded from YAML, sandboxed, strict about fields, offered by intent."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from config.settings import DEFAULT_POLICY_DIR
from models.errors import ConfigError
from review.reply_templates import TemplateError, load_templates, render_for_item, sla_promise, suiting
from tests.review.review_builders import add_enquiry_with_item


def _write(folder: Path, name: str, text: str) -> None:
    (folder / "reply_templates").mkdir(exist_ok=True)
    (folder / "reply_templates" / f"{name}.yaml").write_text(text, encoding="utf-8")


def test_the_bundled_templates_load_and_are_offered_by_intent() -> None:
    templates = load_templates(DEFAULT_POLICY_DIR)
    assert {"pricing_page", "thanks_booking_link", "support_ack"} <= set(templates)
    assert [spec.name for spec in suiting(templates, "pricing")] == ["pricing_page", "thanks_booking_link"]
    assert [spec.name for spec in suiting(templates, "careers")] == []


def test_an_undefined_field_is_an_error_at_load_naming_the_file(tmp_path: Path) -> None:
    _write(tmp_path, "bad", "name: bad\nintents: [pricing]\nsubject: Hi\nbody: 'Dear {{ last_name }}'\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*last_name"):
        load_templates(tmp_path)


def test_the_sandbox_refuses_reaching_into_python(tmp_path: Path) -> None:
    body = 'body: "{{ first_name.__class__.__mro__[1].__subclasses__() }}"\n'
    _write(tmp_path, "evil", "name: evil\nintents: ['*']\nsubject: Hi\n" + body)
    with pytest.raises(ConfigError, match="evil"):
        load_templates(tmp_path)


def test_a_template_is_filled_for_an_item_and_must_suit_its_intent(session: Session) -> None:
    item_id, _ = add_enquiry_with_item(session, intent="pricing", sender_name="Ann Lee")
    session.commit()
    templates = load_templates(DEFAULT_POLICY_DIR)
    rendered = render_for_item(session, item_id, templates, "thanks_booking_link", owner="sam")
    assert rendered.body.startswith("Hi Ann,") and "I'm sam" in rendered.body
    assert "2 business hours" in rendered.body and rendered.subject == "Re: your enquiry for Acme"
    with pytest.raises(TemplateError, match="does not suit"):
        render_for_item(session, item_id, templates, "support_ack", owner="sam")
    with pytest.raises(TemplateError, match="no reply template"):
        render_for_item(session, item_id, templates, "nope", owner="sam")
    assert sla_promise(30) == "30 business minutes" and sla_promise(60) == "1 business hour"
