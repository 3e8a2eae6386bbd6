"""Keep-alive durations and the names a request may use (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoo.serve import ModelManager, parse_duration
from zoo.serve.errors import ApiError, ErrorCode


@pytest.mark.parametrize("text, seconds", [("5m", 300.0), ("30s", 30.0), ("1h30m", 5400.0), ("250ms", 0.25),
                                           ("0", 0.0), (0, 0.0), (90, 90.0), ("2.5", 2.5), ("-1", None),
                                           ("-1m", None), (-1, None)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "", "5 minutes", "m5", None, True, "1d"])
def test_bad_durations_are_400(text):
    with pytest.raises(ApiError) as err:
        parse_duration(text)
    assert err.value.code is ErrorCode.BAD_REQUEST


def test_request_names():
    m = ModelManager()
    assert m.canonical("tiny") == m.canonical("tiny:latest") == "tiny:latest"
    assert m.canonical("org/model:v2") == "org/model:v2"
    assert m.add_path(Path("/some/dir/local-model")) == "local-model:latest"
    assert m.canonical("local-model") == "local-model:latest" and m.paths["local-model:latest"] == Path("/some/dir/local-model")
    for bad in ("/etc/passwd", "./model", "~/model", "s3://bucket/x/model", "hf://org/repo", "http://host/x/model"):
        with pytest.raises(ApiError) as err:
            m.canonical(bad)
        assert err.value.code is ErrorCode.NOT_FOUND and err.value.code.status == 404
    with pytest.raises(ApiError) as err:
        m.canonical("")
    assert err.value.code.status == 400
