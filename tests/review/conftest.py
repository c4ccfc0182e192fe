"""Review tests hash with cheap argon2 parameters: the default profile costs ~1 s a hash on a busy box."""

from __future__ import annotations

import functools

import pytest
from argon2 import PasswordHasher

from review import auth


@pytest.fixture(autouse=True)
def _cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    monkeypatch.setattr(
        auth, "_dummy_hash", functools.cache(lambda: auth._hasher.hash("not-a-real-password"))
    )
