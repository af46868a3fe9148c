"""nodes.core.tor_events: a tor client's control events become the flow's events (docs/events.md).

The event lines follow control-spec.txt (section 4.1) as tor 0.4.9 formats them for a client that fetches
a descriptor, sets up a rendezvous point, introduces itself and joins; `onionlab flow` judges steps 3, 4
and 6 of a tor client from what this translator emits."""

from nodes.core.tor_events import Translator, hop_name
from nodes.core.torcontrol import ControlParser, parse_event

ONION = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd"
A, B, C, D = ("$" + c * 40 for c in "ABCD")
FLOW = f"""\
650 STREAM 7 NEW 0 {ONION}.onion:80 SOCKS_USERNAME="flow-1" SOCKS_PASSWORD="x" CLIENT_PROTOCOL=SOCKS5
650 HS_DESC REQUESTED {ONION} NO_AUTH {D}~relay4 dGVzdA HSDIR_INDEX=00
650 HS_DESC RECEIVED {ONION} NO_AUTH {D}~relay4 dGVzdA
650 CIRC 11 BUILT {A}~relay1,{B}~relay2,{C}~relay3 BUILD_FLAGS=IS_INTERNAL,NEED_CAPACITY \
PURPOSE=HS_CLIENT_REND HS_STATE=HSCR_CONNECTING REND_QUERY={ONION} TIME_CREATED=2026-12-07T07:35:48.770670
650 CIRC_MINOR 11 PURPOSE_CHANGED {A}~relay1,{B}~relay2,{C}~relay3 BUILD_FLAGS=IS_INTERNAL,NEED_CAPACITY \
PURPOSE=HS_CLIENT_REND HS_STATE=HSCR_ESTABLISHED_IDLE REND_QUERY={ONION} OLD_PURPOSE=HS_CLIENT_REND \
OLD_HS_STATE=HSCR_CONNECTING
650 CIRC 12 BUILT {A}~relay1,{C}~relay3,{D}~relay4 PURPOSE=HS_CLIENT_INTRO HS_STATE=HSCI_CONNECTING \
REND_QUERY={ONION}
650 CIRC_MINOR 12 PURPOSE_CHANGED {A}~relay1,{C}~relay3,{D}~relay4 PURPOSE=HS_CLIENT_INTRO \
HS_STATE=HSCI_INTRO_SENT REND_QUERY={ONION} OLD_PURPOSE=HS_CLIENT_INTRO OLD_HS_STATE=HSCI_CONNECTING
650 CIRC_MINOR 12 PURPOSE_CHANGED {A}~relay1,{C}~relay3,{D}~relay4 PURPOSE=HS_CLIENT_INTRO \
HS_STATE=HSCI_DONE REND_QUERY={ONION} OLD_PURPOSE=HS_CLIENT_INTRO OLD_HS_STATE=HSCI_INTRO_SENT
650 CIRC_MINOR 11 PURPOSE_CHANGED {A}~relay1,{B}~relay2,{C}~relay3 PURPOSE=HS_CLIENT_REND \
HS_STATE=HSCR_ESTABLISHED_WAITING REND_QUERY={ONION} OLD_PURPOSE=HS_CLIENT_REND \
OLD_HS_STATE=HSCR_ESTABLISHED_IDLE
650 CIRC_MINOR 11 PURPOSE_CHANGED {A}~relay1,{B}~relay2,{C}~relay3 PURPOSE=HS_CLIENT_REND \
HS_STATE=HSCR_JOINED REND_QUERY={ONION} OLD_PURPOSE=HS_CLIENT_REND OLD_HS_STATE=HSCR_ESTABLISHED_WAITING
650 CIRC 12 CLOSED {A}~relay1,{C}~relay3,{D}~relay4 PURPOSE=HS_CLIENT_INTRO HS_STATE=HSCI_DONE REASON=FINISHED
650 STREAM 7 SENTCONNECT 11 {ONION}.onion:80
650 STREAM 7 SUCCEEDED 11 {ONION}.onion:80
"""


def translate(text: str, translator: Translator | None = None) -> list[tuple[str, dict]]:
    translator = translator or Translator()
    parser = ControlParser()
    parser.receive_data(text.replace(" \\\n", " ").replace("\n", "\r\n").encode())
    out = []
    while (reply := parser.next_reply()) is not None:
        out += translator.translate(parse_event(reply))
    return out


