"""Bootstrap keys (API_KEYS) must be long enough, and a refusal never prints them."""

import pytest
from pydantic import ValidationError

from core.settings import MIN_API_KEY_LENGTH, Settings


def test_short_api_keys_are_refused_without_echoing_them():
    secret = "short-key-42"
    with pytest.raises(ValidationError) as refused:
        Settings(api_keys=f"{'x' * MIN_API_KEY_LENGTH},{secret}")
    message = str(refused.value)
    assert "shorter than 16 characters" in message and "ALLOW_SHORT_API_KEYS" in message
    assert secret not in message and "x" * MIN_API_KEY_LENGTH not in message


def test_short_keys_only_when_explicitly_allowed(monkeypatch):
    assert Settings(api_keys="k" * MIN_API_KEY_LENGTH).api_keys == ["k" * MIN_API_KEY_LENGTH]
    assert Settings(api_keys="tiny", allow_short_api_keys=True).api_keys == ["tiny"]
    monkeypatch.setenv("API_KEYS", "tiny")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.setenv("ALLOW_SHORT_API_KEYS", "true")
    assert Settings().api_keys == ["tiny"]


def test_no_keys_is_not_a_short_key():
    assert Settings(api_keys="").api_keys == []
