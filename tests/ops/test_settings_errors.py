"""Settings errors name the field, never its value; production refuses weak secrets (issue 16)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from config.settings import Settings, WebSettings, describe_settings_error, secret_strength_problem

PASSWORD = "hunter2-very-secret-password"


def _mailboxes(extra: str) -> str:
    return f'[{{"host": "h", "username": "u", "password": "{PASSWORD}", {extra}}}]'


def _triage(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("TRIAGE_")}
    clean.update({"TRIAGE_HOME": str(tmp_path / "home"), **env})
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "status"],
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "field"),
    [
        (
            {"TRIAGE_MAILBOXES": _mailboxes('"port": "x"')},
            "TRIAGE_MAILBOXES[0].port",
        ),
        (
            {"TRIAGE_MAILBOXES": _mailboxes(f'"ssl": "{PASSWORD}"')},
            "TRIAGE_MAILBOXES[0].ssl",
        ),
        (
            {
                "TRIAGE_IMAP__HOST": "imap.example.com",
                "TRIAGE_IMAP__USERNAME": "u",
                "TRIAGE_IMAP__PASSWORD": PASSWORD,
                "TRIAGE_IMAP__PORT": PASSWORD,
            },
            "TRIAGE_IMAP__PORT",
        ),
        ({"TRIAGE_MAILBOXES": f'[{{"password": "{PASSWORD}"'}, "mailboxes"),  # not even JSON
    ],
)
def test_a_bad_setting_is_named_without_its_value_or_a_traceback(
    tmp_path: Path, env: dict[str, str], field: str
) -> None:
    result = _triage(tmp_path, **env)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "configuration error" in output and field in output.replace("\n", "")
    assert PASSWORD not in output and "hunter2" not in output
    assert "Traceback" not in output


def test_validation_errors_keep_values_out_even_in_a_traceback() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(mailboxes=[{"host": "h", "username": "u", "password": PASSWORD, "port": PASSWORD}])
    assert PASSWORD not in str(caught.value)
    assert describe_settings_error(caught.value).startswith("TRIAGE_MAILBOXES[0].port: ")


def test_production_refuses_weak_secret_keys_by_length_and_entropy() -> None:
    assert secret_strength_problem("Changeme1") is not None  # too short
    assert secret_strength_problem("ab" * 40) is not None  # long, but two characters
    assert secret_strength_problem("password" * 5) is not None  # a repeated word
    assert secret_strength_problem(secrets.token_urlsafe(48)) is None
    assert secret_strength_problem(secrets.token_hex(32)) is None
    good = SecretStr(secrets.token_urlsafe(48))
    for weak in ("Changeme1", "x" * 64):
        with pytest.raises(ValidationError) as caught:
            Settings(
                environment="production",
                web=WebSettings(secret_key=SecretStr(weak)),
                pseudonymisation_key=good,
            )
        assert "TRIAGE_WEB__SECRET_KEY" in str(caught.value) and weak not in str(caught.value)
        with pytest.raises(ValidationError):
            Settings(
                environment="production",
                web=WebSettings(secret_key=good),
                pseudonymisation_key=SecretStr(weak),
            )
    with pytest.raises(ValidationError, match="TRIAGE_HOOKS__SECRETS__TYPEFORM"):
        Settings(
            environment="production",
            web=WebSettings(secret_key=good),
            pseudonymisation_key=good,
            hooks={"secrets": {"typeform": SecretStr("changeme")}},
        )
    fine = Settings(environment="production", web=WebSettings(secret_key=good), pseudonymisation_key=good)
    assert fine.environment == "production"
    # Development keeps working with whatever key a test or a laptop sets.
    assert Settings(web=WebSettings(secret_key=SecretStr("Changeme1"))).environment == "development"
