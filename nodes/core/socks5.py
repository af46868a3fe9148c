"""SOCKS5 (RFC 1928) with username/password (RFC 1929), server side, sans-I/O in the shape of h11; plus the
small client-side codec tests and tools use.

    server = Socks5Server()
    server.receive_data(bytes_from_client)      # b"" means the client closed
    event = server.next_event()                 # Greeting, UsernamePassword, ConnectRequest or NEED_DATA
    Greeting          -> send accept_method() (USERNAME/PASSWORD when offered, else NO AUTHENTICATION
                         REQUIRED) or, when greeting.method is None, reject_methods()
    UsernamePassword  -> send accept_credentials() (every pair is accepted)
    ConnectRequest    -> open the connection, then send reply(code)
    RemoteProtocolError from either call -> send failure_reply(error) (b"" when no reply is possible), close

Credentials are not a secret here: as with Tor's IsolateSOCKSAuth they are a stream-isolation key, and
`isolation_key` (b"" without authentication) is what the driver hands on. Only CONNECT is supported: BIND and
UDP ASSOCIATE get COMMAND_NOT_SUPPORTED; CONNECT to port 0 gets GENERAL_FAILURE (BadPort), as in tor. A
greeting is at most 257 bytes, a username/password message 513 and a request 262, so the server never holds
more than MAX_BUFFERED bytes. Bytes the client sends after its
request without waiting for our reply (Tor's "optimistic data") are kept in `trailing_data`.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from enum import Enum, IntEnum

from .errors import DecodeError, LocalProtocolError, RemoteProtocolError, UnexpectedMessage
from .wire import u8, u16

VERSION = 5
NO_AUTH = 0x00
USERNAME_PASSWORD = 0x02
NO_ACCEPTABLE_METHODS = 0xFF
AUTH_VERSION = 1  # RFC 1929's sub-negotiation version
AUTH_SUCCESS = 0x00
AUTH_FAILURE = 0x01  # any non-zero STATUS is a failure; the server then closes
MAX_GREETING = 2 + 255
MAX_AUTH = 1 + 1 + 255 + 1 + 255
MAX_REQUEST = 4 + 1 + 255 + 2
# a greeting, credentials, a request and one read of early data (the driver reads at most 512 at a time)
MAX_BUFFERED = 2048


class Command(IntEnum):
    CONNECT = 1
    BIND = 2
    UDP_ASSOCIATE = 3


class Atyp(IntEnum):
    IPV4 = 1
    DOMAINNAME = 3
    IPV6 = 4


_COMMANDS = frozenset(Command)
_ATYPS = frozenset(Atyp)


class ReplyCode(IntEnum):
    """The REP field. 0x00-0x08 are RFC 1928; 0xF0-0xF7 are Tor's onion-service codes (proposal 304 and
    tor's socks5_status.h), shown by curl and Tor Browser."""

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08
    HS_DESCRIPTOR_NOT_FOUND = 0xF0
    HS_DESCRIPTOR_INVALID = 0xF1
    HS_INTRO_FAILED = 0xF2
    HS_RENDEZVOUS_FAILED = 0xF3
    HS_MISSING_CLIENT_AUTH = 0xF4
    HS_BAD_CLIENT_AUTH = 0xF5
    HS_BAD_ADDRESS = 0xF6
    HS_INTRO_TIMED_OUT = 0xF7


class UnsupportedRequest(UnexpectedMessage):
    """A well-formed request we do not serve (a command other than CONNECT, an unknown address type).
    `reply` is the code failure_reply() sends."""

    kind = "unsupported"

    def __init__(self, message: str, reply: ReplyCode) -> None:
        super().__init__(message)
        self.reply = reply


class BadPort(UnsupportedRequest):
    """CONNECT to port 0: nothing listens there and no BEGIN can carry it. Tor refuses it the same way
    (TORPROTOCOL, which it replies as GENERAL_FAILURE)."""

    kind = "bad_port"


