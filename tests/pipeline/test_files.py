"""File imports: every format, replay safety, and the shared source conformance suite."""

from __future__ import annotations

import json
import mailbox
from pathlib import Path

import pytest

from connectors.base import Source
from connectors.files import FileSource, sniff_channel
from models.records import Channel
from tests.builders import chat_json, email_bytes, form_json
from tests.support.source_conformance import SourceConformance, keys_of, read_all


def write_mbox(path: Path, count: int) -> Path:
    box = mailbox.mbox(path)
    for i in range(count):
        box.add(email_bytes(message_id=f"<m{i}@x>", body=f"Message number {i}"))
    box.flush()
    box.close()
    return path


class TestMboxConformance(SourceConformance):
    @pytest.fixture
    def expected_count(self) -> int:
        return 7

    @pytest.fixture
    def source(self, tmp_path: Path, expected_count: int) -> Source:
        return FileSource(write_mbox(tmp_path / "in.mbox", expected_count), Channel.EMAIL, batch_size=3)

    @pytest.fixture
    def bad_source(self, tmp_path: Path) -> Source:
        return FileSource(tmp_path / "missing.mbox", Channel.EMAIL)


class TestJsonlConformance(SourceConformance):
    @pytest.fixture
    def expected_count(self) -> int:
        return 5

    @pytest.fixture
    def source(self, tmp_path: Path, expected_count: int) -> Source:
        path = tmp_path / "forms.jsonl"
        path.write_bytes(b"\n".join(form_json(submission_id=f"s{i}") for i in range(expected_count)) + b"\n")
        return FileSource(path, Channel.FORM, batch_size=2)

    @pytest.fixture
    def bad_source(self, tmp_path: Path) -> Source:
        return FileSource(tmp_path / "empty-folder", Channel.FORM)


def test_csv_export_rows_become_json_records(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        'submission_id,email,message,website\nx1,a@b.co,Need pricing,\nx2,c@d.co,"Line one\nline two",\n'
    )
    records = [r for b in read_all(FileSource(path, Channel.FORM), None) for r in b.records]
    assert [json.loads(r.payload) for r in records] == [
        {"submission_id": "x1", "email": "a@b.co", "message": "Need pricing"},
        {"submission_id": "x2", "email": "c@d.co", "message": "Line one\nline two"},
    ]


def test_json_chat_export_and_broken_file_kept_whole(tmp_path: Path) -> None:
    export = tmp_path / "chats.json"
    export.write_text(json.dumps({"conversations": [json.loads(chat_json("a")), json.loads(chat_json("b"))]}))
    broken = tmp_path / "broken.json"
    broken.write_text('[{"conversation_id": ')
    assert len(keys_of(read_all(FileSource(export, Channel.CHAT), None))) == 2
    kept = [r for b in read_all(FileSource(broken, Channel.CHAT), None) for r in b.records]
    assert [r.payload for r in kept] == [broken.read_bytes()]  # stored, to be quarantined with a reason


def test_folder_of_eml_files_and_edited_file_is_new(tmp_path: Path) -> None:
    (tmp_path / "a.eml").write_bytes(email_bytes(message_id="<a@x>"))
    (tmp_path / "b.eml").write_bytes(email_bytes(message_id="<b@x>"))
    (tmp_path / "notes.txt").write_text("not mail")
    source = FileSource(tmp_path, Channel.EMAIL)
    first = keys_of(read_all(source, None))
    assert len(first) == 2
    (tmp_path / "a.eml").write_bytes(email_bytes(message_id="<a2@x>"))
    assert len(set(keys_of(read_all(source, None))) - set(first)) == 1


def test_sniff_channel() -> None:
    assert sniff_channel(Path("x.mbox")) is Channel.EMAIL
    assert sniff_channel(Path("chat-export.json")) is Channel.CHAT
    assert sniff_channel(Path("leads.csv")) is Channel.FORM
    assert sniff_channel(Path("data.json")) is None
