"""Does a real C tor client accept our consensus and authority certificates? (needs Debian's `tor`)

    .venv/bin/python -m tests.interop.tor_loads_consensus [--signers N] [--voters N] [--no-guards]
        [--require PROTOCOLS] [--keep DIR] [--seconds S]

Makes 3 authorities (RSA-1024 identity and signing keys, certificates), the votes of N of them on 5 relays,
the consensus (compute_consensus), has N authorities sign it, and writes `cached-microdesc-consensus` and
`cached-certs` into a throwaway DataDirectory. Then it starts `tor` as a client with TestingTorNetwork 1,
DisableNetwork 1 (nothing leaves the machine) and DirAuthority lines for our authorities, asks its control
port what it holds (ns/all, sr/current) and reads its info log: tor must load the consensus without a warning
about parsing or signatures. Prints tor's relevant log lines and exits 0 when tor accepted the documents, 1
otherwise.

Not a unit test: it needs the tor binary and runs it for a few seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from nodes.core.authcert import make_authority_cert
from nodes.core.consensus import SignedConsensus, sign_consensus
from nodes.core.vote import DirAuthority, VoteRouter, compute_consensus, make_vote

N_AUTHORITIES = 3
PROTO = "Cons=2 Desc=2 FlowCtrl=1 HSDir=2 HSIntro=4 HSRend=2 Link=4-5 Microdesc=2 Relay=2"
# tor's own configuration warnings, expected in any TestingTorNetwork setup
EXPECTED_WARNINGS = ("TestingTorNetwork is set", "You have used DirAuthority",
                     "Your log may contain sensitive information", "You are running Tor as root")


def build(now: int, signers: int, voters: int = N_AUTHORITIES, guards: bool = True,
          require: str | None = None, n_relays: int = 5) -> tuple[bytes, bytes, list[str]]:
    """(consensus document, concatenated certificates, DirAuthority torrc lines)."""
    keys = [(rsa.generate_private_key(65537, 1024), rsa.generate_private_key(65537, 1024))
            for _ in range(N_AUTHORITIES)]
    certs = [make_authority_cert(ident, signing, now - 3600, now + 30 * 86400) for ident, signing in keys]
    authorities = [DirAuthority(f"auth{i}", c.v3ident, "127.0.0.1", 7100 + i, 5100 + i)
                   for i, c in enumerate(certs)]
    relays = []
    for i in range(n_relays):
        flags = {"Running", "Valid", "Fast", "Stable", "HSDir", "V2Dir"}
        if i % 2 and guards:
            flags.add("Guard")
        relays.append(VoteRouter(f"relay{i}", hashlib.sha1(b"relay%d" % i).digest(),
                                 hashlib.sha256(b"ed%d" % i).digest(), f"127.0.0.{10 + i}", 9001, 0,
                                 now - 600, 1000 * (i + 1), "Tor 0.4.9.11", PROTO,
                                 hashlib.sha256(b"md%d" % i).digest(), frozenset(flags)))
    va = now - 30
    votes = [make_vote(c, k[1], published=va - 10, valid_after=va, fresh_until=va + 60, valid_until=va + 180,
                       vote_delay=4, dist_delay=4, routers=relays, hs_period_minutes=60,
                       shared_rand_current=hashlib.sha256(b"srv").digest())
             for c, k in zip(certs, keys, strict=True)][:voters]
    extra = {} if require is None else {"required_client_protocols": require}
    consensus = compute_consensus(votes, authorities, **extra)
    print(f"consensus: {len(consensus.routers)} relays, {len(consensus.dir_sources)} dir-sources, "
          f"bandwidth-weights {'yes' if consensus.bandwidth_weights else 'none'}")
    signed = SignedConsensus.unsigned(consensus)
    by_id = {c.v3ident: c for c in certs}
    for c, k in list(zip(certs, keys, strict=True))[:signers]:
        signed = signed.add_signature(sign_consensus(signed.body, c, k[1]), by_id)
    lines = [f"DirAuthority auth{i} orport={5100 + i} no-v2 v3ident={c.v3ident.hex().upper()} "
             f"127.0.0.1:{7100 + i} {hashlib.sha1(b'router%d' % i).hexdigest().upper()}"
             for i, c in enumerate(certs)]
    return signed.encode(), b"".join(c.raw for c in certs), lines


def control(datadir: Path, commands: list[str]) -> str:
    """Ask tor's control port (cookie authentication) and return its replies."""
    port_line = (datadir / "control-port").read_text().split()[-1].removeprefix("PORT=")
    host, port = port_line.rsplit(":", 1)
    cookie = (datadir / "control_auth_cookie").read_bytes().hex()
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"AUTHENTICATE {cookie}\r\n".encode() + "".join(c + "\r\n" for c in commands).encode()
                     + b"QUIT\r\n")
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks).decode("ascii", "replace")


