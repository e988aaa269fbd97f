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
        ("card 4111 1111 1111 1111 here", "card number"),
        ("card 4111-1111-1111-1111 here", "card number"),
        ("card 4111111111111111 here", "card number"),
        ("amex 3782 822463 10005 here", "card number"),
        ("mastercard 5555-5555-5555-4444 here", "card number"),
        (
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
            "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U here",
            "jwt",
        ),
        ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc here", "api key"),
        ("stripe rk_live_51H8abcdEFGHijklMNOP here", "api key"),
        ("stripe pk_live_51H8abcdEFGHijklMNOP here", "api key"),
        ("stripe sk_test_4eC39HqLyjWDarjtT1zdp7dc here", "api key"),
        ("slack xoxb-123456789012-abcdefghijkl here", "api key"),
        ("aws ASIAIOSFODNN7EXAMPLE here", "api key"),
        ("gitlab glpat-abcdefghij0123456789 here", "api key"),
        ("npm npm_abcdefghijklmnopqrstuvwxyz0123456789 here", "api key"),
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
        "timestamps 1732600000000 and 1732600000123456 ms",
        "order 4111 1111 1111 1112 fails its checksum",
        "serial 1234 5678 9012 3456 is no card and no phone",
        "mixed 4111 1111-1111 1111 separators",
        "ids 9780306406157 and 1000000000000000009",
        "the sk_live_ prefix alone, and eyJ alone",
    ],
)
def test_leaves_ordinary_technical_text_untouched(text):
    assert redact(text) == text


def test_a_card_number_is_redacted_whole_under_its_own_label():
    assert redact("card 4111 1111 1111 1111") == "card [redacted: card number]"
    assert redact("card 4111-1111-1111-1111.") == "card [redacted: card number]."


def test_a_jwt_outside_a_bearer_header_is_redacted_whole():
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFU"
    assert redact(f'{{"id_token": "{token}"}}') == '{"id_token": "[redacted: jwt]"}'
