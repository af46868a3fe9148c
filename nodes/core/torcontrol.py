"""Tor's control protocol (control-spec.txt), sans-I/O: commands out, replies and asynchronous events in.

A reply is one or more lines `CODE SEP TEXT CRLF`: SEP `-` (more lines follow), `+` (a data block follows,
ended by a line with a single `.`, leading dots doubled) or ` ` (the last line). Codes 6xx are asynchronous
events (`650 CIRC ...`), which may arrive between a command and its reply. `ControlParser` turns bytes into
`Reply` objects; the helpers below read the pieces onionlab needs: GETINFO values, keyword arguments with
quoted strings, and the bootstrap status. Everything a peer sends that does not parse is a DecodeError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import DecodeError, LocalProtocolError

MAX_LINE = 64 * 1024  # tor's longest single lines (e.g. a CIRC event with a long path) are far shorter
MAX_REPLY_LINES = 100_000
_LINE = re.compile(rb"([0-9]{3})([ +-])(.*)", re.S)
_KEYWORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_SAFE_ARG = re.compile(r"[^\s\x00-\x1f\x7f]+")


@dataclass(frozen=True, slots=True)
class ReplyLine:
    status: int
    text: str
    data: str | None = None  # the data block after a `+` line, unstuffed, lines joined by "\n"


@dataclass(frozen=True, slots=True)
class Reply:
    lines: tuple[ReplyLine, ...]

    @property
    def status(self) -> int:
        return self.lines[-1].status

    @property
    def is_event(self) -> bool:
        return 600 <= self.status < 700

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        return self.lines[-1].text


def encode_command(keyword: str, *args: str) -> bytes:
    """One command line. Arguments must be single tokens: we never send CR, LF or spaces inside one (a bug
    of ours if we try, hence LocalProtocolError)."""
    for word in (keyword, *args):
        if not _SAFE_ARG.fullmatch(word):
            raise LocalProtocolError(f"control command word {word!r} is empty or has spaces or controls")
    return " ".join((keyword, *args)).encode("ascii") + b"\r\n"


def authenticate_command(cookie: bytes) -> bytes:
    """AUTHENTICATE with the cookie tor wrote into its DataDirectory (CookieAuthentication 1), in hex."""
    if len(cookie) != 32:
        raise DecodeError(f"a control auth cookie is 32 bytes, this one is {len(cookie)}")
    return encode_command("AUTHENTICATE", cookie.hex())


@dataclass
class ControlParser:
    """Feed bytes with `receive_data`, take complete replies with `next_reply` (None: need more bytes)."""

    _buffer: bytearray = field(default_factory=bytearray)
    _lines: list[ReplyLine] = field(default_factory=list)
    _data_head: tuple[int, str] | None = None  # inside a data block: the `+` line's status and text
    _data: list[str] = field(default_factory=list)

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def next_reply(self) -> Reply | None:
        while (end := self._buffer.find(b"\r\n")) >= 0:
            raw = bytes(self._buffer[:end])
            del self._buffer[:end + 2]
            reply = self._line(raw)
            if reply is not None:
                return reply
        if len(self._buffer) > MAX_LINE:
            raise DecodeError(f"a control line longer than {MAX_LINE} bytes")
        return None

    def _line(self, raw: bytes) -> Reply | None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("a control line that is not UTF-8") from None
        if self._data_head is not None:  # inside a data block
            if text == ".":
                status, head = self._data_head
                self._lines.append(ReplyLine(status, head, "\n".join(self._data)))
                self._data_head, self._data = None, []
            else:
                self._data.append(text[1:] if text.startswith(".") else text)
            return None
        match = _LINE.fullmatch(raw)
        if match is None:
            raise DecodeError(f"not a control reply line: {text[:80]!r}")
        status, sep, rest = int(match[1]), match[2], match[3].decode("utf-8")
        if self._lines and status != self._lines[0].status:
            raise DecodeError(f"reply line with status {status} inside a {self._lines[0].status} reply")
        if len(self._lines) >= MAX_REPLY_LINES:
            raise DecodeError(f"a control reply of more than {MAX_REPLY_LINES} lines")
        if sep == b"+":
            self._data_head = (status, rest)
            return None
        self._lines.append(ReplyLine(status, rest))
        if sep == b"-":
            return None
        reply, self._lines = Reply(tuple(self._lines)), []
        return reply


# -- reading the pieces ------------------------------------------------------------------------------------


def _unquote(text: str, start: int) -> tuple[str, int]:
    """The QuotedString starting at text[start] == '"': (its value, the index after its closing quote)."""
    out = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append({"n": "\n", "r": "\r", "t": "\t"}.get(text[i + 1], text[i + 1]))
            i += 2
        elif ch == '"':
            return "".join(out), i + 1
        else:
            out.append(ch)
            i += 1
    raise DecodeError(f"an unterminated quoted string: {text[start:start + 80]!r}")


def split_arguments(text: str) -> tuple[list[str], dict[str, str]]:
    """`POS POS KEY=VALUE KEY="quoted value"` -> (positional words, keyword values). A word is a keyword
    when it starts with NAME=; quoted strings (positional or values) may hold spaces and escapes."""
    positional: list[str] = []
    keywords: dict[str, str] = {}
    i = 0
    while i < len(text):
        if text[i] == " ":
            i += 1
            continue
        key = None
        if match := _KEYWORD.match(text, i):
            key = match[0][:-1]
            i = match.end()
        if i < len(text) and text[i] == '"':
            value, i = _unquote(text, i)
            if i < len(text) and text[i] != " ":
                raise DecodeError(f"text right after a quoted string: {text[:80]!r}")
        else:
            end = text.find(" ", i)
            end = len(text) if end < 0 else end
            value, i = text[i:end], end
        if key is None:
            positional.append(value)
        else:
            keywords[key] = value
    return positional, keywords


def getinfo_values(reply: Reply) -> dict[str, str]:
    """GETINFO's `250-key=value` lines (and `250+key=` data blocks) as a dict; the final `250 OK` is not a
    value. A refusal (552 unknown key, ...) is the caller's to check first."""
    values = {}
    for line in reply.lines[:-1] if reply.lines[-1].text == "OK" else reply.lines:
        key, eq, value = line.text.partition("=")
        if not eq:
            raise DecodeError(f"a GETINFO line without '=': {line.text[:80]!r}")
        values[key] = line.data if line.data is not None else value
    return values


