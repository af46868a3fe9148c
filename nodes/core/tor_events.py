"""tor's control events -> onionlab's events (docs/events.md), for a tor that plays a client, an onion
service or a relay.

The orchestrator judges the rendezvous flow from onionlab event names (`descriptor_fetched`,
`rendezvous_established`, `introduce_sent`, `rendezvous_completed`, ...). A stock tor says the same things in
its own words: HS_DESC RECEIVED is a fetched descriptor, and a circuit's HS_STATE (in CIRC and CIRC_MINOR
PURPOSE_CHANGED events) walks through the client's half of the flow:

    HS_CLIENT_REND  HSCR_CONNECTING -> HSCR_ESTABLISHED_IDLE | _WAITING -> HSCR_JOINED
    HS_CLIENT_INTRO HSCI_CONNECTING -> HSCI_INTRO_SENT -> HSCI_DONE

and the service's half: HS_SERVICE_INTRO HSSI_ESTABLISHED (an intro point answered INTRO_ESTABLISHED),
HS_SERVICE_REND HSSR_CONNECTING (INTRODUCE2 decrypted: a circuit to the rendezvous point is under way) ->
HSSR_JOINED (RENDEZVOUS1 sent); HS_DESC UPLOADED is a descriptor an HSDir took. A relay's STATUS_SERVER
events say what the authorities made of its descriptor.

`Translator` is a small state machine (it remembers each onion's rendezvous point so that `introduce_sent`
can name it, as ours does) that returns (event name, fields) pairs; the caller emits them. Every event
carries `via`, tor's event name, so a timeline shows where it came from. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .torcontrol import DecodeError, TorEvent, bootstrap_of

Emitted = tuple[str, dict[str, object]]

# (purpose, HS_STATE) -> the onionlab event a client emits when a circuit enters that state
_HS_STATES = {
    ("HS_CLIENT_REND", "HSCR_ESTABLISHED_IDLE"): "rendezvous_established",
    ("HS_CLIENT_REND", "HSCR_ESTABLISHED_WAITING"): "rendezvous_established",
    ("HS_CLIENT_INTRO", "HSCI_INTRO_SENT"): "introduce_sent",
    ("HS_CLIENT_INTRO", "HSCI_DONE"): "introduce_acked",
    ("HS_CLIENT_REND", "HSCR_JOINED"): "rendezvous_completed",
    ("HS_SERVICE_INTRO", "HSSI_ESTABLISHED"): "intro_established",
    ("HS_SERVICE_REND", "HSSR_CONNECTING"): "introduce_received",
    ("HS_SERVICE_REND", "HSSR_JOINED"): "rendezvous_sent",
}
# which field a step's last hop fills (None: the path is not built yet, its last hop means nothing)
_LAST_HOP = {"rendezvous_established": "rendezvous", "rendezvous_completed": "rendezvous",
             "rendezvous_sent": "rendezvous", "introduce_sent": "intro", "introduce_acked": "intro",
             "intro_established": "intro", "introduce_received": None}
SUBSCRIBED = ("CIRC", "CIRC_MINOR", "STREAM", "HS_DESC", "STATUS_CLIENT", "STATUS_SERVER")  # SETEVENTS


def hop_name(hop: str) -> str:
    """`$FINGERPRINT~nickname` (or `=nickname`, or a bare `$FINGERPRINT`) -> the nickname, else the hex."""
    for sep in ("~", "="):
        if sep in hop:
            return hop.split(sep, 1)[1]
    return hop.lstrip("$")


def _onion(query: str | None) -> str | None:
    return None if not query else query if query.endswith(".onion") else f"{query}.onion"


def _target(target: str) -> tuple[str, int | None]:
    host, _, port = target.rpartition(":")
    return (host, int(port)) if port.isdigit() else (target, None)


@dataclass
class Translator:
    _states: set[tuple[str, str]] = field(default_factory=set)  # (circuit id, HS_STATE) already reported
    _rendezvous: dict[str, str] = field(default_factory=dict)  # onion -> its latest rendezvous point
    _bootstrap: tuple = ()  # the last bootstrap state reported: tor repeats a stuck one on every retry

    def translate(self, event: TorEvent) -> list[Emitted]:
        handler = {"CIRC": self._circ, "CIRC_MINOR": self._circ, "STREAM": self._stream,
                   "HS_DESC": self._hs_desc, "STATUS_CLIENT": self._status,
                   "STATUS_SERVER": self._server}.get(event.name)
        if handler is None:
            return []
        return [(name, {**fields, "via": event.name}) for name, fields in handler(event)]

    # -- circuits ----------------------------------------------------------------------------------------

    def _circ(self, event: TorEvent) -> list[Emitted]:
        if len(event.positional) < 2:
            raise DecodeError(f"{event.name} without a circuit id and status")
        circuit, status = event.positional[:2]
        path = [hop_name(h) for h in event.positional[2].split(",")] if len(event.positional) > 2 else []
        kw = event.keywords
        purpose = kw.get("PURPOSE", "")
        out: list[Emitted] = []
        if event.name == "CIRC" and status == "BUILT":
            out.append(("circuit_built", {"circ_id": circuit, "path": path, "purpose": purpose}))
        elif event.name == "CIRC" and status == "FAILED":
            out.append(("circuit_build_failed", {"circ_id": circuit, "purpose": purpose,
                                                 "kind": kw.get("REASON", ""),
                                                 "error": kw.get("REMOTE_REASON", kw.get("REASON", ""))}))
        if status in ("CLOSED", "FAILED"):
            self._states = {s for s in self._states if s[0] != circuit}  # tor reuses circuit ids
            if purpose == "HS_SERVICE_INTRO" and kw.get("HS_STATE") == "HSSI_ESTABLISHED":
                out.append(("intro_lost", {"onion": _onion(kw.get("REND_QUERY")), "circuit": circuit,
                                           "intro": path[-1] if path else None,
                                           "error": kw.get("REASON", "")}))
            return out
        step = _HS_STATES.get((purpose, kw.get("HS_STATE", "")))
        if step is None or (circuit, step) in self._states:
            return out
        self._states.add((circuit, step))
        onion = _onion(kw.get("REND_QUERY"))
        last = path[-1] if path else None
        fields: dict[str, object] = {"onion": onion, "circuit": circuit, "path": path}
        if (hop := _LAST_HOP[step]) is not None:
            fields[hop] = last
        if step == "rendezvous_established" and onion and last:
            self._rendezvous[onion] = last
        if step == "introduce_sent":
            fields["rendezvous"] = self._rendezvous.get(onion or "")
        out.append((step, fields))
        return out

    # -- streams, descriptors, bootstrap -------------------------------------------------------------------

    def _stream(self, event: TorEvent) -> list[Emitted]:
        if len(event.positional) < 4:
            raise DecodeError("STREAM without id, status, circuit and target")
        stream, status, circuit, target = event.positional[:4]
        host, port = _target(target)
        kw = event.keywords
        if status == "NEW" and kw.get("CLIENT_PROTOCOL", "").startswith("SOCKS"):
            # whether the application gave SOCKS credentials (its isolation key), never what they are
            return [("socks_request", {"stream": stream, "host": host, "port": port,
                                       "isolated": "SOCKS_USERNAME" in kw})]
        if status == "SUCCEEDED" and host.endswith(".onion"):
            return [("stream_opened", {"onion": host, "port": port, "circuit": circuit, "stream": stream})]
        if status == "FAILED" and kw.get("CLIENT_PROTOCOL", "").startswith("SOCKS"):
            return [("stream_failed", {"stream": stream, "host": host, "port": port,
                                       "reason": kw.get("REMOTE_REASON", kw.get("REASON", ""))})]
        return []

    def _hs_desc(self, event: TorEvent) -> list[Emitted]:
        if len(event.positional) < 4:
            raise DecodeError("HS_DESC without action, address, auth type and HSDir")
        action, address, _, hsdir = event.positional[:4]
        fields: dict[str, object] = {"onion": _onion(address), "hsdir": hop_name(hsdir)}
        if len(event.positional) > 4:
            fields["blinded_key"] = event.positional[4]
        if action == "RECEIVED":
            return [("descriptor_fetched", fields)]
        if action == "FAILED":
            return [("descriptor_fetch_failed", {**fields, "error": event.keywords.get("REASON", "")})]
        if action == "REQUESTED":
            return [("descriptor_requested", fields)]
        if action == "UPLOADED":
            return [("descriptor_published", fields)]
        if action == "UPLOAD":
            return [("descriptor_upload_started", fields)]
        return []

    def _server(self, event: TorEvent) -> list[Emitted]:
        """A relay's descriptor at the authorities: ACCEPTED_SERVER_DESCRIPTOR DIRAUTH=ADDR:PORT (one
        authority took it), BAD_SERVER_DESCRIPTOR DIRAUTH= REASON= (one refused it)."""
        kind = event.positional[1] if len(event.positional) > 1 else ""
        authority = event.keywords.get("DIRAUTH", "")
        if kind == "ACCEPTED_SERVER_DESCRIPTOR":
            return [("descriptor_uploaded", {"authority": authority})]
        if kind == "BAD_SERVER_DESCRIPTOR":
            return [("descriptor_upload_failed", {"authority": authority,
                                                  "reason": event.keywords.get("REASON", "")})]
        if kind == "REACHABILITY_SUCCEEDED":
            return [("reachability_succeeded", {"address": event.keywords.get("ORADDRESS", "")})]
        return []

    def _status(self, event: TorEvent) -> list[Emitted]:
        kind = event.positional[1] if len(event.positional) > 1 else ""
        if kind == "BOOTSTRAP":
            b = bootstrap_of(event.positional, event.keywords)
            if (b.progress, b.tag, b.warning, b.reason) == self._bootstrap:
                return []
            self._bootstrap = (b.progress, b.tag, b.warning, b.reason)
            fields: dict[str, object] = {"progress": b.progress, "tag": b.tag, "summary": b.summary}
            if b.warning is not None:
                fields.update(warning=b.warning, reason=b.reason)
            return [("bootstrap", fields)]
        if kind == "CONSENSUS_ARRIVED":
            return [("consensus_received", {})]
        return []