class NeedData(Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA = NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class Greeting:
    methods: tuple[int, ...]

    @property
    def no_auth_offered(self) -> bool:
        return NO_AUTH in self.methods

    @property
    def method(self) -> int | None:
        """What accept_method() chooses: USERNAME/PASSWORD whenever it is offered (the client means to
        isolate its streams, as Tor prefers it too), else NO AUTHENTICATION REQUIRED; None if neither."""
        if USERNAME_PASSWORD in self.methods:
            return USERNAME_PASSWORD
        return NO_AUTH if NO_AUTH in self.methods else None


@dataclass(frozen=True, slots=True)
class UsernamePassword:
    """RFC 1929 credentials: 0-255 arbitrary bytes each (RFC 1929 says 1-255; curl and tor allow empty)."""

    username: bytes
    password: bytes

    def __post_init__(self) -> None:
        if len(self.username) > 255 or len(self.password) > 255:
            raise LocalProtocolError("SOCKS5 username and password are at most 255 bytes each")

    @property
    def isolation_key(self) -> bytes:
        """ULEN UNAME PLEN PASSWD: one bytes value per pair and never b"" (which means no authentication)."""
        return u8(len(self.username)) + self.username + u8(len(self.password)) + self.password


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    host: str  # a domain name as sent, or an IP address in canonical form
    port: int
    atyp: Atyp


@dataclass(frozen=True, slots=True)
class Reply:
    code: int  # a ReplyCode, or another value some server sent
    host: str
    port: int
    atyp: Atyp


class State(Enum):
    GREETING = "greeting"  # waiting for the client's method list
    CHOOSING = "choosing"  # we must accept_method() or reject_methods()
    AUTH = "auth"  # we chose USERNAME/PASSWORD: waiting for the client's credentials
    AUTH_REPLYING = "auth_replying"  # we must accept_credentials()
    REQUEST = "request"  # waiting for the client's request
    REPLYING = "replying"  # we must reply()
    ESTABLISHED = "established"  # replied SUCCEEDED: the connection carries application bytes now
    CLOSED = "closed"  # we refused; close the connection
    FAILED = "failed"  # the client broke the protocol; send failure_reply(), then close


# -- addresses (shared by requests and replies) --------------------------------------------------------------

def _address_len(buf: bytes | bytearray, at: int, atyp: int) -> int | None:
    """Bytes of DST.ADDR + DST.PORT starting at `at`; None if the length byte has not arrived."""
    if atyp == Atyp.IPV4:
        return 4 + 2
    if atyp == Atyp.IPV6:
        return 16 + 2
    if len(buf) <= at:
        return None
    if buf[at] == 0:
        raise DecodeError("SOCKS5: empty domain name")
    return 1 + buf[at] + 2


def _decode_address(raw: bytes, atyp: int) -> tuple[str, int]:
    addr, port = raw[:-2], int.from_bytes(raw[-2:], "big")
    if atyp == Atyp.IPV4:
        return str(ipaddress.IPv4Address(addr)), port
    if atyp == Atyp.IPV6:
        return str(ipaddress.IPv6Address(addr)), port
    name = addr[1:]
    if not all(0x21 <= b <= 0x7E for b in name):
        raise DecodeError("SOCKS5: domain name is not printable ASCII without spaces")
    return name.decode("ascii"), port


@functools.lru_cache(maxsize=256)  # a server replies with the same bound address every time
def _parse_ip(host: str) -> tuple[int, bytes] | None:
    """(4 or 6, packed address) for an IP address literal, None for anything else."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return address.version, address.packed


def _encode_address(host: str, port: int, atyp: Atyp | None) -> bytes:
    if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise LocalProtocolError(f"SOCKS5 port must be 0..65535, not {port!r}")
    ip = _parse_ip(host) if isinstance(host, str) else None
    if atyp is None:
        atyp = Atyp.DOMAINNAME if ip is None else Atyp.IPV4 if ip[0] == 4 else Atyp.IPV6
    if atyp == Atyp.IPV4 or atyp == Atyp.IPV6:
        if ip is None or ip[0] != (4 if atyp == Atyp.IPV4 else 6):
            raise LocalProtocolError(f"not an IPv{4 if atyp == Atyp.IPV4 else 6} address: {host!r}")
        return u8(atyp) + ip[1] + u16(port)
    name = host.encode("ascii", "replace")
    if not 1 <= len(name) <= 255 or not all(0x21 <= b <= 0x7E for b in name):
        raise LocalProtocolError(f"SOCKS5 domain name must be 1-255 printable ASCII characters: {host!r}")
    return u8(Atyp.DOMAINNAME) + u8(len(name)) + name + u16(port)


# -- the server ----------------------------------------------------------------------------------------------

class Socks5Server:
    """One client connection's SOCKS5 handshake."""

    def __init__(self) -> None:
        self.state = State.GREETING
        self._buf = bytearray()
        self._eof = False
        self._greeting: Greeting | None = None
        self._credentials: UsernamePassword | None = None
        self._failed_in: State | None = None  # the state a RemoteProtocolError interrupted
        self._replied = False

    @property
    def isolation_key(self) -> bytes:
        """The client's credentials as one bytes value (UsernamePassword.isolation_key); b"" without them."""
        return b"" if self._credentials is None else self._credentials.isolation_key

    @property
    def trailing_data(self) -> bytes:
        """Bytes that arrived after the request: the start of the application stream."""
        return bytes(self._buf) if self.state in (State.REPLYING, State.ESTABLISHED) else b""

    def receive_data(self, data: bytes) -> None:
        if self.state not in _RECEIVING:
            raise LocalProtocolError(f"SOCKS5 handshake is over ({self.state.value}): no more data to parse")
        if not data:
            self._eof = True
            return
        if len(self._buf) + len(data) > MAX_BUFFERED:
            self._failed_in, self.state = self.state, State.FAILED
            raise DecodeError(f"SOCKS5: client sent over {MAX_BUFFERED} bytes without waiting for a reply")
        self._buf += data

    def next_event(self) -> Greeting | UsernamePassword | ConnectRequest | NeedData:
        if self.state is State.GREETING:
            parse = self._parse_greeting
        elif self.state is State.AUTH:
            parse = self._parse_auth
        elif self.state is State.REQUEST:
            parse = self._parse_request
        else:
            raise LocalProtocolError(f"SOCKS5: no event to read in state {self.state.value}")
        try:
            event = parse()
            if event is NEED_DATA and self._eof:
                raise DecodeError(f"SOCKS5: client closed the connection during the {self.state.value}")
        except RemoteProtocolError:
            self._failed_in, self.state = self.state, State.FAILED
            raise
        return event

    def _parse_greeting(self) -> Greeting | NeedData:
        buf = self._buf
        if buf and buf[0] != VERSION:
            raise DecodeError(f"SOCKS5: version byte {buf[0]:#04x} in the greeting (not a SOCKS5 client)")
        if len(buf) < 2:
            return NEED_DATA
        if buf[1] == 0:
            raise DecodeError("SOCKS5: greeting offers no authentication method")
        end = 2 + buf[1]
        if len(buf) < end:
            return NEED_DATA
        self._greeting = Greeting(tuple(buf[2:end]))
        del buf[:end]
        self.state = State.CHOOSING
        return self._greeting

    def _parse_auth(self) -> UsernamePassword | NeedData:
        """VER=1 ULEN UNAME PLEN PASSWD, nothing else."""
        buf = self._buf
        if buf and buf[0] != AUTH_VERSION:
            raise DecodeError(f"SOCKS5: version byte {buf[0]:#04x} in the username/password message "
                              f"(RFC 1929 expects {AUTH_VERSION:#04x})")
        if len(buf) < 2:
            return NEED_DATA
        plen_at = 2 + buf[1]
        if len(buf) <= plen_at:
            return NEED_DATA
        end = plen_at + 1 + buf[plen_at]
        if len(buf) < end:
            return NEED_DATA
        self._credentials = UsernamePassword(bytes(buf[2:plen_at]), bytes(buf[plen_at + 1:end]))
        del buf[:end]
        self.state = State.AUTH_REPLYING
        return self._credentials

    def _parse_request(self) -> ConnectRequest | NeedData:
        buf = self._buf
        if buf and buf[0] != VERSION:
            raise DecodeError(f"SOCKS5: version byte {buf[0]:#04x} in the request")
        if len(buf) < 4:
            return NEED_DATA
        command, reserved, atyp = buf[1], buf[2], buf[3]
        if command != Command.CONNECT:
            name = Command(command).name if command in _COMMANDS else f"{command:#04x}"
            raise UnsupportedRequest(f"SOCKS5: command {name} is not supported (only CONNECT)",
                                     ReplyCode.COMMAND_NOT_SUPPORTED)
        if reserved != 0:
            raise DecodeError(f"SOCKS5: reserved byte is {reserved:#04x}, not 0")
        if atyp not in _ATYPS:
            raise UnsupportedRequest(f"SOCKS5: address type {atyp:#04x} is not supported",
                                     ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED)
        size = _address_len(buf, 4, atyp)
        if size is None or len(buf) < 4 + size:
            return NEED_DATA
        host, port = _decode_address(bytes(buf[4:4 + size]), atyp)
        if port == 0:
            raise BadPort("SOCKS5: CONNECT to port 0", ReplyCode.GENERAL_FAILURE)
        del buf[:4 + size]
        self.state = State.REPLYING
        return ConnectRequest(host, port, Atyp(atyp))

    def accept_method(self) -> bytes:
        """Choose greeting.method: USERNAME/PASSWORD when offered, else NO AUTHENTICATION REQUIRED."""
        if self.state is not State.CHOOSING:
            raise LocalProtocolError(f"SOCKS5: no greeting to answer in state {self.state.value}")
        method = self._greeting.method
        if method is None:
            raise LocalProtocolError("SOCKS5: the client offered neither NO AUTHENTICATION REQUIRED nor "
                                     "USERNAME/PASSWORD")
        self.state = State.AUTH if method == USERNAME_PASSWORD else State.REQUEST
        return u8(VERSION) + u8(method)

    def accept_credentials(self) -> bytes:
        """Accept the UsernamePassword just read (any pair: it is an isolation key, not a secret)."""
        if self.state is not State.AUTH_REPLYING:
            raise LocalProtocolError(f"SOCKS5: no credentials to answer in state {self.state.value}")
        self.state = State.REQUEST
        return u8(AUTH_VERSION) + u8(AUTH_SUCCESS)

    def reject_methods(self) -> bytes:
        """NO ACCEPTABLE METHODS; the client closes, and so should we."""
        if self.state is not State.CHOOSING:
            raise LocalProtocolError(f"SOCKS5: no greeting to answer in state {self.state.value}")
        self.state = State.CLOSED
        return u8(VERSION) + u8(NO_ACCEPTABLE_METHODS)

    def reply(self, code: ReplyCode | int, bind_host: str = "0.0.0.0", bind_port: int = 0) -> bytes:
        """The reply to a ConnectRequest. SUCCEEDED establishes the connection; any other code closes it."""
        try:
            code = ReplyCode(code)
        except ValueError:
            raise LocalProtocolError(f"SOCKS5: unknown reply code {code!r}") from None
        failed_in_request = (self.state is State.FAILED and self._failed_in in (State.REQUEST, State.REPLYING)
                             and not self._replied)
        if self.state is not State.REPLYING and not failed_in_request:
            raise LocalProtocolError(f"SOCKS5: no request to reply to in state {self.state.value}")
        if code is ReplyCode.SUCCEEDED and self.state is not State.REPLYING:
            raise LocalProtocolError("SOCKS5: cannot reply SUCCEEDED to a request that failed to parse")
        out = bytes((VERSION, code, 0)) + _encode_address(bind_host, bind_port, None)
        self._replied = True
        if code is ReplyCode.SUCCEEDED:
            self.state = State.ESTABLISHED
        else:
            self.state = State.CLOSED
            self._buf.clear()
        return out

    def failure_reply(self, error: Exception) -> bytes:
        """What to send after next_event() or receive_data() raised `error`: a reply when the client is
        waiting for one (a bad request gets a SOCKS5 reply, bad credentials an RFC 1929 failure status),
        b"" when it is not (a bad greeting gets no answer). At most once: the state is CLOSED after it."""
        if self.state is not State.FAILED:
            return b""
        if self._failed_in in (State.AUTH, State.AUTH_REPLYING):
            self.state = State.CLOSED
            self._buf.clear()
            return u8(AUTH_VERSION) + u8(AUTH_FAILURE)
        if self._failed_in not in (State.REQUEST, State.REPLYING) or self._replied:
            return b""
        code = error.reply if isinstance(error, UnsupportedRequest) else ReplyCode.GENERAL_FAILURE
        return self.reply(code)


_RECEIVING = frozenset((State.GREETING, State.CHOOSING, State.AUTH, State.AUTH_REPLYING, State.REQUEST,
                        State.REPLYING))


# -- the client side: what tests and tools need to talk to a SOCKS5 server -----------------------------------

def encode_greeting(methods: tuple[int, ...] = (NO_AUTH,)) -> bytes:
    if not 1 <= len(methods) <= 255 or not all(0 <= m <= 255 for m in methods):
        raise LocalProtocolError(f"SOCKS5 greeting needs 1-255 methods of 0..255, got {methods!r}")
    return bytes((VERSION, len(methods), *methods))


def encode_username_password(username: bytes, password: bytes) -> bytes:
    """RFC 1929's VER=1 ULEN UNAME PLEN PASSWD; each field 0-255 bytes."""
    return u8(AUTH_VERSION) + UsernamePassword(username, password).isolation_key


def encode_request(host: str, port: int, *, atyp: Atyp | None = None,
                   command: Command | int = Command.CONNECT) -> bytes:
    """A request; `atyp` defaults to IPv4/IPv6 for IP literals and DOMAINNAME otherwise."""
    if not 0 <= command <= 255:
        raise LocalProtocolError(f"SOCKS5 command must be a byte, not {command!r}")
    return bytes((VERSION, command, 0)) + _encode_address(host, port, atyp)


def decode_method_choice(data: bytes) -> int:
    """The server's 2-byte answer to a greeting: the chosen method (0xFF: none acceptable)."""
    if len(data) != 2:
        raise DecodeError(f"SOCKS5 method choice is 2 bytes, got {len(data)}")
    if data[0] != VERSION:
        raise DecodeError(f"SOCKS5: version byte {data[0]:#04x} in the method choice")
    return data[1]


def decode_auth_status(data: bytes) -> int:
    """The server's 2-byte answer to a username/password message: its STATUS (0 is success)."""
    if len(data) != 2:
        raise DecodeError(f"SOCKS5 username/password status is 2 bytes, got {len(data)}")
    if data[0] != AUTH_VERSION:
        raise DecodeError(f"SOCKS5: version byte {data[0]:#04x} in the username/password status")
    return data[1]


def decode_reply(data: bytes) -> tuple[Reply, int] | NeedData:
    """A server's reply from the start of `data`: (reply, bytes used), or NEED_DATA if it is incomplete."""
    if data and data[0] != VERSION:
        raise DecodeError(f"SOCKS5: version byte {data[0]:#04x} in the reply")
    if len(data) < 4:
        return NEED_DATA
    if data[2] != 0:
        raise DecodeError(f"SOCKS5: reserved byte is {data[2]:#04x} in the reply, not 0")
    atyp = data[3]
    if atyp not in _ATYPS:
        raise DecodeError(f"SOCKS5: unknown address type {atyp:#04x} in the reply")
    size = _address_len(data, 4, atyp)
    if size is None or len(data) < 4 + size:
        return NEED_DATA
    host, port = _decode_address(bytes(data[4:4 + size]), atyp)
    return Reply(data[1], host, port, Atyp(atyp)), 4 + size