def quoted_list(value: str) -> list[str]:
    """A GETINFO value that is a list of quoted strings (net/listeners/socks: `"a:1" "b:2"`)."""
    positional, keywords = split_arguments(value)
    if keywords:
        raise DecodeError(f"expected quoted strings, got {value[:80]!r}")
    return positional


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """Where tor's bootstrap is: the percent (100: it can build circuits), tor's tag and summary of the
    phase, and, when a problem holds it up, the warning and its reason (severity WARN)."""

    progress: int
    tag: str
    summary: str
    severity: str = "NOTICE"
    warning: str | None = None
    reason: str | None = None

    @property
    def done(self) -> bool:
        return self.progress >= 100


def parse_bootstrap(text: str) -> Bootstrap:
    """`NOTICE BOOTSTRAP PROGRESS=5 TAG=conn SUMMARY="..." [WARNING="..." REASON=...]`: the value of GETINFO
    status/bootstrap-phase, and the arguments of a STATUS_CLIENT BOOTSTRAP event."""
    return bootstrap_of(*split_arguments(text))


def bootstrap_of(positional: list[str] | tuple[str, ...], keywords: dict[str, str]) -> Bootstrap:
    """The Bootstrap of already split arguments (`SEVERITY BOOTSTRAP KEY=VALUE...`)."""
    if list(positional[1:2]) != ["BOOTSTRAP"] or "PROGRESS" not in keywords:
        raise DecodeError(f"not a bootstrap status: {' '.join(positional)[:80]!r}")
    try:
        progress = int(keywords["PROGRESS"])
    except ValueError:
        raise DecodeError(f"bootstrap PROGRESS is not a number: {keywords['PROGRESS']!r}") from None
    if not 0 <= progress <= 100:
        raise DecodeError(f"bootstrap PROGRESS {progress} is not a percent")
    return Bootstrap(progress, keywords.get("TAG", ""), keywords.get("SUMMARY", ""), positional[0],
                     keywords.get("WARNING"), keywords.get("REASON"))


@dataclass(frozen=True, slots=True)
class TorEvent:
    """One asynchronous event: its name (CIRC, STREAM, HS_DESC, STATUS_CLIENT, ...), positional words and
    keyword arguments of its first line."""

    name: str
    positional: tuple[str, ...]
    keywords: dict[str, str]


def parse_event(reply: Reply) -> TorEvent:
    if not reply.is_event:
        raise DecodeError(f"a {reply.status} reply is not an event")
    name, _, rest = reply.lines[0].text.partition(" ")
    if not name:
        raise DecodeError("an event without a name")
    positional, keywords = split_arguments(rest)
    return TorEvent(name, tuple(positional), keywords)


def parse_control_port_file(text: str) -> tuple[str, int]:
    """The file ControlPortWriteToFile names: `PORT=HOST:PORT` per control port; the first one's address."""
    for line in text.splitlines():
        key, eq, value = line.strip().partition("=")
        host, colon, port = value.rpartition(":")
        if key == "PORT" and eq and colon and port.isdigit() and 0 < int(port) < 65536:
            return host.strip("[]"), int(port)
    raise DecodeError(f"no PORT=HOST:PORT line in the control port file: {text[:80]!r}")
