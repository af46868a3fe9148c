"""The dir-spec document meta-format (dir-spec 1.2): items of `Keyword args` lines, each optionally followed
by one object (`-----BEGIN TYPE-----`, base64, `-----END TYPE-----`). Every Tor directory document (server
descriptors, microdescriptors, authority key certificates, consensuses) is read through `parse_items`.

Parsing is strict where Tor is strict (ASCII, LF line ends, well-formed objects) and tolerant where dir-spec
asks for it: unknown keywords are kept as items and ignored by the document parsers ("Implementations MUST
ignore unknown keywords"), so that a newer C tor's documents still parse.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import datetime
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .errors import DecodeError

MAX_DOCUMENT = 4 * 1024 * 1024  # a consensus of a few thousand relays is well under this
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_OBJECT_TYPE = re.compile(r"[A-Za-z0-9 ]+")
MAX_SHARED_FLAG_SETS = 1024  # distinct flag sets kept for sharing; a network has a few dozen
_shared_flag_sets: dict[frozenset[str], frozenset[str]] = {}


@dataclass(frozen=True, slots=True)
class Item:
    keyword: str
    args: tuple[str, ...]
    object_type: str | None = None
    object_data: bytes | None = None
    start: int = 0  # byte offset of the keyword line in the document (for signed ranges)
    end: int = 0  # byte offset just past the item (its object included)
    rest: str = ""  # the keyword line after the keyword and its spaces, verbatim (C tor's CONCAT_ARGS)

    @property
    def line(self) -> str:
        return " ".join((self.keyword, *self.args))

    def object(self, expected_type: str, what: str) -> bytes:
        """The object's bytes; DecodeError when it is missing or of another type."""
        if self.object_data is None or self.object_type != expected_type:
            raise DecodeError(f"{what}: expected a {expected_type} object after {self.keyword}")
        return self.object_data

    def arg(self, index: int, what: str) -> str:
        if index >= len(self.args):
            raise DecodeError(f"{what}: {self.keyword} needs at least {index + 1} argument(s)")
        return self.args[index]


def parse_items(data: bytes, what: str) -> list[Item]:
    """Every item of a document, in order. DecodeError for anything that is not the meta-format."""
    if len(data) > MAX_DOCUMENT:
        raise DecodeError(f"{what}: {len(data)} bytes, at most {MAX_DOCUMENT}")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise DecodeError(f"{what}: not ASCII") from None
    if "\r" in text or "\0" in text:
        raise DecodeError(f"{what}: CR or NUL in the document")
    if text and not text.endswith("\n"):
        raise DecodeError(f"{what}: the last line does not end in LF")
    items: list[Item] = []
    lines = text.split("\n")[:-1]
    offsets = []
    pos = 0
    for line in lines:
        offsets.append(pos)
        pos += len(line) + 1
    i = 0
    while i < len(lines):
        line, start = lines[i], offsets[i]
        parts = line.split(" ")
        if line.startswith("opt "):  # dir-spec: "opt" before a keyword is ignored
            parts = parts[1:]
        keyword, args = parts[0], tuple(a for a in parts[1:] if a)
        if not _KEYWORD.fullmatch(keyword):
            raise DecodeError(f"{what}: bad keyword line {line[:60]!r}")
        rest = " ".join(parts[1:]).lstrip(" ")
        i += 1
        obj_type = obj = None
        if i < len(lines) and lines[i].startswith("-----BEGIN "):
            obj_type, obj, i = _read_object(lines, i, what)
        end = offsets[i] if i < len(lines) else len(text)
        items.append(Item(keyword, args, obj_type, obj, start, end, rest))
    return items


