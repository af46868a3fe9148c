"""The invariant checkers (orchestrator/chaos/invariants.py) and the suite's other checkers on synthetic
histories: each fed a history that breaks its invariant must fail, naming what broke; the healthy history
of test_chaos passes them. Plus the workload's fetchers and credentials, and the recovery figures."""

from __future__ import annotations

import threading

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nodes.core.onion_address import encode_onion_address
from orchestrator import chaos
from orchestrator.chaos import Checkers, History, WorkloadThread, parse_scenario
from orchestrator.chaos.invariants import CONSENSUS_JUDGED_AFTER
from orchestrator.chaos.workload import credentials_for

from .test_chaos import GUARDS, evidence, fault, fetch, history, node_event, sample

IDENTITY_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32))).public_key().public_bytes_raw()
ONION = encode_onion_address(IDENTITY_KEY) + ".onion"
IDENTITY = IDENTITY_KEY.hex()
RUN = evidence()[0]  # the run record: the service is hs


def verdict(name: str, records: list[dict], checkers: Checkers | None = None) -> chaos.Verdict:
    return next(v for v in chaos.judge(records, checkers or Checkers()) if v.name == name)


def healthy(*extra, onion: str = ONION) -> list[dict]:
    records = history(*[fetch(i, float(i)) for i in range(20)], *extra)
    run = next(r for r in records if r["type"] == "run")
    run["onion"] = onion
    return records


def test_the_healthy_history_passes() -> None:
    result = verdict("anonymity", healthy())
    assert result.ok, result.details
    # the two link_up events; the links sampled open at the first sample are older than the run
    assert result.summary.startswith("2 sign(s) of links opened during the run from the service or the "
                                     "client, each at one of its guards (2 older link(s) not judged)")
    assert verdict("consensus_health", healthy()).ok


# -- anonymity -----------------------------------------------------------------------------------------------


def test_an_intro_point_with_a_link_from_the_service_fails() -> None:
    records = healthy(node_event(3.0, "relay2", "intro_point_registered", intro="relay2", auth_key="ab"),
                      node_event(2.0, "relay2", "link_up", peer="10.0.0.10", local="10.0.0.2",
                                 direction="in"))
    result = verdict("anonymity", records)
    assert not result.ok
    assert result.details == ["relay2 (intro point) had a link from the service hs's address 10.0.0.10 "
                              "(1 sign(s), first at 2.0 s); its guards: relay4, relay5"]


def test_an_hsdir_or_a_rendezvous_point_with_a_link_from_the_service_fails() -> None:
    for event, part in (("descriptor_stored", "HSDir"), ("rendezvous_point_registered", "rendezvous point")):
        records = healthy(node_event(3.0, "relay6", event),
                          node_event(4.0, "relay6", "link_up", peer="10.0.0.10", direction="in"))
        result = verdict("anonymity", records)
        assert not result.ok
        assert result.details[0].startswith(f"relay6 ({part}) had a link from the service")


def test_the_guard_after_the_primary_may_see_the_service() -> None:
    """guard-spec 4.3: a circuit whose last hop is the primary guard takes the next guard as its first hop."""
    records = healthy(node_event(4.0, "relay5", "link_up", peer="10.0.0.10", direction="in"))
    assert verdict("anonymity", records).ok
    # but not the one after that: relay6 is third in the service's order
    records = healthy(node_event(4.0, "relay6", "link_up", peer="10.0.0.10", direction="in"))
    assert not verdict("anonymity", records).ok


def test_the_guard_after_guards_that_failed_between_two_samples_may_see_the_client() -> None:
    """The local suite's hsdir-failures run: the client's guard order was its primary, then two relays that
    chaos killed, then a third; both failed as guards 0.06 s after the kill, and an intro circuit to the
    primary guard took the third, now the next usable guard, as its first hop (guard-spec 4.3), before the
    next sample showed the two gone. The checker counted only the primary and the one after it and failed."""
    def guards(t: float, primary: list[str], order: list[str]) -> dict:
        return {**sample(t), "guards": {**GUARDS, "client": {"primary": primary, "order": order}},
                "service_seen_by": [], "links_from": {}}

    client = [r for r in healthy() if r["type"] != "lab_state"] + [
        guards(0.0, ["relay1"], ["relay1", "relay5", "relay6", "relay3", "relay4"]),
        guards(4.0, ["relay1"], ["relay1", "relay5", "relay6", "relay3", "relay4"]),
        guards(6.0, ["relay2"], ["relay2", "relay1", "relay3", "relay4"]),
        node_event(5.07, "relay3", "link_up", peer="10.0.0.11", direction="in")]
    client.sort(key=lambda r: r["t"])
    result = verdict("anonymity", client)
    assert result.ok, result.details
    # relay4 comes after relay3 in every order: still no guard the client may have used
    client.append(node_event(5.5, "relay4", "link_up", peer="10.0.0.11", direction="in"))
    assert verdict("anonymity", client).details == [
        "relay4 (no onion-service part seen) had a link from the client client's address 10.0.0.11 "
        "(1 sign(s), first at 5.5 s); its guards: relay1, relay2, relay3, relay5"]


