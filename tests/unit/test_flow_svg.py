"""orchestrator.flow_svg: what each of the six panels shows, from a flow result only, and the SVG it makes
(well-formed XML, no script, no external reference). tests/net/test_pictures.py renders real ones."""

from xml.etree import ElementTree

from orchestrator.flow import FlowResult, StepRecord
from orchestrator.flow_svg import panels, render_html, render_svg

SVG = "{http://www.w3.org/2000/svg}"


def rec(step: int, event: str, node: str, role: str, ms: float, peer: str | None = None,
        path: tuple[str, ...] = (), cached: bool = False) -> StepRecord:
    return StepRecord(step, event, event, node, role, None, ms, cached, peer, list(path))


def result(*, nack: bool = True, cached: bool = False, failed_step: int | None = None) -> FlowResult:
    steps = [
        rec(1, "intro_established", "hs", "onion_service", 100, "relay3", ("relay1", "relay5", "relay3")),
        rec(1, "intro_established", "hs", "onion_service", 110, "relay4", ("relay1", "relay2", "relay4")),
        rec(1, "intro_point_registered", "relay3", "relay", 99, "relay3"),
        rec(2, "descriptor_published", "hs", "onion_service", 200, "relay2", ("relay1", "relay6", "relay2")),
        rec(2, "descriptor_published", "hs", "onion_service", 210, "relay6", ("relay6",)),  # one hop: direct
        rec(2, "descriptor_stored", "relay2", "relay", 201, "relay2"),
        rec(3, "descriptor_fetched", "client", "client", 50 if cached else 5000, "relay5",
            ("relay2", "relay4", "relay5"), cached=cached),
        rec(3, "rendezvous_established", "client", "client", 5010, "relay6", ("relay2", "relay3", "relay6")),
        rec(4, "introduce_sent", "client", "client", 5030, "relay4", ("relay2", "relay1", "relay4")),
        rec(4, "introduce_forwarded", "relay4", "relay", 5031, "relay4"),
        rec(5, "rendezvous_sent", "hs", "onion_service", 5040, "relay6", ("relay1", "relay4", "relay6")),
        rec(6, "rendezvous_completed", "client", "client", 5042, "relay6", ("relay2", "relay3", "relay6")),
    ]
    if nack:
        tried = ("relay2", "relay5", "relay3")
        steps += [rec(4, "introduce_sent", "client", "client", 5020, "relay3", tried),
                  rec(4, "introduce_nack", "client", "client", 5025, "relay3", tried)]
    if failed_step:
        steps = [r for r in steps if r.step < failed_step]
    return FlowResult(failed_step is None, "x.onion", "client", "127.0.0.1:9050", 1000,
                      1000 if failed_step is None else 0, failed_step, "boom" if failed_step else None, 4990,
                      70.0, sorted(steps, key=lambda r: (r.step, r.ms)))


def test_each_panel_draws_the_circuits_of_its_events():
    one, two, three, four, five, six = panels(result())
    assert [(line.kind, line.nodes) for line in one.lines] == [
        ("circuit", ["hs", "relay1", "relay5", "relay3"]), ("circuit", ["hs", "relay1", "relay2", "relay4"])]
    assert one.parts == {"relay3": "intro point", "relay4": "intro point"}
    assert [(line.kind, line.nodes) for line in two.lines] == [
        ("circuit", ["hs", "relay1", "relay6", "relay2"]), ("direct", ["hs", "relay6"])]
    assert three.parts == {"relay5": "HSDir", "relay6": "rendezvous point"}
    # the NACKed try first (red), then the intro point that took it, then INTRODUCE2 down the intro circuit
    assert [(line.kind, line.nodes) for line in four.lines] == [
        ("failed", ["client", "relay2", "relay5", "relay3"]),
        ("circuit", ["client", "relay2", "relay1", "relay4"]),
        ("message", ["relay4", "relay2", "relay1", "hs"])]
    assert four.caption[0].startswith("try 1: INTRODUCE1 to relay3 +30.0 ms via relay2 > relay5; "
                                      "NACK +35.0 ms")
    assert [line.nodes for line in five.lines] == [["hs", "relay1", "relay4", "relay6"]]
    assert [(line.kind, line.nodes) for line in six.lines] == [
        ("circuit", ["client", "relay2", "relay3", "relay6"]),
        ("circuit", ["hs", "relay1", "relay4", "relay6"]),
        ("message", ["client", "relay2", "relay3", "relay6", "relay4", "relay1", "hs"])]


def test_a_cached_descriptor_is_said_not_drawn():
    three = panels(result(cached=True))[2]
    assert all(line.nodes[-1] != "relay5" for line in three.lines)
    assert three.caption[0] == "descriptor from client's cache (fetched from relay5 at 50 ms)"
    assert 50 not in three.ms  # the step's span is this flow's


def test_the_svg_is_self_contained_and_names_the_nodes():
    text = render_svg(result())
    root = ElementTree.fromstring(text)
    assert "<script" not in text and "href" not in text.replace('url(#', '')
    groups = [g for g in root.iter(f"{SVG}g") if g.get("class") == "panel"]
    assert [g.get("data-step") for g in groups] == [str(n) for n in range(1, 7)]
    names = {g.get("data-node") for g in groups[0].iter(f"{SVG}g") if g.get("data-node")}
    assert names == {"client", "hs", *(f"relay{i}" for i in range(1, 7))}
    classes = [p.get("class") for p in root.iter(f"{SVG}polyline")]
    assert classes.count("failed") == 1 and classes.count("direct") == 1 and classes.count("message") == 2


def test_a_failed_flow_marks_its_step():
    text = render_svg(result(failed_step=4, nack=False))
    root = ElementTree.fromstring(text)
    four = next(g for g in root.iter(f"{SVG}g") if g.get("data-step") == "4")
    assert "no event for this step: the flow failed here" in "".join(four.itertext())
    assert "flow FAILED at step 4: boom" in text


def test_the_html_page_holds_the_picture_and_the_timeline():
    page = render_html(result())
    assert page.startswith("<!doctype html>") and "<script" not in page
    assert page.count('class="panel"') == 6 and "<pre>STEP  WHAT" in page and "flow OK" in page
