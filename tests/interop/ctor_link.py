"""Manual interop check: nodes.core.link_certs / link_auth against real C tor (Debian's `tor`, 0.4.9).

    .venv/bin/pip install pyopenssl     # the TLS exporter (RFC 5705) that Python's ssl module does not offer
    .venv/bin/python -m tests.interop.ctor_link

On loopback, with a throwaway C tor relay (ORPort only, publishes nothing) and a C tor client that uses our
responder as its bridge, it checks:
  1. client_accepts_our_certs   the C tor client accepts our responder's CERTS cell (its info log says so)
  2. we_verify_relay_certs      verify_responder_certs accepts the C tor relay's CERTS cell
  3. relay_accepts_our_auth     the relay accepts our initiator CERTS + AUTHENTICATE (its debug log says so)
  4. we_verify_relay_auth       verify_initiator_certs + verify_authenticate accept the relay's CERTS and
                                AUTHENTICATE when it extends a circuit (our EXTEND2) to our responder
One JSON line per check; exit status 1 if any failed. Not collected by pytest: it needs tor and pyOpenSSL.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import queue
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto

from nodes.core import link_auth, link_certs
from nodes.core.cells import (
    AuthChallenge,
    Authenticate,
    Cell,
    CellFramer,
    Certs,
    Command,
    Netinfo,
    Versions,
    encode_cell,
)
from nodes.core.circuit import HopSpec, OriginCircuit

TIMEOUT = 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tls_cert(key, now: int) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.onionlabtest.net")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(int.from_bytes(os.urandom(8), "big") or 1)
            .not_valid_before(datetime.datetime.fromtimestamp(now - 86400, datetime.UTC))
            .not_valid_after(datetime.datetime.fromtimestamp(now + 86400, datetime.UTC))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


class Link:
    """One TLS link speaking cells, with the two handshake transcript digests."""

    def __init__(self, conn: SSL.Connection) -> None:
        self.conn = conn
        self.framer = CellFramer(2)
        self.pending: list[Cell] = []
        self.sent = hashlib.sha256()
        self.received = hashlib.sha256()

    def send(self, cell: Cell, *, log: bool = True) -> None:
        data = encode_cell(cell, circ_id_len=2 if cell.command == Command.VERSIONS else 4)
        if log:
            self.sent.update(data)
        self.conn.sendall(data)

    def next_cell(self, *, log: bool = True) -> Cell:
        while not self.pending:
            if not self.conn.pending() and not select.select([self.conn.fileno()], [], [], TIMEOUT)[0]:
                raise TimeoutError(f"no cell in {TIMEOUT} s")
            try:
                self.pending.extend(self.framer.feed(self.conn.recv(65536)))
            except SSL.WantReadError:
                continue
        cell = self.pending.pop(0)
        if log:
            self.received.update(encode_cell(cell, circ_id_len=2 if cell.command == Command.VERSIONS else 4))
        if cell.command == Command.VERSIONS:
            self.framer.circ_id_len = 4
            self.pending.extend(self.framer.feed(b""))
        return cell


class OurResponder:
    """Our side of links that C tor opens: VERSIONS, CERTS, AUTH_CHALLENGE, NETINFO; checks AUTHENTICATE."""

    def __init__(self, now: int) -> None:
        self.now = now
        self.identity = link_certs.make_link_identity(rsa.generate_private_key(65537, 1024), os.urandom(32),
                                                      os.urandom(32), now, os.urandom)
        key = rsa.generate_private_key(65537, 2048)
        self.tls_der = tls_cert(key, now)
        self.ctx = SSL.Context(SSL.TLS_METHOD)
        self.ctx.use_certificate(crypto.X509.from_cryptography(x509.load_der_x509_certificate(self.tls_der)))
        self.ctx.use_privatekey(crypto.PKey.from_cryptography_key(key))
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.results: queue.Queue = queue.Queue()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            raw, addr = self.server.accept()
            threading.Thread(target=self._serve, args=(raw, addr), daemon=True).start()

    def _serve(self, raw: socket.socket, addr) -> None:
        try:
            conn = SSL.Connection(self.ctx, raw)
            conn.set_accept_state()
            conn.do_handshake()
            link = Link(conn)
            link.next_cell()  # VERSIONS
            link.send(Cell(0, Command.VERSIONS, Versions((3, 4, 5)).encode()))
            link.send(Cell(0, Command.CERTS, link_certs.responder_certs(self.identity, self.tls_der,
                                                                        self.now).encode()))
            link.send(Cell(0, Command.AUTH_CHALLENGE, link_auth.make_auth_challenge(os.urandom).encode()))
            slog = link.sent.digest()
            link.send(Cell(0, Command.NETINFO, Netinfo(int(time.time()), addr[0], ("127.0.0.1",)).encode()))
            certs = None
            while True:
                cell = link.next_cell(log=False)
                if cell.command == Command.AUTHENTICATE:
                    break
                if cell.command == Command.NETINFO:
                    return  # a client: it does not authenticate
                link.received.update(encode_cell(cell))
                if cell.command == Command.CERTS:
                    certs = Certs.decode(cell.payload)
            initiator = link_certs.verify_initiator_certs(certs, self.now)
            secrets = conn.export_keying_material(link_auth.TLS_EXPORTER_LABEL, 32,
                                                  initiator.claimed.rsa_id_digest)
            peer = link_auth.verify_authenticate(Authenticate.decode(cell.payload), initiator,
                                                 self.identity.public, slog=slog, clog=link.received.digest(),
                                                 responder_tls_cert_der=self.tls_der, tls_secrets=secrets)
            self.results.put(("ok", peer, [t for t, _ in certs.certs]))
        except Exception as exc:  # noqa: BLE001 - reported as the check's result
            self.results.put(("error", f"{type(exc).__name__}: {exc}", None))


def connect(port: int) -> Link:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.settimeout(None)  # pyOpenSSL wants a blocking socket; Link.next_cell times out with select
    conn = SSL.Connection(SSL.Context(SSL.TLS_METHOD), sock)
    conn.set_connect_state()
    conn.do_handshake()
    return Link(conn)


def wait_for(path: Path, text: str, timeout: float = TIMEOUT) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and text in path.read_text(errors="replace"):
            return True
        time.sleep(0.3)
    return False


def start_tor(workdir: Path, name: str, lines: list[str]) -> subprocess.Popen:
    data = workdir / name
    data.mkdir(mode=0o700)
    torrc = workdir / f"{name}.torrc"
    torrc.write_text("\n".join([f"DataDirectory {data}", "SocksPort 0", "ProtocolWarnings 1", "SafeLogging 0",
                                f"Log notice file {workdir}/{name}.notice.log",
                                f"Log debug file {workdir}/{name}.debug.log", *lines]) + "\n")
    return subprocess.Popen(["tor", "-f", str(torrc)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> int:
    if not shutil.which("tor"):
        print("tor is not installed", file=sys.stderr)
        return 2
    now = int(time.time())
    results: dict[str, object] = {}
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="onionlab-ctor-") as tmp:
        work = Path(tmp)
        try:
            ours = OurResponder(now)
            relay_port = free_port()
            procs.append(start_tor(work, "relay", [
                f"ORPort 127.0.0.1:{relay_port}", "Address 127.0.0.1", "Nickname onionlabinterop",
                "AssumeReachable 1", "PublishServerDescriptor 0", "ExitRelay 0",
                "ExtendAllowPrivateAddresses 1"]))
            procs.append(start_tor(work, "client", [
                "UseBridges 1", f"Bridge 127.0.0.1:{ours.port} {ours.identity.node_id.hex().upper()}"]))

            # 1. a C tor client checks our CERTS
            log = work / "client.debug.log"
            good = wait_for(log, "Got some good certificates")
            refusals = [ln for ln in log.read_text().splitlines() if "bad CERTS" in ln][:2]
            results["client_accepts_our_certs"] = good or "; ".join(refusals) or "no verdict in its log"

            if not wait_for(work / "relay.notice.log", "Opened OR listener"):
                raise RuntimeError("the C tor relay did not open its ORPort")
            data = work / "relay"
            node_id = bytes.fromhex((data / "fingerprint").read_text().split()[1])
            ed = (data / "keys" / "ed25519_master_id_public_key").read_bytes()[32:64]

            # 2. we check the relay's CERTS; 3. the relay checks our AUTHENTICATE
            link = connect(relay_port)
            peer_der = (link.conn.get_peer_certificate().to_cryptography()
                        .public_bytes(serialization.Encoding.DER))
            link.send(Cell(0, Command.VERSIONS, Versions((3, 4, 5)).encode()))
            cells = []
            while not cells or cells[-1].command != Command.AUTH_CHALLENGE:
                cells.append(link.next_cell())
            certs = next(Certs.decode(c.payload) for c in cells if c.command == Command.CERTS)
            assert link_auth.choose_auth_method(AuthChallenge.decode(cells[-1].payload)) == 3
            peer = link_certs.verify_responder_certs(certs, peer_der, now, expected_node_id=node_id,
                                                     expected_ed25519=ed)
            results["we_verify_relay_certs"] = [t for t, _ in certs.certs]
            me = link_certs.make_link_identity(rsa.generate_private_key(65537, 1024), os.urandom(32),
                                               os.urandom(32), now, os.urandom)
            link.send(Cell(0, Command.CERTS, link_certs.initiator_certs(me, now).encode()))
            secrets = link.conn.export_keying_material(link_auth.TLS_EXPORTER_LABEL, 32, me.rsa_id_digest)
            auth = link_auth.make_authenticate(me, peer, slog=link.received.digest(), clog=link.sent.digest(),
                                               responder_tls_cert_der=peer_der, tls_secrets=secrets,
                                               rng=os.urandom)
            link.send(Cell(0, Command.AUTHENTICATE, auth.encode()), log=False)
            netinfo = Netinfo(int(time.time()), "127.0.0.1", ())
            link.send(Cell(0, Command.NETINFO, netinfo.encode()), log=False)
            results["relay_accepts_our_auth"] = wait_for(
                work / "relay.debug.log", f"RSA_ID={me.node_id.hex().upper()}, type 3: Looks good")

            # 4. the relay extends a circuit to us and authenticates
            ntor = X25519PrivateKey.from_private_bytes(
                (data / "keys" / "secret_onion_key_ntor").read_bytes()[32:64]).public_key().public_bytes_raw()
            circ = OriginCircuit(0x80000001, os.urandom, path_len=2)
            link.send(circ.create(HopSpec("127.0.0.1", relay_port, node_id, ed, ntor)), log=False)
            while True:
                cell = link.next_cell(log=False)
                if cell.circ_id == circ.circ_id:
                    circ.receive_cell(cell)
                    break
            us = ours.identity
            link.send(circ.extend(HopSpec("127.0.0.1", ours.port, us.node_id, us.ed25519_public, bytes(32))),
                      log=False)
            status, detail, types = ours.results.get(timeout=TIMEOUT)
            results["we_verify_relay_auth"] = (types if status == "ok" and detail.node_id == node_id
                                               and detail.ed25519_identity == ed else detail)
        except Exception as exc:  # noqa: BLE001 - the report says what broke
            results["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)
    ok = len(results) == 4 and all(v is True or isinstance(v, list) for v in results.values())
    for name, value in results.items():
        print(json.dumps({"check": name, "result": value}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