def test_a_relay_that_is_not_a_guard_of_the_client_sees_its_address_fails() -> None:
    records = healthy(node_event(5.0, "relay6", "link_up", peer="10.0.0.11", direction="in"))
    result = verdict("anonymity", records)
    assert not result.ok
    assert result.details == ["relay6 (no onion-service part seen) had a link from the client client's "
                              "address 10.0.0.11 (1 sign(s), first at 5.0 s); its guards: relay1, relay2"]


def test_a_link_seen_open_during_the_run_at_a_relay_that_is_no_guard_fails() -> None:
    """Its link_up event was lost; the sampled open links show a link that was not open at the first
    sample. One already open then is older than the run: judged by the run in which it opened (its relay
    may have been a guard of the service then), so not here."""
    def with_link(t: float) -> dict:
        return {**sample(t), "guards": GUARDS, "service_seen_by": [],
                "links_from": {"relay3": ["10.0.0.10", "10.0.0.2"], "relay4": ["10.0.0.10"]}}

    records = healthy(with_link(9.0))
    result = verdict("anonymity", records)
    assert not result.ok
    assert result.details == ["relay3 (intro point) had a link from the service hs's address 10.0.0.10 "
                              "(1 sign(s), first at 9.0 s); its guards: relay4, relay5"]
    older = [with_link(r["t"]) if r["type"] == "lab_state" else r for r in healthy()]
    assert verdict("anonymity", older).ok
    # and a run that shows no link from the client at all cannot be judged
    records = [r for r in healthy() if r.get("peer") != "10.0.0.11"]
    for r in records:
        if r["type"] == "lab_state":
            r["links_from"] = {"relay4": ["10.0.0.10"]}
    assert verdict("anonymity", records).details == [
        "no sign of a link from the client client at any relay: nothing to judge"]


def test_a_relay_that_logs_the_onion_address_or_identity_fails() -> None:
    for secret, what in ((ONION.removesuffix(".onion"), "onion address"), (IDENTITY, "identity key")):
        records = healthy(node_event(6.0, "relay6", "rendezvous_point_registered"),
                          node_event(6.5, "relay6", "rendezvous_joined", service=f"circuit of {secret}"))
        result = verdict("anonymity", records)
        assert not result.ok
        assert result.details == [f"relay6 (rendezvous point) logged the service's {what} in its "
                                  "rendezvous_joined event at 6.5 s"]


def test_a_relay_whose_status_names_the_service_fails() -> None:
    records = healthy({**sample(7.0), "guards": GUARDS, "service_seen_by": ["relay3"]})
    result = verdict("anonymity", records)
    assert not result.ok
    assert result.details == ["relay3's /status names the service's onion address or identity key"]


def test_without_the_evidence_anonymity_cannot_pass() -> None:
    records = healthy()
    unread = [{**r, "missing": ["relay2"]} if r["type"] == "node_events" else r for r in records]
    assert verdict("anonymity", unread).details == ["the nodes' events could not be read from relay2"]
    no_guards = [r for r in records if r["type"] != "lab_state"]
    assert not verdict("anonymity", no_guards).ok
    no_addresses = [{**r, "addresses": {}} if r["type"] == "run" else r for r in records]
    assert not verdict("anonymity", no_addresses).ok


# -- consensus health ----------------------------------------------------------------------------------------


def test_an_empty_consensus_accepted_by_any_node_fails() -> None:
    records = healthy(node_event(9.0, "hs", "consensus_received", role="onion_service", relays=0,
                                 valid_after=2))
    result = verdict("consensus_health", records)
    assert not result.ok
    assert result.details == ["hs accepted a consensus listing 0 relays (valid-after 2) at 9.0 s"]
    # a run of 30 s or more in which no node accepted a consensus: the lab made none
    none = [r for r in healthy() if r.get("event") != "consensus_received"]
    none.append({**none[-1], "t": CONSENSUS_JUDGED_AFTER})
    assert not verdict("consensus_health", none).ok


def test_a_run_too_short_for_any_consensus_is_not_judged() -> None:
    """many-clients lasts about 5 s: a healthy default lab (a consensus every 10 s) may not deliver one."""
    none = [r for r in healthy() if r.get("event") != "consensus_received"]
    assert max(r["t"] for r in none) < CONSENSUS_JUDGED_AFTER
    result = verdict("consensus_health", none)
    assert result.ok and "not judged" in result.summary