def test_a_client_rendezvous_becomes_the_flows_events():
    events = translate(FLOW)
    assert [name for name, _ in events] == [
        "socks_request", "descriptor_requested", "descriptor_fetched", "circuit_built",
        "rendezvous_established", "circuit_built", "introduce_sent", "introduce_acked",
        "rendezvous_completed", "stream_opened"]
    by_name = dict(events)
    onion = f"{ONION}.onion"
    assert by_name["socks_request"] == {"stream": "7", "host": onion, "port": 80, "isolated": True,
                                        "via": "STREAM"}
    assert by_name["descriptor_fetched"] == {"onion": onion, "hsdir": "relay4", "blinded_key": "dGVzdA",
                                             "via": "HS_DESC"}
    assert by_name["rendezvous_established"] == {"onion": onion, "circuit": "11", "rendezvous": "relay3",
                                                 "path": ["relay1", "relay2", "relay3"], "via": "CIRC_MINOR"}
    # introduce_sent names the rendezvous point, as our own client's does, and its circuit's hops (flow --svg)
    assert by_name["introduce_sent"] == {"onion": onion, "circuit": "12", "intro": "relay4",
                                         "path": ["relay1", "relay3", "relay4"], "rendezvous": "relay3",
                                         "via": "CIRC_MINOR"}
    assert by_name["rendezvous_completed"]["rendezvous"] == "relay3"
    assert by_name["stream_opened"] == {"onion": onion, "port": 80, "circuit": "11", "stream": "7",
                                        "via": "STREAM"}
    assert by_name["circuit_built"]["path"] == ["relay1", "relay3", "relay4"]  # the last one built


def test_each_state_is_reported_once_per_circuit_until_the_id_is_reused():
    translator = Translator()
    established = (f"650 CIRC_MINOR 3 PURPOSE_CHANGED {A}~r1 PURPOSE=HS_CLIENT_REND "
                   f"HS_STATE=HSCR_ESTABLISHED_IDLE REND_QUERY={ONION}\n")
    assert len(translate(established * 2, translator)) == 1
    assert translate(f"650 CIRC 3 CLOSED {A}~r1 PURPOSE=HS_CLIENT_REND REASON=FINISHED\n", translator) == []
    assert len(translate(established, translator)) == 1  # circuit 3 is a new circuit now


def test_failures_and_bootstrap():
    events = translate(
        f"650 HS_DESC FAILED {ONION} NO_AUTH {D}~relay4 dGVzdA REASON=NOT_FOUND\n"
        f"650 CIRC 9 FAILED {A}~relay1 PURPOSE=GENERAL REASON=DESTROYED REMOTE_REASON=OR_CONN_CLOSED\n"
        f"650 STREAM 4 FAILED 0 {ONION}.onion:80 REASON=END REMOTE_REASON=RESOLVEFAILED "
        "CLIENT_PROTOCOL=SOCKS5\n"
        '650 STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=5 TAG=conn SUMMARY="Connecting to a relay"\n'
        '650 STATUS_CLIENT WARN BOOTSTRAP PROGRESS=5 TAG=conn SUMMARY="Connecting to a relay" '
        'WARNING="Connection refused" REASON=CONNECTREFUSED COUNT=1\n'
        '650 STATUS_CLIENT WARN BOOTSTRAP PROGRESS=5 TAG=conn SUMMARY="Connecting to a relay" '
        'WARNING="Connection refused" REASON=CONNECTREFUSED COUNT=2\n'  # tor repeats a stuck state
        "650 STATUS_CLIENT NOTICE CONSENSUS_ARRIVED\n"
        "650 STATUS_CLIENT NOTICE CIRCUIT_ESTABLISHED\n")
    assert events == [
        ("descriptor_fetch_failed", {"onion": f"{ONION}.onion", "hsdir": "relay4", "blinded_key": "dGVzdA",
                                     "error": "NOT_FOUND", "via": "HS_DESC"}),
        ("circuit_build_failed", {"circ_id": "9", "purpose": "GENERAL", "kind": "DESTROYED",
                                  "error": "OR_CONN_CLOSED", "via": "CIRC"}),
        ("stream_failed", {"stream": "4", "host": f"{ONION}.onion", "port": 80, "reason": "RESOLVEFAILED",
                           "via": "STREAM"}),
        ("bootstrap", {"progress": 5, "tag": "conn", "summary": "Connecting to a relay",
                       "via": "STATUS_CLIENT"}),
        ("bootstrap", {"progress": 5, "tag": "conn", "summary": "Connecting to a relay",
                       "warning": "Connection refused", "reason": "CONNECTREFUSED", "via": "STATUS_CLIENT"}),
        ("consensus_received", {"via": "STATUS_CLIENT"}),
    ]


def test_what_is_not_part_of_the_flow_is_left_out():
    assert translate("650 CIRC 5 LAUNCHED BUILD_FLAGS=ONEHOP_TUNNEL PURPOSE=GENERAL\n"
                     "650 STREAM 18 NEW 0 10.0.0.2.$AA.exit:9001 PURPOSE=DIR_FETCH CLIENT_PROTOCOL=UNKNOWN\n"
                     "650 BW 10 20\n") == []


