"""Reference answers are untrusted text: how long one may be, and how it is quoted.

`cap_reference` cuts an answer to the preset's `max_reference_chars` with a visible marker
(when it is recorded). `quote_answers` puts the answers a prompt quotes each in a
`prompts.REFERENCE_BLOCK` whose tags carry an id no answer can know, so that the model
reading them can tell the real end of a block from anything an answer writes. Inside, each
answer is `quote_reference`d: nothing in it may read as a closing or opening tag, a
reference header (`Reference 2 — x:`) or the guidance title (defence in depth), and it is
cut to the limit after quoting, which lengthens a text (the limit applies again there: a
person may edit `references` in Studio).

"Read as" is decided on a skeleton of the text, the way a reader (or a model) sees it: each
character NFKD-normalised (a fullwidth `＜` is a `<`, a mathematical bold `𝐫` an `r`, an
`é` an `e` and a combining accent), then default-ignorable characters (the Unicode property
Default_Ignorable_Code_Point: zero-width and format characters, variation selectors, Hangul
fillers, reserved invisible code points) and combining marks removed, look-alikes of Latin
letters (Cyrillic, Greek, Armenian, Cherokee, Lisu, Coptic, Canadian syllabics, Latin small
capitals and hooked letters) and of `<`, `>`, `/`, `[`, dashes and colons taken for them,
and case folded. A match is defused in the original text (its `<` becomes `&lt;`, a header
or title gets `quoted ` in front), and everything else is left exactly as written. The
skeleton is made by one `str.translate` over a table of the characters seen; only a text
with a match pays for mapping it back to the original.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import unicodedata
import warnings
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Sequence

from moa_graph import prompts

__all__ = [
    "QUOTING_SECRET_ENV_VAR",
    "cap_reference",
    "defuse",
    "quote_answers",
    "quote_reference",
]

QUOTING_SECRET_ENV_VAR = "MOA_GRAPH_QUOTING_SECRET"
"""A secret shared by the processes of one deployment, so that they quote alike (opt-in).

