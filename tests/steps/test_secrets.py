"""What `redact` masks: secret variables' values, secrets read from files, and credentials written
inside values (URLs, key=value pairs, echoed Authorization headers)."""

from __future__ import annotations

import base64

import pytest

from steps.secrets import MASK, redact, register_secret


@pytest.mark.parametrize("text, secret", [
    ("postgresql://optuna:hunter22@db:5432/studies", "hunter22"),
    ("postgresql://optuna:pa/ss/99@db:5432/studies", "pa/ss/99"),  # '/' inside the password
    ("sqlite:///x.db?password=hunter22&mode=ro", "hunter22"),
    ("HTTP 500: internal error for Authorization: Bearer kfp-token-0123456789", "kfp-token-0123456789"),
    ("authorization: bearer eyJhbGciOiJIUzI1NiJ9.e30.abc", "eyJhbGciOiJIUzI1NiJ9"),
    ("Authorization: Token 0123456789abcdef0123", "0123456789abcdef0123"),
    ("echoed Basic " + base64.b64encode(b"tester:kaggle-key-0123").decode(), "dGVzdGVy"),
])
def test_credentials_inside_values_are_masked(text, secret):
    cleaned = redact(text, env={})
    assert secret not in cleaned and MASK in cleaned


@pytest.mark.parametrize("text", [
    "http://localhost:8080/apis/v2beta1/healthz",
    "https://huggingface.co/datasets/owner/name",
    "sqlite:///runs/with@sign/optuna.db",
    "Basic auth",
    "commit_message: Basic preprocessing run",
    "http://mlflow:5000/api/2.0/x?user=me@corp.com",
])
def test_plain_addresses_are_left_alone(text):
    assert redact(text, env={}) == text


def test_a_secret_read_from_a_file_is_masked_from_then_on():
    value = "kaggle-key-from-a-file-7c1"
    assert redact(f"creds tester:{value}", env={}) == f"creds tester:{value}"
    register_secret(value)
    assert redact(f"creds tester:{value}", env={}) == f"creds tester:{MASK}"
    register_secret("short")  # too short to mask without masking ordinary words
    assert redact("a short word", env={}) == "a short word"
