"""Review tests hash with cheap argon2 parameters (the default profile costs ~1 s a hash on a busy box)
and share one web configuration."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from pydantic import SecretStr

from config.settings import Settings, WebSettings
from review import auth


@pytest.fixture(autouse=True)
def _cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    monkeypatch.setattr(
        auth, "_dummy_hash", functools.cache(lambda: auth._hasher.hash("not-a-real-password"))
    )


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    """A workspace on the test database, plain-HTTP cookies (TestClient speaks http://)."""
    return Settings(
        home=tmp_path / "home",
        database_url=db_url,
        web=WebSettings(secret_key=SecretStr("test-secret-key-0123456789"), secure_cookies=False),
    )