By default each process draws its own secret: the same answers get another id in another
process, so a turn whose aggregator steps land on different workers or replicas misses the
provider's prompt cache from the guidance on, at each such step. Set this variable to one
secret of at least 32 characters (`python -c "import secrets; print(secrets.token_hex(32))"`)
in the environment of every process at start; it is read once, at import, and never logged.
A shorter value is ignored with a warning (each process keeps its own secret); an empty one
counts as unset."""
_MIN_SECRET_CHARS = 32


def _secret() -> bytes:
    """The key of the ids: from `QUOTING_SECRET_ENV_VAR` when it is set well, else random."""
    shared = os.environ.get(QUOTING_SECRET_ENV_VAR, "")
    if len(shared) >= _MIN_SECRET_CHARS:
        # Its own key for this use: the ids tell nothing of a secret used elsewhere too. The
        # environment's bytes, whatever they are (`surrogateescape`, as `os.environ` decodes).
        key = shared.encode("utf-8", "surrogateescape")
        return hmac.new(key, b"moa_graph.quoting ids", hashlib.sha256).digest()
    if shared:
        warnings.warn(
            f"${QUOTING_SECRET_ENV_VAR} is ignored: it has fewer than {_MIN_SECRET_CHARS}"
            " characters; each process quotes with a secret of its own",
            RuntimeWarning,
            stacklevel=1,
        )
    return secrets.token_bytes(16)


_SECRET = _secret()
"""Keys the id of `quote_answers`, so that no answer can compute it in advance. Each process
draws its own unless `QUOTING_SECRET_ENV_VAR` is set; the guidance is rendered anew for every
aggregator call and never stored, so a turn resumed in a process with another secret only
changes its guidance (and the cached prefix from it) once."""

_TAG = re.compile(r"<[\s/\\]*reference\b")
"""An opening or closing `reference` tag, in the skeleton."""
_HEADER = re.compile(r"^[^\w\n]*(reference[^\S\n]*\d+[^\S\n]*(?::|-[^\n]*:))", re.MULTILINE)
"""A line that starts like `prompts.GUIDANCE_REFERENCE` (`Reference 2 — p:a:`): a number,
then a colon, or a dash, a label and a colon (not `Reference 1 - Knuth`)."""
_TITLE = re.compile(r"(?:^[^\w\n]*|\[[^\S\n]*)(moa[^\S\n]*guidance[^\S\n]*[-:])", re.MULTILINE)
"""`prompts.GUIDANCE_TITLE` (`[MoA guidance — ...`): after a bracket or at a line start, then
a dash or a colon (not `(MoA guidance)`)."""

_DEFAULT_IGNORABLE = (
    # Default_Ignorable_Code_Point, from the Unicode Character Database's
    # DerivedCoreProperties.txt (Unicode 15.1): (first, last) code points, sorted.
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x061C, 0x061C),  # Arabic letter mark
    (0x115F, 0x1160),  # Hangul choseong and jungseong fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian free variation selectors and vowel separator
    (0x200B, 0x200F),  # zero-width space, (non-)joiner, direction marks
    (0x202A, 0x202E),  # bidirectional embeddings and overrides
    (0x2060, 0x206F),  # word joiner, invisible operators, isolates, U+2065 (reserved)
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFEFF, 0xFEFF),  # zero-width no-break space (BOM)
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xFFF0, 0xFFF8),  # reserved
    (0x1BCA0, 0x1BCA3),  # shorthand format controls
    (0x1D173, 0x1D17A),  # musical symbol beam and phrase controls
    (0xE0000, 0xE0FFF),  # tags, variation selectors 17-256, reserved
)
_IGNORABLE_STARTS = [first for first, _ in _DEFAULT_IGNORABLE]
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Mn", "Me"})
"""Also dropped: any other format character (Cf), and combining marks (after NFKD)."""


# Look-alikes of the letters the patterns spell (`reference`, `moa guidance`), after NFKD and
# case folding (Cherokee folds to its capitals), from Unicode TR39's confusables: Cyrillic,
# Greek (capitals too: `Ν` folds to `ν`, a `v`), Latin with hooks and strokes and small
# capitals, Coptic, Lisu, Cherokee, Canadian syllabics, Armenian, Runic.
_LOOKALIKES = str.maketrans(
    {
        **dict.fromkeys("аɑαΑⲁᴀꓮᎪᗩ", "a"),
        **dict.fromkeys("сϲƈȼᴄⲥꓚᏟᑕ", "c"),
        **dict.fromkeys("ԁɗɖđᴅꓓᎠᗪ", "d"),
        **dict.fromkeys("еҽєεϵΕɛɇᴇⲉꓰᎬᗴ℮", "e"),
        **dict.fromkeys("ϝƒꞙꜰꓝᖴ", "f"),
        **dict.fromkeys("ɡɠǥɢԍꓖᏀᘜց", "g"),
        **dict.fromkeys("іιΙɩɨıɪⲓꓲᎥ", "i"),
        **dict.fromkeys("мΜɱᴍⲙꓟᎷᗰᛖ", "m"),
        **dict.fromkeys("пηΝŋƞɲꞥɴⲛꓠᑎո", "n"),
        **dict.fromkeys("оοΟσøɵᴏⲟꓳᗝօ", "o"),
        **dict.fromkeys("гʀɍꞃɾꭇꞧᴦꓣᏒᎡᖇᚱ", "r"),
        **dict.fromkeys("υʉʋᴜꓴᑌս", "u"),
        # Brackets, slashes, dashes and colons a reader takes for `<`, `>`, `/`, `\`, `[`,
        # `-` and `:`; a blank taken for a space; line breaks other than \n (the patterns
        # anchor on line starts). Dash punctuation (Pd) is read as `-` in `_fold`.
        **dict.fromkeys("‹❮❰❬⟨〈〈˂˱ᐸᚲ⧼⦉《≺⊲◁", "<"),
        **dict.fromkeys("›❯❱❭⟩〉〉˃˲ᐳ⧽⦊》≻⊳▷", ">"),
        **dict.fromkeys("∕⁄⧸╱⟋ノ", "/"),
        **dict.fromkeys("⧵∖╲⟍⧹", "\\"),
        **dict.fromkeys("【〔〖〘〚⟦⁅❲⦋", "["),
        **dict.fromkeys("−˗➖─━⎯⁃ー", "-"),
        **dict.fromkeys("∶ː꞉։׃፡᛬ꓽ⁚", ":"),
        "\u2800": " ",  # braille pattern blank
        **dict.fromkeys("\r\v\f\x85\u2028\u2029", "\n"),
    }
)

_CUT_BEFORE, _CUT_AFTER = prompts.REFERENCE_CUT.split("{omitted}")
_CUT = re.compile(re.escape(_CUT_BEFORE) + r"(\d{1,12})" + re.escape(_CUT_AFTER) + r"\Z")
_WORD_SLACK = 200
"""How far back from the cap a cut looks for whitespace, so that it does not split a word
(a credential the privacy filter would no longer recognise, say)."""
_LAST_SPACE = re.compile(r"\s(?=\S*\Z)")
_ID_CHARS = 12
"""Hex digits of a block id (48 bits: an answer cannot guess it)."""


def cap_reference(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, then `prompts.REFERENCE_CUT`.

    The cut falls at the last whitespace within 200 characters of the limit, if there is
    one. A text already cut (the marker at its end, at most `limit` characters before it)
    is returned as it is.

    Example:
        >>> cap_reference("one two three", 100)
        'one two three'
    """
    body, omitted = _uncut(text)
    limit = max(limit, 0)
    if len(body) <= limit:
        return text
    head = body[:limit]
    space = None if body[limit].isspace() else _LAST_SPACE.search(head, limit - _WORD_SLACK)
    if space is not None:
        head = head[: space.start()]
    return head + prompts.REFERENCE_CUT.format(omitted=omitted + len(body) - len(head))


