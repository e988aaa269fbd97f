"""The privacy filter: redact personal data and credentials from reference texts.

`redact` replaces e-mail addresses, payment card numbers, delimited phone numbers and
credential-shaped strings (API-key and token prefixes, JWTs, bearer tokens, private-key
blocks) with `[redacted: kind]`. The patterns are anchored on shapes that ordinary technical
text does not have, so line numbers, dates, times, hashes, versions and IP addresses pass
through untouched.

Card numbers follow LangChain's `PIIMiddleware` idea (digits in groups, then the Luhn
checksum), narrowed so that long numbers in technical text stay: 13 to 19 digits starting
with 2-6 (the card networks' first digits), one kind of separator, and a valid checksum.
Credentials come before phone numbers and cards so that a key is redacted whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from moa_graph.state import raw_key

__all__ = ["model_text", "redact"]

_API_KEY = re.compile(
    r"\b(?:sk-(?:proj-|ant-|or-v1-)?[A-Za-z0-9_\-]{16,}"  # OpenAI, Anthropic, OpenRouter
    r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,}"  # Stripe secret, restricted, publishable
    r"|whsec_[A-Za-z0-9]{20,}"  # Stripe webhook secret
    r"|gh[pousr]_[A-Za-z0-9]{30,}"  # GitHub
    r"|github_pat_[A-Za-z0-9_]{40,}"
    r"|glpat-[A-Za-z0-9_\-]{20,}"  # GitLab
    r"|xox[abeoprs]-[A-Za-z0-9\-]{10,}"  # Slack
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key id (long-lived, temporary)
    r"|AIza[0-9A-Za-z_\-]{35}"  # Google
    r"|gsk_[A-Za-z0-9]{20,}"  # Groq
    r"|xai-[A-Za-z0-9]{20,}"  # xAI
    r"|pplx-[A-Za-z0-9]{20,}"  # Perplexity
    r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face
    r"|npm_[A-Za-z0-9]{36}"  # npm
    r"|pypi-[A-Za-z0-9_\-]{50,}"  # PyPI
    r"|SG\.[A-Za-z0-9_\-]{16,}\.[A-Za-z0-9_\-]{16,}"  # SendGrid
    r"|dop_v1_[a-f0-9]{64}"  # DigitalOcean
    r"|shp(?:at|ss|ca|pa)_[a-fA-F0-9]{32})"  # Shopify
    r"(?![A-Za-z0-9_\-])"
)

_CARD = re.compile(
    # Digit groups with at most one separator between digits; `_card` checks the rest.
    r"(?<![\w.+/:-])[2-6]\d{3}(?:[ \-]?\d){9,15}(?![\w/:-]|\.\d)"
)


def _card(text: str) -> bool:
    """Whether a run of digits is a card number: 13-19 digits in groups, Luhn-valid.

    Separated numbers use one separator (spaces or dashes) between groups of 3 to 6 digits
    after a first group of 4 ("4111 1111 1111 1111", "3782-822463-10005").
    """
    digits = re.sub(r"[ \-]", "", text)
    if not 13 <= len(digits) <= 19:
        return False
    separators = set(re.findall(r"[ \-]", text))
    if len(separators) > 1:
        return False
    if separators:
        groups = re.split(r"[ \-]", text)
        if len(groups[0]) != 4 or not all(3 <= len(group) <= 6 for group in groups[1:]):
            return False
    return _luhn(digits)


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


_PATTERNS: list[tuple[str, re.Pattern[str], Callable[[str], bool] | None]] = [
    (
        "private key",
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL
        ),
        None,
    ),
    ("bearer token", re.compile(r"\bBearer\s+[A-Za-z0-9\-._~+/]{16,}=*", re.IGNORECASE), None),
    # header.payload.signature, both JSON objects in base64url ('{"' is 'eyJ').
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"), None),
    ("api key", _API_KEY, None),
    (
        "email",
        re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b"),
        None,
    ),
    ("card number", _CARD, _card),
    (
        "phone",
        # Delimited numbers only: "+1 415 555 0100", "(415) 555-0100", "415-555-0100",
        # "+44 20 7946 0958". A date (2026-11-26) has 4-2-2 digits and never matches, and
        # neither does a run of three digit groups inside a longer one (a card number that
        # failed its checksum is not three quarters of a phone number).
        re.compile(
            r"(?<![\w.:/-])(?<!\d[ .\-])(?:\+\d{1,3}[ .\-]?)?(?:\(\d{2,4}\)|\d{2,4})[ .\-]\d{3,4}"
            r"[ .\-]\d{3,4}(?![\w.:/-]|[ .\-]\d)"
        ),
        None,
    ),
]


def redact(text: str) -> str:
    """Return `text` with personal data and credentials replaced by `[redacted: kind]`.

    Example:
        >>> redact("mail ada@example.org or call +1 415-555-0100 at 10:30 on 2026-11-26")
        'mail [redacted: email] or call [redacted: phone] at 10:30 on 2026-11-26'
        >>> redact("card 4111-1111-1111-1111, exp 12/27")
        'card [redacted: card number], exp 12/27'
    """
    for kind, pattern, check in _PATTERNS:
        mark = f"[redacted: {kind}]"
        text = pattern.sub(mark if check is None else _checked(mark, check), text)
    return text


def _checked(mark: str, check: Callable[[str], bool]) -> Callable[[re.Match[str]], str]:
    """A replacement that redacts only the matches `check` confirms (a card's checksum)."""
    return lambda match: mark if check(match.group()) else match.group()


def model_text(answer: Mapping[str, Any], raw: Mapping[str, str] | None) -> str:
    """The text of a reference answer that models read.

    Under `privacy_filter: display` people see `answer["text"]` redacted while models read the
    original from `raw`; an answer a person edited (its text no longer the redaction of the
    original) is read as edited.
    """
    text = str(answer["text"])
    original = (raw or {}).get(raw_key(answer))
    return original if original is not None and redact(original) == text else text