def run_tor(datadir: Path, dirauth_lines: list[str], seconds: float) -> tuple[str, str]:
    """(tor's info log, its control-port answers about the consensus it holds)."""
    log = datadir / "info.log"
    torrc = datadir / "torrc"
    torrc.write_text("\n".join([
        f"DataDirectory {datadir}", "TestingTorNetwork 1", "DisableNetwork 1", "SocksPort auto",
        "ControlPort 127.0.0.1:auto", f"ControlPortWriteToFile {datadir / 'control-port'}",
        "CookieAuthentication 1", f"Log info file {log}", "Log notice stderr", *dirauth_lines, ""]))
    proc = subprocess.Popen(["tor", "-f", str(torrc)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    answers = ""
    try:
        time.sleep(seconds)
        try:
            answers = control(datadir, ["GETINFO ns/all", "GETINFO sr/current", "GETINFO sr/previous",
                                        "GETINFO status/bootstrap-phase"])
        except OSError as e:
            answers = f"control port unreachable ({e}); tor exited with {proc.poll()}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return (log.read_text() if log.exists() else ""), answers


def judge(log: str, answers: str, signers: int) -> tuple[bool, list[str]]:
    relevant = [line for line in log.splitlines()
                if re.search(r"\[(warn|err)\]|consensus|certificate|signature|protocol", line, re.I)]
    bad = [line for line in log.splitlines() if re.search(r"\[(warn|err)\]", line)
           and not any(w in line for w in EXPECTED_WARNINGS)]
    loaded = f"This microdesc one has {signers} " in log and "Live microdesc consensus" in log
    return loaded and not bad, relevant


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--signers", type=int, default=N_AUTHORITIES)
    ap.add_argument("--voters", type=int, default=N_AUTHORITIES)
    ap.add_argument("--no-guards", action="store_true")
    ap.add_argument("--require", help="required-client-protocols to write instead of ours")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--keep", type=Path, help="use and keep this DataDirectory")
    args = ap.parse_args()
    if shutil.which("tor") is None:
        print("tor is not installed", file=sys.stderr)
        return 2
    datadir = args.keep or Path(tempfile.mkdtemp(prefix="onionlab-tor-"))
    datadir.mkdir(parents=True, exist_ok=True)
    os.chmod(datadir, 0o700)
    try:
        consensus, certs, lines = build(int(time.time()), args.signers, args.voters, not args.no_guards,
                                        args.require)
        (datadir / "cached-microdesc-consensus").write_bytes(consensus)
        (datadir / "cached-certs").write_bytes(certs)
        log, answers = run_tor(datadir, lines, args.seconds)
    finally:
        if args.keep is None:
            shutil.rmtree(datadir, ignore_errors=True)
    ok, relevant = judge(log, answers, args.signers)
    print("\n".join(relevant))
    print("--- control port ---")
    print(answers)
    print("ACCEPTED" if ok else "NOT ACCEPTED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
