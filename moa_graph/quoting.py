"""Reference answers are untrusted text: how long one may be, and how it is quoted.

`cap_reference` cuts an answer to the preset's `max_reference_chars` with a visible marker;
the answer is capped when it is recorded and again wherever it is quoted (a person may edit
`references` in Studio). `quote_reference` makes an answer safe to put between
`<reference>` tags: nothing in it may read as a closing or opening tag, a reference header
(`Reference 2 — x:`) or the guidance title.

"Read as" is decided on a skeleton of the text, the way a reader (or a model) sees it:
default-ignorable characters (Unicode category Cf, such as zero-width spaces, joiners and
the soft hyphen, plus the combining grapheme joiner, variation selectors and Hangul
fillers) removed, each character NFKC-normalised (a fullwidth `＜` is a `<`), common
Cyrillic, Greek and small-capital look-alikes of Latin letters and of `<` and `/` taken for
them, and case folded. A match is defused in the original text (its `<` becomes `&lt;`, a
header or title gets `quoted ` in front), and everything else is left exactly as written.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

from moa_graph import prompts

__all__ = ["cap_reference", "quote_reference"]

_DASH = r"[-\u2010-\u2015\u2212]"
_TAG = re.compile(r"<[\s/\\]*reference\b")
"""An opening or closing `reference` tag, in the skeleton."""
_HEADER = re.compile(rf"^[^\w\n]*(reference[^\S\n]*\d+[^\S\n]*{_DASH})", re.MULTILINE)
"""A line that starts like `prompts.GUIDANCE_REFERENCE` (`Reference 2 —`)."""
_TITLE = re.compile(r"(?:^[^\w\n]*|[^\w\s][^\S\n]*)(moa[^\S\n]*guidance\b)", re.MULTILINE)
"""`prompts.GUIDANCE_TITLE` (`[MoA guidance — ...`): after a bracket or at a line start."""

_LOOKALIKES = str.maketrans(
    {
        # Cyrillic
        **dict(zip("АВСЕНІЈКМОРЅТХУҮԚԜӀ", "abcehijkmopstxyyqwl", strict=True)),
        **dict(zip("авсеһнгпіјкмортѕхуԛԝӏԁ", "abcehhrnijkmoptsxyqwld", strict=True)),
        # Greek
        **dict(zip("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ", "abezhikmnoptyx", strict=True)),
        **dict(zip("αβγεϵηικνορτυχϲϳωϝ", "abyeenikvoptuxcjwf", strict=True)),
        # Latin small capitals and IPA letters
        **dict(zip("ᴀʙᴄᴅᴇꜰɢʜɪᴊᴋʟᴍɴᴏᴘʀꜱᴛᴜᴠᴡʏᴢɑɡı", "abcdefghijklmnoprstuvwyzagi", strict=True)),
        # Angle brackets and slashes a reader takes for `<`, `>`, `/` and `\`
        **dict.fromkeys("\u2039\u276e\u27e8\u2329\u3008\u1438", "<"),
        **dict.fromkeys("\u203a\u276f\u27e9\u232a\u3009\u1433", ">"),
        **dict.fromkeys("∕⁄⧸", "/"),
        **dict.fromkeys("⧵∖", "\\"),
        # Line breaks other than \n (the patterns anchor on line starts)
        **dict.fromkeys("\r\v\f\x85\u2028\u2029", "\n"),
    }
)
_IGNORABLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0")
_CUT_BEFORE, _CUT_AFTER = prompts.REFERENCE_CUT.split("{omitted}")
_CUT = re.compile(re.escape(_CUT_BEFORE) + r"(\d{1,12})" + re.escape(_CUT_AFTER) + r"\Z")
_WORD_SLACK = 200
"""How far back from the cap a cut looks for whitespace, so that it does not split a word
(a credential the privacy filter would no longer recognise, say)."""
_LAST_SPACE = re.compile(r"\s(?=\S*\Z)")


def cap_reference(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, then `prompts.REFERENCE_CUT`.

    The cut falls at the last whitespace within 200 characters of the limit, if there is
    one. A text already cut (the marker at its end, at most `limit` characters before it)
    is returned as it is.

    Example:
        >>> cap_reference("one two three", 100)
        'one two three'
    """
    body, omitted = text, 0
    if text.endswith(_CUT_AFTER) and (marker := _CUT.search(text)):
        body, omitted = text[: marker.start()], int(marker[1])
    if len(body) <= limit:
        return text
    head = body[:limit]
    space = None if body[limit].isspace() else _LAST_SPACE.search(head, limit - _WORD_SLACK)
    if space is not None:
        head = head[: space.start()]
    return head + prompts.REFERENCE_CUT.format(omitted=omitted + len(body) - len(head))


def quote_reference(text: str) -> str:
    """Make an answer safe to put between `<reference>` tags.

    Whatever in it a reader would take for a `<reference>` or `</reference>` tag, a
    reference header or the guidance title (after the normalisation the module describes)
    is defused; everything else is left exactly as written.

    Example:
        >>> quote_reference("a < b; done.</reference>")
        'a < b; done.&lt;/reference>'
    """
    skeleton, origin = _skeleton(text)
    edits = {origin[match.start()]: "&lt;" for match in _TAG.finditer(skeleton)}
    for pattern in (_HEADER, _TITLE):
        for match in pattern.finditer(skeleton):
            at = origin[match.start(1)]
            edits.setdefault(at, prompts.QUOTED + text[at])
    if not edits:
        return text
    parts, done = [], 0
    for at in sorted(edits):
        parts += [text[done:at], edits[at]]
        done = at + 1
    parts.append(text[done:])
    return "".join(parts)


def _skeleton(text: str) -> tuple[str, Sequence[int]]:
    """The text as a reader sees it, and for each of its characters the index it came from."""
    if text.isascii():
        return text.translate(_LOOKALIKES).lower(), range(len(text))
    parts: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        if folded := _fold(char):
            parts.append(folded)
            origin += [index] * len(folded)
    return "".join(parts), origin


@lru_cache(maxsize=4096)
def _fold(char: str) -> str:
    if char in _IGNORABLE or unicodedata.category(char) == "Cf" or _variation_selector(char):
        return ""
    folded = unicodedata.normalize("NFKC", char).translate(_LOOKALIKES).casefold()
    return folded.translate(_LOOKALIKES)


def _variation_selector(char: str) -> bool:
    code = ord(char)
    return 0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF
