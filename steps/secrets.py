"""Keep secrets out of logs, failure files, manifests and tracking.

Secrets reach a step only through the environment or mounted files; anything the step writes
passes through `redact`, and the logging filter applies it to every record.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

KNOWN_SECRET_VARIABLES = (
    "KAGGLE_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN", "WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "KFP_TOKEN",
)
_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|API_KEY|_KEY$)", re.IGNORECASE)
MASK = "***"
# Credentials written inside a value rather than a variable: `scheme://user:password@host` (database
# and tracking URLs) and `password=...` / `token=...` pairs (libpq DSNs, query strings).
# A password may hold '/' (`postgresql://u:pa/ss@db/x`): it runs to the first '@' (one inside a
# password is written %40), but not past a query or fragment (`?user=me@corp.com` is no password).
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)(?P<secret>[^\s@?#]+)(?=@)")
_PAIR_SECRET = re.compile(r"(?P<head>\b(?:password|passwd|pwd|token|api_key|apikey|secret|access_key)\s*=\s*)"
                          r"(?P<secret>[^\s&;,'\"]+)", re.IGNORECASE)
# An Authorization header a server echoes back: `Basic base64(user:key)`, `Bearer <token>`.
# A credential has 16 characters at least: "Basic preprocessing" in a commit message is prose.
_AUTH_HEADER = re.compile(r"(?P<head>\b(?:Basic|Bearer|Token)\s+)(?P<secret>[A-Za-z0-9._~+/-]{16,}=*)",
                          re.IGNORECASE)
# Secrets a step read from a file (kaggle.json, a token file): masked like the variables' values.
_REGISTERED: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask `value` from now on in everything this process redacts (logs, failure files, manifests)."""
    if value and len(value) >= 6:
        _REGISTERED.add(value)


def secret_values(env: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> list[str]:
    """Values that must never be written: known secret variables and any *TOKEN*/*SECRET*-named one."""
    env = os.environ if env is None else env
    values = {value for name, value in env.items()
              if (name in KNOWN_SECRET_VARIABLES or _SECRET_NAME.search(name)) and len(value) >= 6}
    values.update(v for v in (*extra, *_REGISTERED) if v and len(v) >= 6)
    return sorted(values, key=len, reverse=True)


def mask_url_credentials(text: str) -> str:
    """Mask credentials written inside values: `postgresql://user:***@db/x`, `password=***`,
    `Authorization: Basic ***`."""
    text = _URL_PASSWORD.sub(lambda m: m["head"] + MASK, text)
    text = _AUTH_HEADER.sub(lambda m: m["head"] + MASK, text)
    return _PAIR_SECRET.sub(lambda m: m["head"] + MASK, text)


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """`text` with every secret masked: values of secret variables and credentials inside values."""
    for value in secret_values(env):
        text = text.replace(value, MASK)
    return mask_url_credentials(text)


def redact_obj(obj: Any, env: Mapping[str, str] | None = None) -> Any:
    """Redact every string inside a JSON-like structure."""
    if isinstance(obj, str):
        return redact(obj, env)
    if isinstance(obj, Mapping):
        return {key: redact_obj(value, env) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(value, env) for value in obj]
    return obj


class RedactingFilter(logging.Filter):
    """Replaces secret values in every log record before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
