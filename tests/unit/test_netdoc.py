"""nodes.core.netdoc: the dir-spec item/object meta-format."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodes.core import netdoc
from nodes.core.errors import DecodeError


def test_items_objects_offsets_and_opt():
    doc = b"a 1 2\nb\n-----BEGIN X Y-----\nAAEC\n-----END X Y-----\nopt c  d\n"
    items = netdoc.parse_items(doc, "doc")
    assert [(i.keyword, i.args) for i in items] == [("a", ("1", "2")), ("b", ()), ("c", ("d",))]
    assert items[1].object("X Y", "doc") == b"\x00\x01\x02"
    assert doc[items[1].start:items[1].end].endswith(b"-----END X Y-----\n")
    assert items[2].end == len(doc)
    with pytest.raises(DecodeError):
        items[0].object("X Y", "doc")


@pytest.mark.parametrize("doc", [
    b"a\r\n", b"a", b"\xffa\n", b" a\n",
    b"b\n-----BEGIN X-----\nAA==\n", b"b\n-----BEGIN X-----\n!!\n-----END X-----\n",
    b"b\n-----BEGIN X-----\nAA==\n-----END Y-----\n",
])
def test_malformed_documents_are_decode_errors(doc):
    with pytest.raises(DecodeError):
        netdoc.parse_items(doc, "doc")


def test_once_rules():
    items = netdoc.Items(netdoc.parse_items(b"a\na\nb\n", "doc"), "doc")
    assert items.one("b").keyword == "b"
    assert items.optional("c") is None
    with pytest.raises(DecodeError):
        items.one("a")
    with pytest.raises(DecodeError):
        items.optional("a")


def test_time_round_trip():
    assert netdoc.format_time(1700000000) == "2023-11-14 22:13:20"
    assert netdoc.parse_time("2023-11-14", "22:13:20", "t") == 1700000000
    with pytest.raises(DecodeError):
        netdoc.parse_time("2023-13-14", "22:13:20", "t")


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_decode_error(data):
    try:
        netdoc.parse_items(data, "fuzz")
    except DecodeError:
        pass


def test_huge_integers_are_decode_errors():
    # int() refuses strings of more than 4300 digits with a ValueError: that must never escape a parser
    with pytest.raises(DecodeError):
        netdoc.parse_int("9" * 5000, "n")
    assert netdoc.parse_int("0" * 5000 + "7", "n") == 7


def test_rest_of_the_line_is_kept_verbatim():
    items = netdoc.parse_items(b"platform Tor 0.4.9  on Linux\nopt contact a  b \nbare\n", "doc")
    assert [i.rest for i in items] == ["Tor 0.4.9  on Linux", "a  b ", ""]
    assert items[0].args == ("Tor", "0.4.9", "on", "Linux")


RULES = (
    netdoc.Rule("a", 1, 1, 1, 2),
    netdoc.Rule("b", 0, netdoc.ANY_NUMBER, obj=netdoc.Obj.NEEDED, object_type="X"),
    netdoc.Rule("c", 0, 1, 0, 0, netdoc.Obj.OPTIONAL),
)


def test_rules_accept_and_ignore_unknown_keywords():
    doc = b"a 1\nb\n-----BEGIN X-----\nAA==\n-----END X-----\nb\n-----BEGIN X-----\nAA==\n-----END X-----\n" \
          b"c\nunknown 1 2 3\n-----BEGIN Y-----\nAA==\n-----END Y-----\n"
    items = netdoc.check_rules(netdoc.parse_items(doc, "doc"), RULES, "doc")
    assert len(items.all("b")) == 2 and items.one("a").args == ("1",)


@pytest.mark.parametrize("doc", [
    b"b\n-----BEGIN X-----\nAA==\n-----END X-----\n",  # a missing
    b"a 1\na 2\n",  # a twice
    b"a\n", b"a 1 2 3\n",  # a's argument count
    b"a 1\nb\n",  # b without its object
    b"a 1\nb\n-----BEGIN Y-----\nAA==\n-----END Y-----\n",  # b with another object type
    b"a 1\n-----BEGIN X-----\nAA==\n-----END X-----\n",  # a with an object
    b"a 1\nc 1\n",  # c takes no arguments
])
def test_rules_refuse(doc):
    with pytest.raises(DecodeError):
        netdoc.check_rules(netdoc.parse_items(doc, "doc"), RULES, "doc")


def test_trim_trailing_newlines():
    assert netdoc.trim_trailing_newlines(b"a\n\n\n") == b"a\n"
    assert netdoc.trim_trailing_newlines(b"a\n") == b"a\n"
    assert netdoc.trim_trailing_newlines(b"\n\n") == b"\n"
    assert netdoc.trim_trailing_newlines(b"") == b""