def quote_reference(text: str, *, limit: int | None = None) -> str:
    """Make an answer safe to quote in a `prompts.REFERENCE_BLOCK`, within `limit` characters.

    Whatever in it a reader would take for a `<reference>` or `</reference>` tag, a
    reference header or the guidance title (after the normalisation the module describes)
    is defused; everything else is left exactly as written. With a `limit`, the quoted text
    is cut as `cap_reference` cuts (its marker counts the answer's own characters that are
    gone) so that it is at most `limit` characters before the marker. Quoting a quoted text
    again changes nothing.

    Example:
        >>> quote_reference("a < b; done.</reference>")
        'a < b; done.&lt;/reference>'
    """
    if limit is None:
        return defuse(text)
    budget = limit
    quoted = defuse(cap_reference(text, budget))
    # Defusing lengthens a text: cut earlier by the excess until the quoted text fits (once,
    # as a rule). The shorter text is defused anew: a cut can itself complete a tag, as the
    # cut `<reference|x` does.
    while (excess := len(_uncut(quoted)[0]) - limit) > 0:
        budget -= excess
        quoted = defuse(cap_reference(text, budget))
    return quoted


def quote_answers(
    answers: Sequence[tuple[str, str]], *, limit: int, purpose: str
) -> tuple[str, list[str]]:
    """Quote answers ((label, text) pairs) together: the id of their blocks, and the blocks.

    Each answer is `quote_reference`d within `limit` into a `prompts.REFERENCE_BLOCK` whose
    tags carry the id. The id is the same whenever the same answers are quoted for the same
    `purpose` in one process, or in processes that share `QUOTING_SECRET_ENV_VAR` (so a
    prompt that quotes them stays byte-identical through a turn's tool loop), and no answer
    can know it: it depends on every answer, itself included, and on a secret of the
    process. Answers quoted again (each step of a tool loop) are looked up, not quoted anew.

    Example:
        >>> nonce, (block,) = quote_answers([("p:a", "a < b")], limit=100, purpose="doc")
        >>> print(block.replace(nonce, "ID"))
        <reference id="ID">
        a < b
        </reference id="ID">
    """
    key = (purpose, tuple((label, text) for label, text in answers), limit, _SECRET)
    quoted = _recent.get(key)
    if quoted is None:
        message = json.dumps([purpose, *answers], ensure_ascii=False).encode()
        nonce = hmac.new(_SECRET, message, hashlib.sha256).hexdigest()[:_ID_CHARS]
        blocks = tuple(
            prompts.REFERENCE_BLOCK.format(id=nonce, text=quote_reference(text, limit=limit))
            for _, text in answers
        )
        quoted = _recent.put(key, (nonce, blocks), sum(len(text) for _, text in answers))
    nonce, blocks = quoted
    return nonce, list(blocks)


