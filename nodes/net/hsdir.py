"""The HSDir function of a relay: keep onion-service descriptors by blinded key and serve them.

Onion services and clients reach it over BEGIN_DIR streams (rend-spec-v3 2.2.4, dir-spec), one HTTP request
per stream:

    POST /tor/hs/3/publish     body: the descriptor; 200 with no body (as C tor), 400 with the reason, 413
                               over the size limit, 409 when this very revision is stored already
                               (ALREADY_STORED)
    GET  /tor/hs/3/<key>       <key>: standard base64 of the 32-byte blinded key, '=' padding optional;
                               200 with the descriptor as published, 404 if none

What an HSDir can check without knowing the service (it never learns the onion address): the outer
document parses, the descriptor-signing-key certificate is signed by the blinded key and valid now, and the
document signature verifies (hs_descriptor.UncheckedDescriptor.check). On top of that, as C tor's HSDir
cache does: a descriptor is at most 50,000 bytes; a revision counter lower than or equal to the stored one
for the same blinded key is refused; an entry is dropped `descriptor-lifetime` minutes after it was stored
(or when its certificate expires, if sooner). Unlike C tor, the stored revision itself is refused with its
own status, 409, not counted as an error: the service re-sends it to an HSDir that left the consensus and
came back, and takes 409 as "published".
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass

import trio

from nodes.core.errors import DecodeError, RemoteProtocolError
from nodes.core.hs_descriptor import MAX_DESCRIPTOR_SIZE, CheckedOuterDescriptor, parse_descriptor

from . import dircache
from .clock import wall
from .dircache import Documents
from .events import EventLog
from .httpio import HttpError, serve_http
from .metrics import Metrics

PUBLISH_PATH = "/tor/hs/3/publish"
FETCH_PREFIX = "/tor/hs/3/"
MAX_DESCRIPTORS = 10_000
BLINDED_KEY_BYTES = 32
ALREADY_STORED = 409  # the answer to an upload of the revision we hold: the uploader's goal is met


class StaleRevision(RemoteProtocolError):
    """A descriptor whose revision counter is below the one stored for its blinded key (a replay)."""

    kind = "revision"


class AlreadyStored(Exception):
    """The descriptor's revision is the one stored for its blinded key: nothing to do (not the peer's fault:
    a service re-sends its revision to an HSDir that left the consensus and came back)."""


class StoreFull(Exception):
    """The store holds its maximum of descriptors; a new blinded key has to wait for one to expire."""


@dataclass(frozen=True, slots=True)
class StoredDescriptor:
    document: bytes
    revision: int
    expires: float  # Unix time


def parse_blinded_key(text: str) -> bytes:
    """The blinded key from the last path segment of a fetch; DecodeError unless it is 32 bytes of standard
    base64 (with or without '=' padding)."""
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError("blinded key is not standard base64") from None
    if len(key) != BLINDED_KEY_BYTES:
        raise DecodeError(f"blinded key is {len(key)} bytes, expected {BLINDED_KEY_BYTES}")
    return key


def _text(status: int, message: str) -> tuple[int, str, bytes]:
    return status, "text/plain", message.encode("ascii", "replace") + b"\n"


class HsDirStore:
    """The descriptors this relay holds, by blinded key. `clock` gives Unix time (tests pass their own)."""

    def __init__(self, metrics: Metrics, events: EventLog, *, max_descriptors: int = MAX_DESCRIPTORS,
                 clock: Callable[[], float] = wall, documents: Documents | None = None) -> None:
        self.metrics = metrics
        self.documents = documents  # the relay's directory cache: what a BEGIN_DIR asks besides /tor/hs/
        self.events = events
        self.max_descriptors = max_descriptors
        self.clock = clock
        self._store: dict[bytes, StoredDescriptor] = {}
        metrics.describe("hsdir_descriptors", "gauge", "onion-service descriptors held")
        metrics.describe("hsdir_publishes_total", "counter", "descriptor uploads by result")
        metrics.describe("hsdir_fetches_total", "counter", "descriptor fetches by result")
        metrics.describe("errors_total", "counter", "remote protocol errors by kind")

    def __len__(self) -> int:
        return len(self._store)

    # -- the store -----------------------------------------------------------------------------------------
    def publish(self, document: bytes) -> CheckedOuterDescriptor:
        """Check and store a descriptor. RemoteProtocolError (DecodeError, SignatureError, ExpiredError,
        StaleRevision) if refused; AlreadyStored for the stored revision; StoreFull when a new blinded key
        finds no room."""
        now = self.clock()
        checked = parse_descriptor(document).check(int(now))
        self._expire(now)
        old = self._store.get(checked.blinded_key)
        if old is not None and checked.revision_counter == old.revision:
            raise AlreadyStored(f"revision {old.revision} is stored already")
        if old is not None and checked.revision_counter < old.revision:
            raise StaleRevision(f"revision {checked.revision_counter} is below the stored "
                                f"revision {old.revision}")
        if old is None and len(self._store) >= self.max_descriptors:
            raise StoreFull(f"holding {self.max_descriptors} descriptors already")
        expires = min(now + 60 * checked.lifetime, checked.expires)
        entry = StoredDescriptor(bytes(document), checked.revision_counter, expires)
        self._store[checked.blinded_key] = entry
        self.metrics.set("hsdir_descriptors", len(self._store))
        return checked

    def lookup(self, blinded_key: bytes) -> bytes | None:
        """The stored descriptor for `blinded_key`, unless there is none or it expired."""
        entry = self._store.get(blinded_key)
        if entry is None or entry.expires <= self.clock():
            return None
        return entry.document

    def _expire(self, now: float) -> None:
        expired = [k for k, e in self._store.items() if e.expires <= now]
        for key in expired:
            del self._store[key]
        if expired:
            self.metrics.set("hsdir_descriptors", len(self._store))

    # -- HTTP ----------------------------------------------------------------------------------------------
    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """Answer one request on a BEGIN_DIR stream (RelayEngine's dir_handler). Bad HTTP and timeouts are
        counted here; a broken stream propagates to the engine, which counts it."""
        try:
            await serve_http(stream, self.handle, max_body=MAX_DESCRIPTOR_SIZE)
        except HttpError as e:
            self._remote_error("request", e)
        except trio.TooSlowError:
            self.metrics.inc("errors_total", kind="timeout")
            self.events.emit("error", kind="timeout", detail="directory request too slow")

    async def handle(self, method: str, target: str, body: bytes) -> tuple[int, str, bytes]:
        path = target.split("?", 1)[0]
        if path == PUBLISH_PATH:
            return self._post(body) if method == "POST" else _text(405, f"{method} not allowed on {path}")
        if path.startswith(FETCH_PREFIX):
            if method not in ("GET", "HEAD"):
                return _text(405, f"{method} not allowed on {path}")
            return self._get(path.removeprefix(FETCH_PREFIX))
        if method in ("GET", "HEAD") and self.documents is not None:
            found = dircache.answer(path, self.documents)
            if found is not None:
                return found
        return _text(404, f"not found: {path[:100]}")

    def _post(self, body: bytes) -> tuple[int, str, bytes]:
        try:
            checked = self.publish(body)
        except RemoteProtocolError as e:
            self.metrics.inc("hsdir_publishes_total", result="rejected")
            self._remote_error("descriptor", e)
            return _text(400, f"descriptor rejected ({e.kind}): {e}")
        except AlreadyStored as e:
            self.metrics.inc("hsdir_publishes_total", result="already_stored")
            return _text(ALREADY_STORED, f"descriptor not stored: {e}")
        except StoreFull as e:
            self.metrics.inc("hsdir_publishes_total", result="full")
            return _text(503, f"descriptor not stored: {e}")
        self.metrics.inc("hsdir_publishes_total", result="stored")
        self.events.emit("descriptor_stored", hsdir=self.events.node, blinded_key=checked.blinded_key,
                         revision=checked.revision_counter)
        # no body, as C tor's HSDirs answer: C tor's client warns about a non-empty body under 32 bytes
        # ("labeled as uncompressed, but it seems to be confusing binary junk", dirclient.c body_is_plausible)
        return 200, "text/plain", b""

    def _get(self, key_text: str) -> tuple[int, str, bytes]:
        try:
            key = parse_blinded_key(key_text)
        except DecodeError as e:
            self.metrics.inc("hsdir_fetches_total", result="bad_request")
            self._remote_error("fetch", e)
            return _text(400, str(e))
        document = self.lookup(key)
        if document is None:
            self.metrics.inc("hsdir_fetches_total", result="missing")
            return _text(404, "no descriptor for this blinded key")
        self.metrics.inc("hsdir_fetches_total", result="found")
        return 200, "text/plain", document

    def _remote_error(self, what: str, e: RemoteProtocolError) -> None:
        self.metrics.inc("errors_total", kind=e.kind)
        self.events.emit("error", kind=e.kind, detail=f"{what}: {e}")
