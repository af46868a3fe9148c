"""Fuzz targets for onion addresses and Tor Ed25519 certificates (decode + check, and the armor)."""

from nodes.core.certs import CertType, Ed25519Cert, armor, dearmor, make_cert
from nodes.core.ed25519 import Signer
from nodes.core.onion_address import decode_onion_address, encode_onion_address
from tests.fuzz.driver import Target

NOW = 1_674_000_000  # before the published certificate below expires (1674702000)

_SIGNER = Signer.from_seed(bytes(range(32)))
_ADDRESS = encode_onion_address(_SIGNER.public_key)

# The descriptor-signing-key-cert of arti crates/tor-netdoc/testdata/hsdesc1.txt (made by C tor).
_PUBLISHED = (
    "-----BEGIN ED25519 CERT-----\n"
    "AQgABxkrAQrYrm6iwT9TAr4kfUsQFvW64zCkoLkBRP7x5Lt5BOF6AQAgBABDzA1i\n"
    "/GJS9XhwXKZFpGEJ4mUpA0OxE36QGJdEsgs/LfW41RhfJSpAwk/1k++LkJOolfaR\n"
    "nfuvBUh6eXyCVDtziY3eI1xzDhsHfAdvZhWbE+5yNlVQ3+N7fiRvfdk6jA4=\n"
    "-----END ED25519 CERT-----\n"
)
_MADE = make_cert(CertType.HS_INTRO_AUTH, bytes(range(32, 64)), _SIGNER, NOW + 7 * 3600)


def _address(data: bytes) -> bytes:
    return decode_onion_address(data.decode("latin-1"))


def _cert(data: bytes) -> Ed25519Cert:
    return Ed25519Cert.decode(data).check(NOW)


def _armor(data: bytes) -> bytes:
    return dearmor(data.decode("latin-1"))


TARGETS = [
    Target("hs_common.onion_address", _address,
           (_ADDRESS.encode(), (_ADDRESS + ".onion").encode(), (_ADDRESS.upper() + ".ONION").encode())),
    Target("hs_common.ed25519_cert", _cert, (dearmor(_PUBLISHED), _MADE.encode())),
    Target("hs_common.ed25519_cert_armor", _armor, (_PUBLISHED.encode(), armor(_MADE).encode())),
]
