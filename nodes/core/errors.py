"""Typed protocol errors. Every error says whose fault it is.

LocalProtocolError: we tried to do something the protocol forbids (a bug in our code).
RemoteProtocolError: the peer (or a document) sent something malformed or illegal; the caller destroys that
circuit or closes that link, counts it under `kind`, and keeps serving.
Any other exception escaping a parser is a bug.
"""


class ProtocolError(Exception):
    """Base of the two error families."""

    kind = "protocol"


class LocalProtocolError(ProtocolError):
    kind = "local"


class RemoteProtocolError(ProtocolError):
    """The peer's fault. `kind` is a short stable label used as a metrics key."""

    kind = "remote"


class DecodeError(RemoteProtocolError):
    """Bytes that do not parse: truncated, out of range, unknown type where none is allowed."""

    kind = "decode"


class UnexpectedMessage(RemoteProtocolError):
    """A well-formed message that is not legal in the current state."""

    kind = "unexpected"


class CryptoError(RemoteProtocolError):
    """A handshake, MAC, digest or key that does not verify."""

    kind = "crypto"


class SignatureError(CryptoError):
    """A signature or certificate that does not verify, or a document signed by the wrong key."""

    kind = "signature"


class ExpiredError(RemoteProtocolError):
    """A certificate or document outside its validity time."""

    kind = "expired"


class AddressError(RemoteProtocolError):
    """A malformed onion address: wrong length, alphabet, checksum or version."""

    kind = "address"


class IdentityMismatch(RemoteProtocolError):
    """A peer that proved an identity, but not the one we expected to reach (wrong node ID or Ed25519 key)."""

    kind = "identity_mismatch"