def test_a_fresh_consensus_after_the_heal() -> None:
    checkers = Checkers(consensus_fresh_within=15)
    stale = healthy(fault(0, "auth1", 2.0, 8.0))
    result = verdict("consensus_health", stale, checkers)
    assert not result.ok
    assert result.details == ["no new consensus within 15 s of the last heal (8.0 s) at client"]
    fresh = healthy(fault(0, "auth1", 2.0, 8.0),
                    node_event(18.0, "client", "consensus_received", role="client", relays=6, valid_after=2))
    assert verdict("consensus_health", fresh, checkers).ok
    late = healthy(fault(0, "auth1", 2.0, 8.0),
                   node_event(30.0, "client", "consensus_received", role="client", relays=6, valid_after=2))
    assert not verdict("consensus_health", late, checkers).ok


# -- the service's next guard --------------------------------------------------------------------------------


def guard_samples(primary_during: str, t0: float = 0.0, t1: float = 20.0) -> list[dict]:
    """Samples every 2 s: relay4 primary until 5 s, `primary_during` from 6 to 14 s, relay4 again after."""
    out = []
    for t in range(int(t0), int(t1), 2):
        primary = primary_during if 6 <= t <= 14 else "relay4"
        order = [primary] + [g for g in ("relay4", "relay5", "relay6") if g != primary]
        out.append({**sample(float(t)), "service_seen_by": [],
                    "guards": {**GUARDS, "hs": {"primary": [primary], "order": order}}})
    return out


def test_the_service_moves_to_its_next_guard() -> None:
    on = Checkers(next_guard=True)
    good = history(*[fetch(i, float(i)) for i in range(20)], fault(0, "relay4", 5.0, 15.0),
                   RUN, *guard_samples("relay5"), healthy=False)
    result = verdict("next_guard", good, on)
    assert result.ok, result.details
    assert result.details == ["op 0 kill relay4: hs's guard relay4, next in order relay5: moved there in 5 "
                              "of 5 samples during the fault"]
    random_relay = history(*[fetch(i, float(i)) for i in range(20)], fault(0, "relay4", 5.0, 15.0),
                           RUN, *guard_samples("relay6"), healthy=False)
    result = verdict("next_guard", random_relay, on)
    assert not result.ok
    assert ("op 0 kill relay4: at 6.0 s hs's primary guard was relay6, neither relay4 nor the next in order "
            "relay5") in result.details
    stuck = history(*[fetch(i, float(i)) for i in range(20)], fault(0, "relay4", 5.0, 15.0),
                    RUN, *guard_samples("relay4"), healthy=False)
    assert not verdict("next_guard", stuck, on).ok
    # a fault that never touched the service's guard: nothing to judge, which fails the scenario that asks
    other = history(*[fetch(i, float(i)) for i in range(20)], fault(0, "relay2", 5.0, 15.0),
                    RUN, *guard_samples("relay4"), healthy=False)
    assert not verdict("next_guard", other, on).ok


# -- the next fetch after a fault ----------------------------------------------------------------------------


def test_the_fetch_after_the_one_a_fault_broke_must_succeed() -> None:
    on = Checkers(next_fetch=True)
    broken = fetch(3, 3.0, ok=False, result="short", took=4.0)  # in flight at 5 s, ends at 7 s
    ok_after = [fetch(4, 7.0), fetch(5, 8.0)]
    records = history(fetch(0, 0.0), broken, *ok_after, fault(0, "relay3", 5.0, 10.0))
    result = verdict("next_fetch", records, on)
    assert result.ok and result.details == [
        "op 0 kill relay3 at 5 s: in flight fetch 3 short; the next, fetch 4 at 7 s: ok"]
    failing = history(fetch(0, 0.0), broken, fetch(4, 7.0, ok=False), fetch(5, 8.0),
                      fault(0, "relay3", 5.0, 10.0))
    assert not verdict("next_fetch", failing, on).ok


# -- recovery figures ----------------------------------------------------------------------------------------


def test_recovery_figures_per_fault() -> None:
    fetches = [fetch(i, float(i), ok=not (10 <= i < 14 or 30 <= i < 38)) for i in range(50)]
    records = history(*fetches, fault(0, "relay1", 10.0, 12.0), fault(1, "relay2", 30.0, 33.0))
    assert chaos.recovery_times(records) == [2.5, 5.5]
    stats = chaos.fetch_stats(records)
    assert stats["recovery_s"] == {"heals": 2, "recovered": 2, "median": 4.0, "max": 5.5}
    assert stats["availability"] == 0.76


# -- the workload: fetchers side by side, credentials --------------------------------------------------------


