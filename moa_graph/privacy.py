"""The privacy filter: redact personal data and credentials from reference texts.

`redact` replaces e-mail addresses, delimited phone numbers and credential-shaped strings
(API-key prefixes, bearer tokens, private-key blocks) with `[redacted: kind]`. The patterns
are anchored on shapes that ordinary technical text does not have, so line numbers, dates,
times, hashes, versions and IP addresses pass through untouched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["model_text", "redact"]

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    (
        "private key",
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL
        ),
    ),
    ("bearer token", re.compile(r"\bBearer\s+[A-Za-z0-9\-._~+/]{16,}=*", re.IGNORECASE)),
    (
        "api key",
        re.compile(
            r"\b(?:sk-(?:proj-|ant-|or-v1-)?[A-Za-z0-9_\-]{16,}"  # OpenAI, Anthropic, OpenRouter
            r"|gh[pousr]_[A-Za-z0-9]{30,}"  # GitHub
            r"|github_pat_[A-Za-z0-9_]{40,}"
            r"|xox[abpr]-[A-Za-z0-9\-]{10,}"  # Slack
            r"|AKIA[0-9A-Z]{16}"  # AWS access key id
            r"|AIza[0-9A-Za-z_\-]{35}"  # Google
            r"|gsk_[A-Za-z0-9]{20,}"  # Groq
            r"|hf_[A-Za-z0-9]{30,})"  # Hugging Face
        ),
    ),
    (
        "email",
        re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b"),
    ),
    (
        "phone",
        # Delimited numbers only: "+1 415 555 0100", "(415) 555-0100", "415-555-0100",
        # "+44 20 7946 0958". A date (2026-11-26) has 4-2-2 digits and never matches.
        re.compile(
            r"(?<![\w.:/-])(?:\+\d{1,3}[ .\-]?)?(?:\(\d{2,4}\)|\d{2,4})[ .\-]\d{3,4}[ .\-]\d{3,4}"
            r"(?![\w.:/-])"
        ),
    ),
]


def redact(text: str) -> str:
    """Return `text` with personal data and credentials replaced by `[redacted: kind]`.

    Example:
        >>> redact("mail ada@example.org or call +1 415-555-0100 at 10:30 on 2026-11-26")
        'mail [redacted: email] or call [redacted: phone] at 10:30 on 2026-11-26'
    """
    for kind, pattern in _PATTERNS:
        text = pattern.sub(f"[redacted: {kind}]", text)
    return text


def model_text(answer: Mapping[str, Any], raw: Mapping[str, str] | None) -> str:
    """The text of a reference answer that models read.

    Under `privacy_filter: display` people see `answer["text"]` redacted while models read the
    original from `raw`; an answer a person edited (its text no longer the redaction of the
    original) is read as edited.
    """
    text = str(answer["text"])
    original = (raw or {}).get(f"{answer.get('layer', 1)}:{answer['index']}")
    return original if original is not None and redact(original) == text else text
