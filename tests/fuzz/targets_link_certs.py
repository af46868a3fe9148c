"""Fuzz targets: the link handshake's certificates and authenticator as a peer receives them.

Keys are fixed (two RSA-1024 identities below, Ed25519 seeds from counters) and so is the clock, so the seeds
are the same valid cells on every run. Most mutations fail a signature; the seeds' structure still reaches
the X.509, Ed25519-certificate and cross-certificate parsers through the checks.
"""

from __future__ import annotations

import random

from cryptography.hazmat.primitives.serialization import load_pem_private_key

from nodes.core import link_auth, link_certs
from nodes.core.cells import Authenticate, Certs
from tests.fuzz.driver import Target

RSA_A_PEM = b"""\
-----BEGIN RSA PRIVATE KEY-----
MIICXAIBAAKBgQCw9D5BcpH7FX4oUaUIIfppdy034AbBIGXUIaJHbz5MGZch1c7P
8eg/kV7i6pUfBQlfYPCzbXDAw95SJlEO97oKhUKwpbazTZESnWaZHWcv2l37TFS5
wOvQBixie41Gtc4nzE+vAGoH+mh5Hglhs8OsxAWUF+22QLMgO/LNmTC5VQIDAQAB
AoGBAK4Avmck/h9kVxXWku2YW+Dxa+mRxZKLBRa/rA+KeDvkvhRrZl5chgBcNm30
Noa2MS006fvGFiW3dRpay0Jonuqt1QaWtsuA9TwCTykcReEIfMOs3F89s7tgcaP/
Bb13+T+ioVhYKd0blZocBm0VLNcv3RIwgg7WvxG1qFEy7UtRAkEA5HaM4V+ETp7q
xA277VwnTeTWBBU5B9WV3goT1j3rTOscLx842KFsTjOGJR2XtwLehWAifjDSlh1O
eyl/SFnV7wJBAMZIVRsPt+9SxwjUPAUg/ORiV9pWnz0uuZN7MVu3tAUm5W5wDnPr
Kc0GOfosmVWd8Sro/7ZatYTvTwZsUtTbiPsCQAxStLCnZUyUV9dxYjSgZuJVuJGJ
z4SzqZzLcFx7BIkmmWOVTIyq0Fu7fb3cxcUyW2xYTiP+YC2GsSgFif8OEXMCQGMO
3d2wI58fhqnlhbq2OUFL1EITBmjFgBaq9ASzKO9t+C8NMls8/9waoTpXr57zUfmy
/5U1ifvIpn05/sOyjaMCQGdY8SvcS5bOczitDo2LXUUstK8tiJHko/2Hr0loOxMX
Phjl0TVj7QyUtAEGmYpUI4IWg94vGmGTPX9vrW5gXqg=
-----END RSA PRIVATE KEY-----
"""

RSA_B_PEM = b"""\
-----BEGIN RSA PRIVATE KEY-----
MIICXQIBAAKBgQDaHkNYjwgiRgAYk0RpAWwut2WnVf4tTsDytKvV89/R7nlC5Guz
lblfa4kwsxKopZefeVuS+Q9WDXUJcVXaUIGOinnAIaQn7HJyYiZhqpavHjxBIy6g
2SDdQSuFQrh0qFq3JvtojkGsbywkSBQQVkNsYC0uoi+rHkuB6AerekSyqwIDAQAB
AoGBAJrra8H2tTxCo8bQsoIydHgp4pWbylC74ud/05y+/nXI/2+3dZez/Fn9sw9X
4STPmIW4WIZnR7FDFaGDUgshqyIWwTo5lOTgbvoTkgEeSGAyzAkbVFjmA0Bd4ejk
bjg23XxMULbh3SOCYkekGDQ3OSvpJM3Yp7xTBb8feCrZ4o8BAkEA9+vQj9NOiNJ5
YWqfSfKKJT8HnDoGILUjjQR3AD0cJaPNu+I0r5mCMKn8k00vREp9UxHQDzk9N9TV
gt/AVbzy4QJBAOE51DtMpRc5T/59NoHwbC/w3KbYgrqNydg301WEAn1FfZej9BTA
d1ShHkcR2XCU41XJeTTjFkONFBGbwF2howsCQQDAW45B2aDIlg2poRGgTXgUOBhO
hdK1U/YWdw1h+Qg6yCJbkcJxMLkLywh2vd9brDQa3OpCtZWjGRbkaXkQzP7hAkBr
p9a4WZR4G18PSA6r4Z309G6kGc2zGl8myNhtgeImuvajay0aVj0z6KeuVOvYknJv
6RPUoc9cjqzPFeHHX6GtAkAkdjokOuJxCg3cnzJzwLh8A1evseQ6YqEh7X3yGe+8
hyX1Yt/n4Vlzc+g0VHFKLGrz2XQZmBlyerovZr9Z3CS9
-----END RSA PRIVATE KEY-----
"""