def test_fetchers_side_by_side_with_their_credentials() -> None:
    used: list[tuple[int, tuple | None]] = []
    lock = threading.Lock()
    credentials = credentials_for("mixed", 4)

    def one(fetcher: int) -> dict:
        with lock:
            used.append((fetcher, credentials(fetcher)))
        return {"ok": True, "result": "ok", "socks_reply": 0, "bytes": 1, "error": None}

    h = History(None)
    w = WorkloadThread(h, one, 0.0, lambda line: None, concurrency=4, fetches=3)
    w.start()
    w.join(timeout=10)
    assert not w.is_alive() and w.error is None
    fetches = [r for r in h.records if r["type"] == "fetch"]
    assert sorted(r["n"] for r in fetches) == list(range(12))
    assert sorted(r["fetcher"] for r in fetches) == sorted([0, 1, 2, 3] * 3)
    by_fetcher = {f: {c for g, c in used if g == f} for f in range(4)}
    assert all(len(c) == 1 for c in by_fetcher.values())  # each fetcher keeps its pair
    assert by_fetcher[0] == by_fetcher[2] != by_fetcher[1] != by_fetcher[3]  # even ones share one
    assert credentials_for("fresh", 2)(0) is None  # fetch_once draws fresh ones each time


def test_the_new_workload_and_checker_keys_parse() -> None:
    scenario = parse_scenario("name: x\nduration: 30\nworkload: {concurrency: 50, fetches: 10, "
                              "credentials: mixed}\ncheckers:\n  next_guard: {}\n  next_fetch: {}\n"
                              "  consensus_health: {fresh_within: 40}\n")
    w, c = scenario.workload, scenario.checkers
    assert (w.concurrency, w.fetches, w.credentials) == (50, 10, "mixed")
    assert (c.next_guard, c.next_fetch, c.consensus_fresh_within) == (True, True, 40.0)
    assert parse_scenario("name: x\nduration: 3\n").checkers.next_guard is False


def test_no_consensus_is_made_while_a_majority_of_authorities_is_down() -> None:
    """stalled_after: a consensus valid from well after the fault began, accepted before its undo began,
    was signed without the majority (the defect of a lab that signs what it should not)."""
    checkers = Checkers(consensus_stalled_after=12)
    start = {"type": "start", "t": 0.0, "t0_wall": 1000.0}
    lab = [{"name": f"auth{i}", "role": "authority"} for i in (1, 2, 3)]
    # auth1 and auth2 down from 5 s; auth2's undo begins at 24 s (auth1's later): a majority until 24 s
    ends = fault(0, "auth1", 5.0, 35.0) + fault(0, "auth2", 5.0, 25.0)
    ends[1]["began"], ends[3]["began"] = 34.0, 24.0

    def received(valid_after: float) -> dict:
        return node_event(valid_after - 1000 + 1, "client", "consensus_received", role="client", relays=6,
                          valid_after=valid_after)

    def with_lab(records: list[dict]) -> list[dict]:
        return [{**r, "lab": lab} if r["type"] == "run" else r for r in records]

    quiet = with_lab(healthy(start, ends, received(1010.0), received(1030.0)))  # 10 s; 30 s: auth2 back
    result = verdict("consensus_health", quiet, checkers)
    assert result.ok, result.details
    assert "none made while a majority of the authorities was down (5.0-24.0 s)" in result.summary
    made = with_lab(healthy(start, ends, received(1020.0)))  # 20 s: more than 12 s into the majority's loss
    result = verdict("consensus_health", made, checkers)
    assert not result.ok
    assert result.details == ["client accepted a consensus valid from 1020.0 (20.0 s), made while a majority "
                              "of the authorities was down (5.0 to 24.0 s)"]
    # one authority down is no majority: nothing to judge, which fails the scenario that asks
    minority = with_lab(healthy(start, fault(0, "auth1", 5.0, 25.0)))
    assert not verdict("consensus_health", minority, checkers).ok


def test_a_tor_nodes_consensus_events_are_not_judged_for_their_relays() -> None:
    """A stock tor node's consensus_received (translated from its control events) has no relay count: it is
    neither a failure nor counted as a healthy consensus."""
    from orchestrator.chaos.invariants import check_consensus_health

    ours = {"type": "node_event", "t": 1.0, "node": "client", "event": "consensus_received", "relays": 6,
            "valid_after": 1}
    tors = {"type": "node_event", "t": 2.0, "node": "torclient", "event": "consensus_received",
            "via": "NEWCONSENSUS"}
    collected = {"type": "node_events", "t": 3.0, "count": 2, "missing": []}
    verdict = check_consensus_health([ours, tors, collected])
    assert verdict.ok and "1 consensus(es) accepted" in verdict.summary
    assert "1 more from tor" in verdict.summary
    empty = dict(ours, relays=0)
    assert not check_consensus_health([empty, tors, collected]).ok
