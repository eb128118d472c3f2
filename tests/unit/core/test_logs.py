"""Log formats: control characters in any value cannot start a new line."""

import json
import logging

import pytest

from core.logs import JsonFormatter, TextFormatter

FORGED = "hi\n2026-01-01 INFO aicore.access: forged\r\x1b[2Kmore\u2028end"


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_values_cannot_forge_lines(formatter):
    record = logging.LogRecord("aicore.access", logging.INFO, __file__, 1, "request " + FORGED, None, None)
    record.log_prompt = FORGED
    record.route = "/v1/x\nfake"
    line = formatter.format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    if isinstance(formatter, JsonFormatter):
        assert json.loads(line)["log_prompt"] == FORGED
