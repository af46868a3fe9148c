"""TLS for links between nodes.

Every node makes a fresh self-signed certificate at start-up; its key lives in memory (and for an instant in a
private temporary file, as ssl loads keys only from files), never in the data directory or an image layer.
TLS itself verifies nothing, as in Tor: the link handshake's CERTS cell certifies this certificate (its
SHA-256, in the type-5 certificate) with the relay's identity, and the initiator checks that against the
certificate the TLS handshake showed (nodes/net/link.py).

Links run over `TLSStream` rather than trio.SSLStream. trio's stream returns at most one TLS record (16 KiB)
per receive_some, with a trip through the scheduler each time, so a relay moved ~31 cells per wakeup and paid
for it per cell. `TLSStream` reads everything the socket has (up to RECEIVE_SIZE) and decrypts every record in
it in one call. It suits links: one reader task and one writer, no renegotiation (TLS 1.3 or 1.2 with it
refused); it still handles what TLS 1.3 sends after the handshake (session tickets, key updates) whichever
task meets it.

It also moves bytes with os.read and os.write on the (non-blocking) socket's descriptor, waiting with
trio.lowlevel.wait_readable/wait_writable only when the socket has nothing or is full. trio's socket
methods yield to the scheduler after every call that succeeded at once, and an uncontended trio.Lock yields
too: on a busy link that was several passes of the scheduler (each an epoll_wait) per batch of cells.
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile
from collections import deque
from pathlib import Path

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from .fdstream import transport_error
from .tls_exporter import export_keying_material

TLS_KEY_BITS = 2048  # C tor's RSA_LINK_KEY_BITS
RECEIVE_SIZE = 256 * 1024  # one socket read: a loopback link often has this much waiting
# The most ciphertext either memory BIO holds at once. OpenSSL keeps a memory BIO's buffer at the largest size
# it ever needed until the link closes: when whole reads and batches went in, a link that once carried 1 MB
# each way kept 5.3 MB (tests/net/test_tls_memory.py). In slices, the BIOs stay small.
BIO_CHUNK = 16 * 1024  # a TLS record's most plaintext
_EMPTY = memoryview(b"")


def _self_signed(common_name: str) -> tuple[bytes, bytes, bytes]:
    # RSA, as C tor's link keys are: its client reads the TLS key as RSA and logs an OpenSSL error otherwise
    key = rsa.generate_private_key(65537, TLS_KEY_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    der = cert.public_bytes(serialization.Encoding.DER)
    return cert.public_bytes(serialization.Encoding.PEM), key_pem, der


def server_context(common_name: str = "onionlab-node") -> tuple[ssl.SSLContext, bytes]:
    """A TLS server context with a fresh self-signed certificate, and that certificate (DER)."""
    cert_pem, key_pem, cert_der = _self_signed(common_name)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    ctx.num_tickets = 0  # links never resume a session; tickets are bytes for nothing
    # ssl can only load a key from a file; a private temporary directory removed at once keeps it off disk
    # for all but a moment and never in a persistent place.
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert_path.write_bytes(cert_pem)
        key_path.touch(mode=0o600)
        key_path.write_bytes(key_pem)
        ctx.load_cert_chain(cert_path, key_path)
    return ctx, cert_der


def client_context() -> ssl.SSLContext:
    """A TLS client context that does not verify the peer: the link handshake's CERTS cell does."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class TLSStream(trio.abc.Stream):
    """TLS over a trio SocketStream through memory BIOs. Call `do_handshake` first (under a timeout).

    Errors are trio's: BrokenResourceError (TLS error, the transport broke, or a send was cancelled midway:
    the stream is then unusable), ClosedResourceError after aclose, BusyResourceError for two concurrent
    senders or receivers. receive_some returns b"" at the peer's close_notify or a bare TCP EOF. receive_some
    is a checkpoint; send_all is one only when the socket is full (the link's writer yields once a batch)."""

    def __init__(self, transport: trio.SocketStream, context: ssl.SSLContext, *, server_side: bool) -> None:
        self.transport_stream = transport
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side)
        self._fd = transport.socket.fileno()
        self._parked = False
        # Whoever holds it sends everything the SSL object has written so far, in order.
        self._send_lock = trio.StrictFIFOLock()
        self._unsent = _EMPTY  # TLS bytes read from the SSL object that the socket has not taken yet
        self._sealed: deque[bytes] = deque()  # records out of the outgoing BIO, older than what it holds
        self._raw = _EMPTY  # ciphertext read from the socket, not yet in the incoming BIO
        self._sending = False
        self._receiving = False
        self._eof = False
        self._broken = False
        self._closed = False

    # -- handshake -------------------------------------------------------------------------------------
    async def do_handshake(self) -> None:
        self._check()
        while True:
            try:
                self._ssl.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            except (ssl.SSLError, ssl.CertificateError) as e:
                self._broken = True
                raise trio.BrokenResourceError(f"TLS handshake failed: {e}") from e
            await self._flush()
            if done:
                return
            if not await self._fill():
                self._broken = True
                raise trio.BrokenResourceError("the peer closed the connection during the TLS handshake")

    def export_keying_material(self, label: bytes, context: bytes, length: int) -> bytes:
        """RFC 5705's exporter for this link (ExporterUnavailable when this Python cannot reach it)."""
        return export_keying_material(self._ssl, label, context, length)

    def peer_cert_der(self) -> bytes:
        """The certificate the peer showed in the TLS handshake (DER), verified or not; b"" if none."""
        return self._ssl.getpeercert(binary_form=True) or b""

    # -- trio.abc.Stream -------------------------------------------------------------------------------
    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this TLS stream")
        self._sending = True
        try:
            self._check()
            if not data:
                if self._unsent or self._sealed or self._outgoing.pending:  # what write_nowait left
                    await self._flush()
                else:
                    await trio.lowlevel.checkpoint()
                return
            self._encrypt(data)
            await self._flush()
        finally:
            self._sending = False

    def write_nowait(self, data: bytes | bytearray | memoryview) -> bool:
        """send_all without waiting: encrypt `data` and write what the socket takes now. True when every byte
        is out; False when some wait for the socket (or for another task's send under way), and an
        `await send_all(b"")` sends them. A link's writer pays no lock or scope for the usual write so."""
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this TLS stream")
        self._check()
        self._encrypt(data)
        if self._send_lock.locked():
            return False
        return self._write_out()

    async def wait_send_all_might_not_block(self) -> None:
        self._check()
        await self.transport_stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this TLS stream")
        self._receiving = True
        try:
            self._check()
            limit = RECEIVE_SIZE if max_bytes is None else max_bytes
            if limit < 1:
                raise ValueError("max_bytes must be >= 1")
            await trio.lowlevel.checkpoint_if_cancelled()
            waited = False
            while True:
                data = self._decrypt(limit)
                if self._outgoing.pending and not self._send_lock.locked():
                    # A TLS 1.3 key update wants an answer. If a send is under way, it sends this too.
                    await self._flush()
                if data or self._eof:
                    if not waited:  # a yield that no cancellation interrupts: the records are decrypted
                        await trio.lowlevel.cancel_shielded_checkpoint()
                    return data
                if not await self._fill():
                    # The socket ended: decrypt what it sent last, then report EOF (also after a cut record).
                    data = self._decrypt(limit)
                    self._eof = True
                    return data
                waited = waited or self._parked
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        """Send close_notify when nothing else is sending (best effort), then close the socket. Idempotent."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            if not self._broken and not self._send_lock.locked():
                try:
                    self._ssl.unwrap()
                except ssl.SSLError:
                    pass  # SSLWantReadError: we do not wait for the peer's close_notify
                try:
                    await self._flush()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        finally:
            await self.transport_stream.aclose()

    # -- internals -------------------------------------------------------------------------------------
    def _encrypt(self, data: bytes | bytearray | memoryview) -> None:
        """Seal `data` as records a BIO_CHUNK at a time, emptying the BIO between slices."""
        view = memoryview(data)
        try:
            while True:
                self._ssl.write(view[:BIO_CHUNK])  # a memory BIO takes the whole slice (as records)
                view = view[BIO_CHUNK:]
                if not view:
                    return
                self._sealed.append(self._outgoing.read())
        except ssl.SSLError as e:
            self._broken = True
            raise trio.BrokenResourceError(f"TLS error while sending: {e}") from e

    def _write_out(self) -> bool:
        """Write TLS bytes to the socket while it takes them, in order; True once none are left. The caller
        holds the send lock or knows it is free (nothing awaits between its check and this)."""
        unsent = self._unsent
        try:
            while True:
                if not unsent:
                    if self._sealed:  # one write for all of it, as one read of the BIO was
                        self._sealed.append(self._outgoing.read())
                        unsent = memoryview(b"".join(self._sealed))
                        self._sealed.clear()
                    elif self._outgoing.pending:
                        unsent = memoryview(self._outgoing.read())
                    else:
                        return True
                try:
                    written = os.write(self._fd, unsent)
                    unsent = unsent[written:] if written < len(unsent) else _EMPTY  # free what went out
                except BlockingIOError:
                    return False
        except OSError as e:
            self._broken = True
            raise transport_error(e, "sending") from e
        finally:
            self._unsent = unsent

    def _check(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the TLS stream is closed")
        if self._broken:
            raise trio.BrokenResourceError("the TLS stream is broken")

    def _decrypt(self, limit: int) -> bytes:
        """Every plaintext byte the buffered records hold, up to `limit`, without waiting."""
        incoming, tls = self._incoming, self._ssl
        if not incoming.pending and not tls.pending() and not self._feed():
            return b""  # nothing buffered: spare the read that would raise SSLWantReadError
        parts = []
        n = 0
        try:
            while n < limit:
                try:
                    chunk = tls.read(limit - n)
                except ssl.SSLWantReadError:  # a record's start only: its rest may wait in _raw
                    if self._feed():
                        continue
                    break
                if not chunk:
                    break
                parts.append(chunk)
                n += len(chunk)
                if not incoming.pending and not tls.pending() and not self._feed():
                    break
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            self._eof = True  # close_notify, or the TCP connection ended without one
        except ssl.SSLError as e:
            self._broken = True
            raise trio.BrokenResourceError(f"TLS error while receiving: {e}") from e
        return b"".join(parts)

    def _feed(self) -> bool:
        """The next BIO_CHUNK of what the socket gave into the TLS engine; False when nothing waits."""
        raw = self._raw
        if not raw:
            return False
        self._incoming.write(raw[:BIO_CHUNK])
        self._raw = raw[BIO_CHUNK:] if len(raw) > BIO_CHUNK else _EMPTY  # an empty slice would keep the read
        return True

    async def _fill(self) -> bool:
        """More ciphertext into the TLS engine: the rest of the last socket read, else one more; False at
        EOF. `_parked`: it waited for the socket (a checkpoint), so a reader that found bytes at once still
        owes one."""
        self._parked = False
        if self._feed():
            return True
        while True:
            self._check()
            try:
                data = os.read(self._fd, RECEIVE_SIZE)
                break
            except BlockingIOError:
                self._parked = True
                await trio.lowlevel.wait_readable(self._fd)
            except OSError as e:
                self._broken = True
                raise transport_error(e, "receiving") from e
        if not data:
            self._incoming.write_eof()
            return False
        self._raw = memoryview(data)
        self._feed()
        return True

    async def _flush(self) -> None:
        lock = self._send_lock
        try:
            lock.acquire_nowait()  # uncontended: no pass through the scheduler
        except trio.WouldBlock:
            await lock.acquire()
        try:
            while True:
                self._check()
                if self._write_out():
                    return
                try:
                    await trio.lowlevel.wait_writable(self._fd)
                except BaseException:
                    self._broken = True  # cancelled with records half sent: the stream is cut
                    raise
        finally:
            lock.release()


async def open_tls_stream(host: str, port: int, context: ssl.SSLContext, *,
                          local_address: str | None = None) -> TLSStream:
    """A TCP connection to (host, port) with the TLS handshake done (callers bound it with a timeout); from
    `local_address` when given (else the kernel's choice of source address)."""
    transport = await trio.open_tcp_stream(host, port, local_address=local_address)
    stream = TLSStream(transport, context, server_side=False)
    try:
        await stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(transport)
        raise
    return stream
