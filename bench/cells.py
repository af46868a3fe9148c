"""Relay cell crypto throughput on one core: `python -m bench.cells` prints one JSON object.

Three cases, each the best of several repetitions over the same number of cells:
  origin_encrypt_hop3  the client originates a cell for hop 3 of a 3-hop circuit (digest + 3 AES layers);
  relay_passthrough    a relay removes its layer from a cell that is not for it (the common case);
  relay_recognized     a relay removes its layer, sees recognized == 0 and checks the digest on a copy.
Goal: >= 100,000 cells/s for each. One more case shows what the codec adds on the origin's send path:
  origin_data_cell_hop3  a DATA message encoded, laid into a relay body, encrypted for hop 3 as above, and
                         framed as a 514-byte RELAY cell (what OriginCircuit does per cell, minus its RNG).
Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import cryptography

from nodes.core.cells import Cell, Command, encode_cell
from nodes.core.relay import Data, encode_relay_body
from nodes.core.relay_crypto import BODY_LEN, HopCrypto, OriginCrypto, RelayLayer

GOAL = 100_000
BATCH = 10_000  # recognized cells are made in batches outside the timed region, so memory stays small


def _key_material(n: int) -> bytes:
    return bytes((n * 37 + i) % 256 for i in range(92))


def _plain_body() -> bytes:
    data = bytes(range(256)) + bytes(range(242))  # 498 bytes of RELAY_DATA
    return (b"\x02\x00\x00\x00\x01" + bytes(4) + len(data).to_bytes(2, "big") + data).ljust(BODY_LEN, b"\0")


def origin_encrypt_hop3(cells: int) -> float:
    origin = OriginCrypto()
    for n in range(3):
        origin.add_hop(HopCrypto.tor1(_key_material(n)))
    body, encrypt = _plain_body(), origin.encrypt
    start = time.perf_counter()
    for _ in range(cells):
        encrypt(body, 2)
    return time.perf_counter() - start


def relay_passthrough(cells: int) -> float:
    decrypt = RelayLayer.tor1(_key_material(0)).decrypt_forward
    # Any ciphertext works: the running keystream makes each decryption different, and recognized == 0 by
    # chance (1 in 65536) only adds the rare digest check a real relay also pays.
    body = bytes((i * 7 + 3) % 256 for i in range(BODY_LEN))
    start = time.perf_counter()
    for _ in range(cells):
        decrypt(body)
    return time.perf_counter() - start


def relay_recognized(cells: int) -> float:
    origin = OriginCrypto()
    origin.add_hop(HopCrypto.tor1(_key_material(0)))
    decrypt = RelayLayer.tor1(_key_material(0)).decrypt_forward
    body = _plain_body()
    elapsed = 0.0
    done = 0
    while done < cells:
        batch = [origin.encrypt(body, 0) for _ in range(min(BATCH, cells - done))]
        start = time.perf_counter()
        for cell in batch:
            decrypt(cell)
        elapsed += time.perf_counter() - start
        done += len(batch)
    if not decrypt(origin.encrypt(body, 0))[0]:
        raise AssertionError("benchmark cells were not recognized")
    return elapsed


def origin_data_cell_hop3(cells: int) -> float:
    origin = OriginCrypto()
    for n in range(3):
        origin.add_hop(HopCrypto.tor1(_key_material(n)))
    payload, encrypt = bytes(range(256)) + bytes(range(242)), origin.encrypt
    start = time.perf_counter()
    for _ in range(cells):
        message = Data(payload)
        body = encode_relay_body(message.COMMAND, 1, message.encode())
        encode_cell(Cell(0x80000001, Command.RELAY, encrypt(body, 2)))
    return time.perf_counter() - start


CASES = {"origin_encrypt_hop3": origin_encrypt_hop3, "relay_passthrough": relay_passthrough,
         "relay_recognized": relay_recognized, "origin_data_cell_hop3": origin_data_cell_hop3}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=200_000)
    ap.add_argument("--repetitions", type=int, default=3)
    args = ap.parse_args(argv)
    rates = {name: round(args.cells / min(case(args.cells) for _ in range(args.repetitions)))
             for name, case in CASES.items()}
    print(json.dumps({
        "benchmark": "relay cell crypto",
        "unit": "cells/s, one core, best of repetitions",
        "cells": args.cells,
        "repetitions": args.repetitions,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "cryptography": cryptography.__version__,
        "results": rates,
        "goal": GOAL,
        "meets_goal": all(r >= GOAL for r in rates.values()),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
