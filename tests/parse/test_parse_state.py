"""parse/ keeps no module-level mutable state: what a parser learns lives on its objects.

Parsing many kinds of lines (bodies that make the JSON reader skip typed decoding, new SD
shapes, new stamps) must leave every module-level dict, list and set of logpipe.parse as it
was, and two parsers must not share a cache object.
"""

from __future__ import annotations

import copy
import importlib
import pkgutil

import logpipe.parse
from logpipe.parse.syslog import SyslogParser
from tests.parse.test_parse_syslog import RECV

LINES = [
    b'<14>1 2026-11-21T10:00:00.123456Z h app 7 - [x@1 a="1"] {"msg":"x","o":{"nested":true}}',
    b'<14>1 2026-11-21T10:00:00Z h app 7 - [y@2 b="2" c="3"][keepalive] lvl=warn msg="m"',
    b"<13>Nov 20 07:00:33 h app[1]: plain",
    b"<13>NOV 20 07:00:33.1234567891 h app: upper",
    b'{"msg": "raw json", "level": "debug"}',
    b"not syslog",
]


def module_state() -> dict[str, object]:
    state = {}
    for info in pkgutil.iter_modules(logpipe.parse.__path__):
        module = importlib.import_module(f"logpipe.parse.{info.name}")
        for name, value in vars(module).items():
            if not name.startswith("__") and isinstance(value, (dict, list, set, bytearray)):
                state[f"{info.name}.{name}"] = copy.deepcopy(value)
    return state


def test_parsing_changes_no_module_level_container() -> None:
    before = module_state()
    parser = SyslogParser()
    for _ in range(20):
        parser.parse_lines(LINES, RECV, "10.0.0.1")
        for line in LINES:
            parser.parse(line, RECV, "10.0.0.1")
    assert module_state() == before


def test_two_parsers_share_no_cache() -> None:
    one, two = SyslogParser(), SyslogParser()
    one.parse_lines(LINES, RECV, None)
    assert one._body._shapes and not two._body._shapes
    assert one._readers._plain_shapes is not two._readers._plain_shapes
    assert one._readers._classic and not two._readers._classic