def test_hop_names():
    assert hop_name(f"{A}~relay1") == "relay1"
    assert hop_name(f"{A}=relay1") == "relay1"
    assert hop_name(A) == "A" * 40


# What a tor onion service (0.4.9.11, in a mixed lab) sent for one introduction, lines shortened to the
# fields the translator reads; and a tor relay's STATUS_SERVER events (control-spec 4.1.10).
SERVICE = f"""\
650 CIRC_MINOR 37 PURPOSE_CHANGED {A}~relay3,{B}~relay1,{C}~torrelay1 BUILD_FLAGS=IS_INTERNAL,NEED_UPTIME \
PURPOSE=HS_SERVICE_INTRO HS_STATE=HSSI_ESTABLISHED REND_QUERY={ONION} OLD_PURPOSE=HS_SERVICE_INTRO \
OLD_HS_STATE=HSSI_CONNECTING
650 HS_DESC UPLOAD {ONION} UNKNOWN {D}~relay2 3vqfGfENguX5BrFlm0etKB01qXFdNuLsF8ao8n5QiZE HSDIR_INDEX=96
650 HS_DESC UPLOADED {ONION} UNKNOWN {D}~relay2
650 CIRC 35 LAUNCHED BUILD_FLAGS=IS_INTERNAL,NEED_CAPACITY PURPOSE=HS_SERVICE_REND HS_STATE=HSSR_CONNECTING
650 CIRC 35 EXTENDED {A}~relay3 BUILD_FLAGS=IS_INTERNAL,NEED_CAPACITY PURPOSE=HS_SERVICE_REND \
HS_STATE=HSSR_CONNECTING REND_QUERY={ONION}
650 CIRC 35 BUILT {A}~relay3,{C}~torrelay2,{B}~relay1 PURPOSE=HS_SERVICE_REND HS_STATE=HSSR_CONNECTING \
REND_QUERY={ONION}
650 CIRC_MINOR 35 PURPOSE_CHANGED {A}~relay3,{C}~torrelay2,{B}~relay1 PURPOSE=HS_SERVICE_REND \
HS_STATE=HSSR_JOINED REND_QUERY={ONION} OLD_PURPOSE=HS_SERVICE_REND OLD_HS_STATE=HSSR_CONNECTING
650 CIRC 37 CLOSED {A}~relay3,{B}~relay1,{C}~torrelay1 BUILD_FLAGS=IS_INTERNAL,NEED_UPTIME \
PURPOSE=HS_SERVICE_INTRO HS_STATE=HSSI_ESTABLISHED REND_QUERY={ONION} REASON=FINISHED
650 STATUS_SERVER NOTICE ACCEPTED_SERVER_DESCRIPTOR DIRAUTH=127.0.1.2:9030
650 STATUS_SERVER WARN BAD_SERVER_DESCRIPTOR DIRAUTH=127.0.1.3:9030 REASON="descriptor rejected"
650 STATUS_SERVER NOTICE REACHABILITY_SUCCEEDED ORADDRESS=127.0.1.9:9001
"""


def test_a_tor_services_steps_and_a_tor_relays_descriptor_become_the_flows_events():
    events = translate(SERVICE)
    onion = f"{ONION}.onion"
    assert [name for name, _ in events] == [
        "intro_established", "descriptor_upload_started", "descriptor_published", "introduce_received",
        "circuit_built", "rendezvous_sent", "intro_lost", "descriptor_uploaded", "descriptor_upload_failed",
        "reachability_succeeded"]
    by_name = dict(events)
    assert by_name["intro_established"] == {"onion": onion, "circuit": "37", "intro": "torrelay1",
                                            "path": ["relay3", "relay1", "torrelay1"], "via": "CIRC_MINOR"}
    assert by_name["descriptor_published"] == {"onion": onion, "hsdir": "relay2", "via": "HS_DESC"}
    # LAUNCHED names no onion and no path yet: INTRODUCE2 arrived, the rendezvous point is not reached
    assert by_name["introduce_received"] == {"onion": None, "circuit": "35", "path": [], "via": "CIRC"}
    assert by_name["rendezvous_sent"] == {"onion": onion, "circuit": "35", "rendezvous": "relay1",
                                          "path": ["relay3", "torrelay2", "relay1"], "via": "CIRC_MINOR"}
    assert by_name["intro_lost"] == {"onion": onion, "circuit": "37", "intro": "torrelay1",
                                     "error": "FINISHED", "via": "CIRC"}
    assert by_name["descriptor_uploaded"] == {"authority": "127.0.1.2:9030", "via": "STATUS_SERVER"}
    assert by_name["descriptor_upload_failed"]["reason"] == "descriptor rejected"
