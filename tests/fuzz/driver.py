"""Fuzz driver shared by the unit test (a few thousand cases) and `make fuzz` (100,000+ per parser)."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import random
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from nodes.core.errors import RemoteProtocolError


@dataclass(frozen=True)
class Target:
    name: str
    parse: Callable[[bytes], object]
    seeds: tuple[bytes, ...]  # valid inputs that parse; mutations of these reach deep code paths


@dataclass
class Outcome:
    name: str
    cases: int = 0
    accepted: int = 0
    typed: int = 0
    untyped: int = 0
    first_untyped: list[str] = field(default_factory=list)


def all_targets() -> list[Target]:
    import tests.fuzz as pkg

    targets: list[Target] = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("targets_"):
            targets.extend(importlib.import_module(f"tests.fuzz.{info.name}").TARGETS)
    return targets


def mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and data:  # flip bits in one byte
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif op == 1 and data:  # overwrite one byte with an edge value
            data[rng.randrange(len(data))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2:  # truncate
            del data[rng.randrange(len(data) + 1):]
        elif op == 3:  # append junk
            data += rng.randbytes(rng.randint(1, 64))
        elif op == 4 and data:  # delete a slice
            i = rng.randrange(len(data))
            del data[i:i + rng.randint(1, 16)]
        elif op == 5 and data:  # duplicate a slice
            i = rng.randrange(len(data))
            data[i:i] = data[i:i + rng.randint(1, 16)]
    return bytes(data)


def fuzz_target(target: Target, cases: int, seed: int) -> Outcome:
    rng = random.Random(f"{seed}:{target.name}")
    out = Outcome(target.name)
    for _ in range(cases):
        if target.seeds and rng.random() < 0.8:
            data = mutate(rng, rng.choice(target.seeds))
        else:
            data = rng.randbytes(rng.choice((rng.randint(0, 16), rng.randint(0, 600))))
        out.cases += 1
        try:
            target.parse(data)
        except RemoteProtocolError:
            out.typed += 1
        except Exception:  # noqa: BLE001 - counting untyped exceptions is the point
            out.untyped += 1
            if len(out.first_untyped) < 3:
                out.first_untyped.append(f"input={data.hex()}\n{traceback.format_exc()}")
        else:
            out.accepted += 1
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fuzz every core parser with random and mutated bytes")
    ap.add_argument("--cases", type=int, default=100_000, help="cases per parser")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", help="substring of the target names to run")
    args = ap.parse_args(argv)
    results = []
    for target in all_targets():
        if args.only and args.only not in target.name:
            continue
        o = fuzz_target(target, args.cases, args.seed)
        results.append(o)
        print(json.dumps({"parser": o.name, "cases": o.cases, "accepted": o.accepted, "typed_errors": o.typed,
                          "untyped_exceptions": o.untyped}), flush=True)
        for tb in o.first_untyped:
            print(tb, file=sys.stderr)
    total_untyped = sum(o.untyped for o in results)
    print(json.dumps({"parsers": len(results), "cases": sum(o.cases for o in results),
                      "untyped_exceptions": total_untyped}))
    return 1 if total_untyped or not results else 0


if __name__ == "__main__":
    sys.exit(main())