def _read_object(lines: list[str], i: int, what: str) -> tuple[str, bytes, int]:
    begin = lines[i]
    if not (begin.endswith("-----") and _OBJECT_TYPE.fullmatch(begin[11:-5])):
        raise DecodeError(f"{what}: bad object line {begin[:60]!r}")
    kind = begin[11:-5]
    body = []
    i += 1
    while i < len(lines) and not lines[i].startswith("-----END "):
        body.append(lines[i])
        i += 1
    if i == len(lines) or lines[i] != f"-----END {kind}-----":
        raise DecodeError(f"{what}: object {kind} has no matching END line")
    try:
        data = base64.b64decode("".join(body), validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError(f"{what}: object {kind} is not base64") from None
    return kind, data, i + 1


class Items:
    """Keyword lookups over a parsed document with dir-spec's "exactly once" / "at most once" rules."""

    def __init__(self, items: Iterable[Item], what: str) -> None:
        self.items = list(items)
        self.what = what

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    def all(self, keyword: str) -> list[Item]:
        return [it for it in self.items if it.keyword == keyword]

    def one(self, keyword: str) -> Item:
        found = self.all(keyword)
        if len(found) != 1:
            raise DecodeError(f"{self.what}: {keyword} must appear exactly once, found {len(found)}")
        return found[0]

    def optional(self, keyword: str) -> Item | None:
        found = self.all(keyword)
        if len(found) > 1:
            raise DecodeError(f"{self.what}: {keyword} may appear at most once, found {len(found)}")
        return found[0] if found else None


def shared_flags(args: Iterable[str]) -> frozenset[str]:
    """The flags of an "s" line as one frozenset object per distinct set, of interned strings: a vote or
    consensus of 280 relays has a handful of distinct sets, and a parsed copy per relay cost about 600 bytes
    (the set and its strings), most of an authority's parsed votes (docs/scale.md). Bounded, so that odd flag
    sets from a peer cannot grow the table without end (past the bound a set is simply not shared)."""
    flags = frozenset(args)
    found = _shared_flag_sets.get(flags)
    if found is None:
        found = frozenset(sys.intern(f) for f in flags)
        if len(_shared_flag_sets) < MAX_SHARED_FLAG_SETS:
            _shared_flag_sets[found] = found
    return found


def shared_text(text: str) -> str:
    """`text` interned: a nickname, address, version or protocol line that every vote and the consensus
    repeat for one relay is then held once (interned strings are freed when nothing refers to them)."""
    return sys.intern(text)


def b64decode_unpadded(text: str, what: str) -> bytes:
    """Base64 as Tor writes it in keyword lines: `=` padding optional."""
    if not re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", text):
        raise DecodeError(f"{what}: not base64")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError(f"{what}: not base64") from None


def b64encode_unpadded(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def parse_int(text: str, what: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    if not re.fullmatch(r"-?[0-9]+", text):
        raise DecodeError(f"{what}: {text[:20]!r} is not an integer")
    digits = text.lstrip("-").lstrip("0") or "0"
    if len(digits) > 40:  # beyond any range here, and int() refuses more than 4300 digits
        raise DecodeError(f"{what}: {text[:20]!r}... is outside {lo}..{hi}")
    value = -int(digits) if text.startswith("-") else int(digits)
    if not lo <= value <= hi:
        raise DecodeError(f"{what}: {value} is outside {lo}..{hi}")
    return value


def format_time(unix: int) -> str:
    """dir-spec's `YYYY-MM-DD HH:MM:SS` (UTC)."""
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def parse_time(date: str, clock: str, what: str) -> int:
    """The two arguments `YYYY-MM-DD` `HH:MM:SS` -> Unix seconds."""
    if not (re.fullmatch(r"\d{4}-\d{2}-\d{2}", date) and re.fullmatch(r"\d{2}:\d{2}:\d{2}", clock)):
        raise DecodeError(f"{what}: bad time {date} {clock}")
    try:
        parsed = datetime.datetime.strptime(f"{date} {clock}", "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise DecodeError(f"{what}: bad time {date} {clock}") from None
    return calendar.timegm(parsed.timetuple())


# ---------------------------------------------------------------------------------------------------------
# Keyword rules: what each document type allows of each keyword it knows (dir-spec's multiplicity tags)

ANY_NUMBER = None  # a Rule's max_count for "Any number"


class Obj:
    """Whether an item may carry an object (C tor's NO_OBJ / NEED_OBJ / OBJ_OK)."""

    NONE = "none"
    NEEDED = "needed"
    OPTIONAL = "optional"


@dataclass(frozen=True, slots=True)
class Rule:
    """One keyword of a document type: how often it may occur, how many arguments it takes, its object.

    Multiplicities: exactly once = (1, 1), at most once = (0, 1), any number = (0, ANY_NUMBER), once or more
    = (1, ANY_NUMBER). `max_args` None means "extra arguments allowed" (dir-spec 1.2's default); 0 is
    dir-spec's "no extra arguments" for a keyword without arguments. `object_type`, when set, is the only
    object type allowed.
    """

    keyword: str
    min_count: int = 0
    max_count: int | None = 1
    min_args: int = 0
    max_args: int | None = None
    obj: str = Obj.NONE
    object_type: str | None = None


def check_rules(items: Iterable[Item], rules: Iterable[Rule], what: str) -> Items:
    """Enforce `rules` over a parsed document and wrap it in `Items`; keywords without a rule are ignored.

    DecodeError names the keyword and what is wrong: too many or too few occurrences, arguments or a
    missing, unexpected or mistyped object.
    """
    found = Items(items, what)
    for rule in rules:
        matching = found.all(rule.keyword)
        if len(matching) < rule.min_count:
            raise DecodeError(f"{what}: {rule.keyword} is missing" if rule.min_count == 1 else
                              f"{what}: {rule.keyword} must appear at least {rule.min_count} times")
        if rule.max_count is not None and len(matching) > rule.max_count:
            raise DecodeError(f"{what}: {rule.keyword} may appear at most {rule.max_count} time(s), "
                              f"found {len(matching)}")
        for item in matching:
            if len(item.args) < rule.min_args:
                raise DecodeError(f"{what}: {rule.keyword} needs at least {rule.min_args} argument(s)")
            if rule.max_args is not None and len(item.args) > rule.max_args:
                raise DecodeError(f"{what}: {rule.keyword} takes at most {rule.max_args} argument(s)")
            has_object = item.object_type is not None
            if rule.obj == Obj.NONE and has_object:
                raise DecodeError(f"{what}: {rule.keyword} must not carry an object")
            if rule.obj == Obj.NEEDED and not has_object:
                raise DecodeError(f"{what}: {rule.keyword} needs an object")
            if has_object and rule.object_type is not None and item.object_type != rule.object_type:
                raise DecodeError(f"{what}: {rule.keyword} carries a {item.object_type} object, "
                                  f"expected {rule.object_type}")
    return found


def trim_trailing_newlines(data: bytes) -> bytes:
    """The document without the extra blank lines dir-spec 2.1.1 says readers must tolerate at its end.

    One LF stays: `b"a\\n\\n\\n"` -> `b"a\\n"`. Tor (router.c) itself writes one extra LF after a descriptor.
    """
    end = len(data)
    while end >= 2 and data[end - 1] == 0x0A and data[end - 2] == 0x0A:
        end -= 1
    return data[:end]
