"""The TLS keying-material exporter (RFC 5705; RFC 8446 7.5) of a Python ssl object, which Tor's AUTH0003
link authentication binds the link with (tor-spec 4.4.2) and Python's `ssl` module does not expose.

OpenSSL has it (SSL_export_keying_material); the `_ssl` extension links OpenSSL, so ctypes finds the
function through that extension. The one thing ctypes cannot ask politely for is the `SSL *` inside an
`ssl.SSLObject`: CPython's `_ssl._SSLSocket` keeps it right after its object header and its socket
weak reference (Modules/_ssl.c, PySSLSocket). That layout is checked before every use: OpenSSL must name the
same protocol version for that pointer as the ssl object does, or ExporterUnavailable is raised and the
caller does without (our relays then open links as clients do, as before).
"""

from __future__ import annotations

import ctypes
import ssl
from functools import cache


class ExporterUnavailable(Exception):
    """This Python/OpenSSL does not let us reach the exporter (or the object is not a finished TLS link)."""


_POINTER = ctypes.sizeof(ctypes.c_void_p)
_SSL_OFFSET = 2 * _POINTER + _POINTER  # PyObject_HEAD (refcount, type), then `PyObject *Socket`, then `SSL *`


@cache
def _openssl() -> tuple[ctypes._CFuncPtr, ctypes._CFuncPtr]:
    try:
        import _ssl

        lib = ctypes.CDLL(_ssl.__file__)
        export, version = lib.SSL_export_keying_material, lib.SSL_get_version
    except (ImportError, OSError, AttributeError) as e:
        raise ExporterUnavailable(f"OpenSSL's exporter is not reachable: {e}") from None
    export.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t,
                       ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
    export.restype = ctypes.c_int
    version.argtypes = [ctypes.c_void_p]
    version.restype = ctypes.c_char_p
    return export, version


def export_keying_material(tls: ssl.SSLObject, label: bytes, context: bytes, length: int) -> bytes:
    """`length` bytes of the exporter for `label` and `context` (with a context, as Tor's AUTH0003 uses)."""
    export, version = _openssl()
    inner = getattr(tls, "_sslobj", None)
    negotiated = tls.version()
    if inner is None or negotiated is None:
        raise ExporterUnavailable("no finished TLS handshake")
    pointer = ctypes.c_void_p.from_address(id(inner) + _SSL_OFFSET).value
    if not pointer or version(pointer) != negotiated.encode():
        raise ExporterUnavailable("this Python's ssl object layout is not the one expected")
    out = ctypes.create_string_buffer(length)
    if export(pointer, out, length, label, len(label), context, len(context), 1) != 1:
        raise ExporterUnavailable("OpenSSL refused to export keying material")
    return out.raw