NOW = 1_750_000_000
TLS_CERT = b"the responder's TLS certificate (DER), any bytes will do for the checks"
SLOG, CLOG, TLS_SECRETS = bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32


def seeded_rng(seed: int):
    return random.Random(seed).randbytes


def fixed_identity(pem: bytes, n: int) -> link_certs.LinkIdentity:
    key = load_pem_private_key(pem, None)
    return link_certs.make_link_identity(key, bytes([n]) * 32, bytes([n + 1]) * 32, NOW, seeded_rng(n))


RESPONDER = fixed_identity(RSA_A_PEM, 1)
INITIATOR = fixed_identity(RSA_B_PEM, 3)
RESPONDER_CERTS = link_certs.responder_certs(RESPONDER, TLS_CERT, NOW)
INITIATOR_CERTS = link_certs.initiator_certs(INITIATOR, NOW)
RESPONDER_PEER = link_certs.verify_responder_certs(RESPONDER_CERTS, TLS_CERT, NOW)
VERIFIED_INITIATOR = link_certs.verify_initiator_certs(INITIATOR_CERTS, NOW)
AUTHENTICATE = link_auth.make_authenticate(INITIATOR, RESPONDER_PEER, slog=SLOG, clog=CLOG,
                                           responder_tls_cert_der=TLS_CERT, tls_secrets=TLS_SECRETS,
                                           rng=seeded_rng(5))


def responder_certs(data: bytes) -> object:
    return link_certs.verify_responder_certs(Certs.decode(data), TLS_CERT, NOW,
                                             expected_node_id=RESPONDER.node_id)


def initiator_certs(data: bytes) -> object:
    return link_certs.verify_initiator_certs(Certs.decode(data), NOW)


def crosscert(data: bytes) -> object:
    cert = link_certs.RsaCrossCert.decode(data)
    return cert.check(RESPONDER.rsa_identity.public_key(), RESPONDER.ed25519_public, NOW)


def rsa_identity_x509(data: bytes) -> object:
    return link_certs.check_rsa_identity_x509(data, NOW)


def authenticate(data: bytes) -> object:
    return link_auth.verify_authenticate(Authenticate.decode(data), VERIFIED_INITIATOR, RESPONDER.public,
                                         slog=SLOG, clog=CLOG, responder_tls_cert_der=TLS_CERT,
                                         tls_secrets=TLS_SECRETS)


TARGETS = [
    Target("link_responder_certs", responder_certs, (RESPONDER_CERTS.encode(),)),
    Target("link_initiator_certs", initiator_certs, (INITIATOR_CERTS.encode(),)),
    Target("link_crosscert", crosscert, (RESPONDER.crosscert,)),
    Target("link_rsa_identity_x509", rsa_identity_x509, (RESPONDER.rsa_id_cert,)),
    Target("link_authenticate", authenticate, (AUTHENTICATE.encode(),)),
]
