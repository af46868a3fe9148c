"""A TLS link does not keep the memory of its largest burst: OpenSSL holds a memory BIO's buffer at the
biggest size it ever needed, so TLSStream moves ciphertext through its BIOs in slices (nodes/net/tls.py,
BIO_CHUNK). Measured with glibc's mallinfo2 (bytes in use), over links that each carried 1 MB both ways."""

import ctypes
import gc
import os

import pytest
import trio

from nodes.net.tls import TLSStream, client_context, server_context

LINKS = 12
BURST = 1024 * 1024
KEPT_PER_LINK = 150 * 1024  # both ends of a link together; without the slices, 5.3 MB was kept


class _MallInfo2(ctypes.Structure):
    _FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(name, ctypes.c_size_t) for name in _FIELDS.split()]


def _heap_in_use() -> int:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


async def _link(server_ctx, client_ctx) -> tuple[TLSStream, TLSStream]:
    a, b = trio.socket.socketpair()
    client = TLSStream(trio.SocketStream(a), client_ctx, server_side=False)
    server = TLSStream(trio.SocketStream(b), server_ctx, server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        nursery.start_soon(server.do_handshake)
    return client, server


async def _burst(sender: TLSStream, receiver: TLSStream) -> None:
    data = os.urandom(BURST)
    got = bytearray()

    async def receive() -> None:
        while len(got) < BURST:
            got.extend(await receiver.receive_some())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await sender.send_all(data)
    assert got == data


@pytest.mark.skipif(not hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2"), reason="glibc's mallinfo2 only")
async def test_a_burst_leaves_no_big_buffers_behind():
    server_ctx, _ = server_context()
    client_ctx = client_context()
    links = [await _link(server_ctx, client_ctx) for _ in range(LINKS)]
    gc.collect()
    before = _heap_in_use()
    for client, server in links:
        await _burst(client, server)
        await _burst(server, client)
    gc.collect()
    kept = (_heap_in_use() - before) / LINKS
    assert kept < KEPT_PER_LINK, f"{kept / 1024:.0f} KB kept a link after {BURST // 1024} KB each way"
    for client, server in links:
        await client.aclose()
        await server.aclose()
