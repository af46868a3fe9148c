"""nodes.core.torcontrol: tor's control-protocol replies and events, sans-I/O.

The byte strings marked "tor 0.4.9.11" are what Debian's tor sent to a controller on this project's host
(a TestingTorNetwork client whose only authority did not answer)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodes.core.errors import DecodeError, LocalProtocolError
from nodes.core.torcontrol import (
    Bootstrap,
    ControlParser,
    authenticate_command,
    encode_command,
    getinfo_values,
    parse_bootstrap,
    parse_control_port_file,
    parse_event,
    quoted_list,
    split_arguments,
)

# tor 0.4.9.11: GETINFO status/bootstrap-phase net/listeners/socks version
GETINFO = (b'250-status/bootstrap-phase=WARN BOOTSTRAP PROGRESS=5 TAG=conn SUMMARY="Connecting to a relay" '
           b'WARNING="Connection refused" REASON=CONNECTREFUSED COUNT=3 RECOMMENDATION=ignore '
           b'HOSTID="BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB" HOSTADDR="127.0.5.2:9001"\r\n'
           b'250-net/listeners/socks="127.0.5.9:19050"\r\n250-version=0.4.9.11\r\n250 OK\r\n')
# tor 0.4.9.11: GETINFO config-text (a data block), then two refusals
CONFIG_TEXT = (b"250+config-text=\r\nClientUseIPv6 0\r\nControlPort 127.0.0.1:auto\r\n..leading dot\r\n.\r\n"
               b"250 OK\r\n")
# tor 0.4.9.11: events after SETEVENTS CIRC STREAM STATUS_CLIENT
EXIT = "127.0.5.2.$BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB.exit:9001"
EVENTS = (b"650 STREAM 18 NEW 0 " + EXIT.encode() + b" PURPOSE=DIR_FETCH "
          b"CLIENT_PROTOCOL=UNKNOWN NYM_EPOCH=0 SESSION_GROUP=-2 ISO_FIELDS=SESSION_GROUP\r\n"
          b"650 CIRC 5 LAUNCHED BUILD_FLAGS=ONEHOP_TUNNEL,IS_INTERNAL,NEED_CAPACITY PURPOSE=GENERAL "
          b"TIME_CREATED=2026-12-07T07:35:48.770670\r\n")


def replies(*chunks: bytes):
    parser = ControlParser()
    out = []
    for chunk in chunks:
        parser.receive_data(chunk)
        while (reply := parser.next_reply()) is not None:
            out.append(reply)
    return out


def test_getinfo_reply_and_its_values():
    (reply,) = replies(GETINFO)
    assert reply.ok and not reply.is_event and reply.status == 250 and reply.text == "OK"
    values = getinfo_values(reply)
    assert set(values) == {"status/bootstrap-phase", "net/listeners/socks", "version"}
    assert values["version"] == "0.4.9.11"
    assert quoted_list(values["net/listeners/socks"]) == ["127.0.5.9:19050"]
    bootstrap = parse_bootstrap(values["status/bootstrap-phase"])
    assert bootstrap == Bootstrap(5, "conn", "Connecting to a relay", "WARN", "Connection refused",
                                  "CONNECTREFUSED")
    assert not bootstrap.done


def test_data_blocks_are_unstuffed_and_replies_split_anywhere():
    data = CONFIG_TEXT + b'552 Unrecognized key "nonsense"\r\n' + EVENTS
    whole = replies(data)
    assert replies(*(data[i:i + 1] for i in range(len(data)))) == whole  # byte by byte: the same
    config, refused, stream, circ = whole
    text = getinfo_values(config)["config-text"]
    assert text == "ClientUseIPv6 0\nControlPort 127.0.0.1:auto\n.leading dot"
    assert (refused.status, refused.ok, refused.text) == (552, False, 'Unrecognized key "nonsense"')
    assert stream.is_event and circ.is_event


def test_events_split_into_positional_words_and_keywords():
    stream, circ = (parse_event(r) for r in replies(EVENTS))
    assert stream.name == "STREAM"
    assert stream.positional == ("18", "NEW", "0", EXIT)
    assert stream.keywords["PURPOSE"] == "DIR_FETCH" and stream.keywords["SESSION_GROUP"] == "-2"
    assert circ.positional == ("5", "LAUNCHED") and circ.keywords["PURPOSE"] == "GENERAL"


def test_quoted_strings_keep_spaces_and_escapes():
    positional, keywords = split_arguments(r'WARN "a b" K=v Q="say \"hi\"\n" P=$AB~x,$CD=y E=""')
    assert positional == ["WARN", "a b"]
    assert keywords == {"K": "v", "Q": 'say "hi"\n', "P": "$AB~x,$CD=y", "E": ""}
    assert split_arguments("") == ([], {})


@pytest.mark.parametrize("data", [
    b"25 OK\r\n",  # a status is three digits
    b"250xOK\r\n",  # then one of ' ', '-', '+'
    b"250-a=1\r\n251 OK\r\n",  # one reply, one status
    b"\xff\xfe\r\n",  # not UTF-8
])
def test_garbage_is_a_decode_error(data):
    with pytest.raises(DecodeError):
        replies(data)


def test_an_endless_line_is_a_decode_error():
    parser = ControlParser()
    parser.receive_data(b"250-" + b"x" * 70_000)
    with pytest.raises(DecodeError, match="longer than"):
        parser.next_reply()


@pytest.mark.parametrize("text", ['A="open', 'NOTICE BOOTSTRAP TAG=x', 'NOTICE BOOTSTRAP PROGRESS=x',
                                  'NOTICE BOOTSTRAP PROGRESS=101', 'NOTICE CIRCUIT_ESTABLISHED'])
def test_bad_bootstrap_statuses_are_decode_errors(text):
    with pytest.raises(DecodeError):
        parse_bootstrap(text)


def test_done_bootstrap():
    assert parse_bootstrap('NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"').done


def test_commands():
    assert encode_command("GETINFO", "status/bootstrap-phase", "version") == (
        b"GETINFO status/bootstrap-phase version\r\n")
    cookie = bytes(range(32))
    assert authenticate_command(cookie) == b"AUTHENTICATE " + cookie.hex().encode() + b"\r\n"
    with pytest.raises(LocalProtocolError):
        encode_command("SETEVENTS", "CIRC\r\nSIGNAL HALT")
    with pytest.raises(LocalProtocolError):
        encode_command("GETINFO", "")
    with pytest.raises(DecodeError, match="32 bytes"):
        authenticate_command(b"short")


def test_control_port_file():
    # tor 0.4.9.11 writes this for `ControlPort 127.0.0.1:auto` with ControlPortWriteToFile
    assert parse_control_port_file("PORT=127.0.0.1:39927\n") == ("127.0.0.1", 39927)
    assert parse_control_port_file("UNIX_PORT=/x\nPORT=[::1]:9051\n") == ("::1", 9051)
    for text in ("", "PORT=127.0.0.1\n", "PORT=127.0.0.1:0\n"):
        with pytest.raises(DecodeError):
            parse_control_port_file(text)


@given(st.binary(max_size=300))
def test_any_bytes_give_replies_or_a_decode_error(data):
    try:
        for reply in replies(data):
            if reply.is_event:
                parse_event(reply)
    except DecodeError:
        pass
