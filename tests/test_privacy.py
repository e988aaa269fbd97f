"""The privacy filter's patterns: what they redact, and what they must leave alone."""

import pytest

from moa_graph.privacy import redact


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("write to ada.lovelace+moa@example.co.uk today", "email"),
        ("call +1 415-555-0100 now", "phone"),
        ("call (415) 555-0100 now", "phone"),
        ("call 415.555.0100 now", "phone"),
        ("call +44 20 7946 0958 now", "phone"),
        ("key sk-proj-abcdefghijklmnop1234567890 here", "api key"),
        ("key sk-ant-api03-abcdefghijklmnopqrstuv here", "api key"),
        ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789 here", "api key"),
        ("aws AKIAIOSFODNN7EXAMPLE here", "api key"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc here", "bearer token"),
        (
            "key: -----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAK\n"
            "-----END RSA PRIVATE KEY----- done",
            "private key",
        ),
    ],
)
def test_redacts_personal_data_and_credentials(text, kind):
    redacted = redact(text)
    assert f"[redacted: {kind}]" in redacted
    assert redacted.split()[0] == text.split()[0]  # the surrounding words survive
    assert redacted.split()[-1] == text.split()[-1]


@pytest.mark.parametrize(
    "text",
    [
        "see line 1042 of main.py, column 17",
        "released on 2026-11-26 and 26/11/2026",
        "at 12:30:45 or 09:05",
        "commit 3f766f4f9ce3837fc3002091a7b6c5d4e3f2a1b0",
        "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "version 1.2.3, 10.14.6 and 2026.11.1",
        "hosts 192.168.100.200, 10.0.0.1 and ::1, port 8080",
        "between 100-200 items, 3.14159, ratio 16:9, ISBN 978-3-16-148410-0",
        "skip the sk- prefix and the word Bearer alone",
        "the @decorator and user@localhost",
    ],
)
def test_leaves_ordinary_technical_text_untouched(text):
    assert redact(text) == text