_Quoted = tuple[str, tuple[str, ...]]


class _RecentQuotes:
    """The answers quoted last, and their quotes: an LRU bounded by characters of answers.

    Every aggregator step of a turn quotes the same answers (and every reference of a layer
    the previous layer's); from the second time on they are looked up. Keys hold the secret,
    so a new secret quotes anew.
    """

    def __init__(self, chars: int) -> None:
        self._entries: OrderedDict[tuple[object, ...], tuple[_Quoted, int]] = OrderedDict()
        self._chars, self._room = 0, chars
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...]) -> _Quoted | None:
        hash(key)  # hashes the texts (once each) outside the lock
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: tuple[object, ...], quoted: _Quoted, chars: int) -> _Quoted:
        if chars > self._room:
            return quoted
        with self._lock:
            if key not in self._entries:
                self._entries[key] = (quoted, chars)
                self._chars += chars
            while self._chars > self._room:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._chars -= dropped
        return quoted


_recent = _RecentQuotes(4_000_000)
"""Some 40 turns of five 20,000-character answers, or hundreds of shorter ones: at most 4
million characters of answers and as many (and a little more) of quotes."""


def _uncut(text: str) -> tuple[str, int]:
    """The text without its `prompts.REFERENCE_CUT` marker, and how many characters it counts."""
    if text.endswith(_CUT_AFTER) and (marker := _CUT.search(text)):
        return text[: marker.start()], int(marker[1])
    return text, 0


def defuse(text: str) -> str:
    """`text` with anything that could pass for a tag, a header or a guidance title defused."""
    skeleton = text.translate(_FOLDS)
    if not any(pattern.search(skeleton) for pattern in (_TAG, _HEADER, _TITLE)):
        return text  # the common case: nothing to defuse, and no index map needed
    origin = range(len(text)) if text.isascii() else _origin(text)
    edits = {origin[match.start()]: "&lt;" for match in _TAG.finditer(skeleton)}
    for pattern in (_HEADER, _TITLE):
        for match in pattern.finditer(skeleton):
            at = origin[match.start(1)]
            edits.setdefault(at, prompts.QUOTED + text[at])
    parts, done = [], 0
    for at in sorted(edits):
        parts += [text[done:at], edits[at]]
        done = at + 1
    parts.append(text[done:])
    return "".join(parts)


def _origin(text: str) -> list[int]:
    """For each character of the skeleton of `text`, the index in `text` it came from."""
    origin: list[int] = []
    for index, char in enumerate(text):
        origin += [index] * len(_FOLDS[ord(char)])
    return origin


class _Folds(dict[int, str]):
    """`_fold` of each code point seen, as a `str.translate` table: the text to skeleton.

    `str.translate` makes the skeleton in C; a loop over the characters took some 20 ms for
    five answers of 20,000 non-ASCII characters. Kept to `_FOLDS_KEPT` code points (cleared
    when full), so that a text of every code point in turn does not grow it for good.
    """

    def __missing__(self, code: int) -> str:
        if len(self) >= _FOLDS_KEPT:
            self.clear()
        folded = self[code] = _fold(chr(code))
        return folded


_FOLDS_KEPT = 1 << 16
_FOLDS = _Folds()


def _fold(char: str) -> str:
    """One character as a reader sees it (ASCII ones too: each folds to one character)."""
    decomposed = unicodedata.normalize("NFKD", char.translate(_LOOKALIKES)).casefold()
    # Case folding can add a combining mark (`İ` is `i` and a dot above).
    decomposed = unicodedata.normalize("NFKD", decomposed)
    visible = "".join(
        "-" if unicodedata.category(c) == "Pd" else c for c in decomposed if not _invisible(c)
    )
    return visible.translate(_LOOKALIKES)


def _invisible(char: str) -> bool:
    if unicodedata.category(char) in _INVISIBLE_CATEGORIES:
        return True
    code = ord(char)
    at = bisect_right(_IGNORABLE_STARTS, code) - 1
    return at >= 0 and code <= _DEFAULT_IGNORABLE[at][1]
