"""Log lines: JSON objects carrying the id of the request that logged them, selected in
production, and what ``parkspot serve`` writes with them (uvicorn's lines included)."""

import asyncio
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST

from parkspot.config import Environment, Settings
from parkspot.logs import REQUEST_ID, JsonFormatter, log_config
from parkspot.middleware import RequestIdMiddleware
from tests.live_server import single_server

SECRET = "a-production-secret-key-of-enough-length-0123456789"


class Captured(logging.Handler):
    """Keeps each record as the JSON formatter writes it."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def parsed(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def captured() -> Iterator[Captured]:
    handler = Captured()
    loggers = [logging.getLogger(name) for name in ("parkspot", "tests.handler")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def record(name: str = "parkspot.test", **kwargs: Any) -> logging.LogRecord:
    options: dict[str, Any] = {
        "level": logging.INFO,
        "msg": "hello %s",
        "args": ("world",),
        "exc_info": None,
    }
    options |= kwargs
    return logging.LogRecord(name, pathname=__file__, lineno=1, **options)


def test_a_json_line_outside_requests_has_time_level_logger_and_message() -> None:
    line = json.loads(JsonFormatter().format(record()))

    assert line.keys() == {"time", "level", "logger", "message"}
    assert line["level"] == "INFO"
    assert line["logger"] == "parkspot.test"
    assert line["message"] == "hello world"
    assert line["time"].endswith("+00:00")


def test_a_json_line_carries_the_exception_as_a_field() -> None:
    try:
        raise ValueError("bad value")
    except ValueError:
        failing = record(level=logging.ERROR, exc_info=sys.exc_info())

    line = json.loads(JsonFormatter().format(failing))

    assert line["message"] == "hello world"
    assert line["exception"].startswith("Traceback")
    assert "ValueError: bad value" in line["exception"]


def test_a_json_line_takes_the_request_id_from_the_context() -> None:
    token = REQUEST_ID.set("req-42")
    try:
        line = json.loads(JsonFormatter().format(record()))
    finally:
        REQUEST_ID.reset(token)

    assert line["request_id"] == "req-42"


def test_uvicorn_access_lines_get_their_fields() -> None:
    access = record(
        "uvicorn.access",
        msg='%s - "%s %s HTTP/%s" %d',
        args=("127.0.0.1:5000", "GET", "/healthz", "1.1", 200),
    )

    line = json.loads(JsonFormatter().format(access))

    assert line["message"] == '127.0.0.1:5000 - "GET /healthz HTTP/1.1" 200'
    assert (line["method"], line["path"], line["status"]) == ("GET", "/healthz", 200)
    assert line["client"] == "127.0.0.1:5000"


async def test_records_logged_inside_a_request_carry_that_requests_id(
    captured: Captured,
) -> None:
    """Two requests in flight at once, each logging after the other started."""
    app = FastAPI()
    both_in = asyncio.Barrier(2)
    logger = logging.getLogger("tests.handler")

    @app.get("/work/{name}")
    async def work(name: str) -> dict[str, str]:
        logger.info("started %s", name)
        await both_in.wait()
        logger.info("finished %s", name)
        return {}

    app.add_middleware(RequestIdMiddleware)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        responses = await asyncio.gather(
            http.get("/work/a", headers={"X-Request-ID": "id-a"}),
            http.get("/work/b", headers={"X-Request-ID": "id-b"}),
        )

    assert [r.status_code for r in responses] == [200, 200]
    lines = captured.parsed()
    by_message = {line["message"]: line.get("request_id") for line in lines}
    assert by_message["started a"] == by_message["finished a"] == "id-a"
    assert by_message["started b"] == by_message["finished b"] == "id-b"
    # The middleware's own line per request, and nothing left set afterwards.
    access = [line for line in lines if line["logger"] == "parkspot.request"]
    assert sorted(line["request_id"] for line in access) == ["id-a", "id-b"]
    assert REQUEST_ID.get() is None


def test_production_selects_json_lines_and_development_text() -> None:
    production = Settings(env=Environment.production, secret_key=SECRET)
    development = Settings(env=Environment.development, log_format=None)

    assert production.effective_log_format == "json"
    assert development.effective_log_format == "text"
    assert Settings(log_format="json").effective_log_format == "json"
    assert (
        Settings(
            env=Environment.production, secret_key=SECRET, log_format="text"
        ).effective_log_format
        == "text"
    )
    json_config, text_config = log_config(production), log_config(development)
    for name in ("default", "access"):
        assert json_config["formatters"][name] == {"()": "parkspot.logs.JsonFormatter"}
        assert text_config["formatters"][name]["()"].startswith("uvicorn.logging.")
    # Every logger, uvicorn's and the root (parkspot's and any library's), writes JSON.
    handlers = json_config["handlers"]
    for logger in (json_config["root"], *json_config["loggers"].values()):
        for handler in logger.get("handlers", []):
            assert json_config["formatters"][handlers[handler]["formatter"]] == {
                "()": "parkspot.logs.JsonFormatter"
            }


# --- parkspot serve --------------------------------------------------------------------


async def test_parkspot_serve_in_production_writes_json_lines_with_request_ids(
    template: str, tmp_path: Path
) -> None:
    settings = {"ENV": "production", "LOG_LEVEL": "info"}
    async with single_server(template, tmp_path, settings) as stack:
        response = await stack.http.get("/api/v1/lots/424242", headers={"X-Request-ID": "live-1"})
        assert response.status_code == 404
        metrics = await stack.http.get("/metrics")
        log = stack.server.log()

    assert metrics.status_code == 200
    assert metrics.headers["content-type"] == CONTENT_TYPE_LATEST
    assert (
        'parkspot_http_requests_total{method="GET",route="/api/v1/lots/{lot_id}",status="404"} 1.0'
        in metrics.text
    )
    lines = [line for line in log.splitlines() if not line.startswith("parkspot: serving on")]
    parsed = [json.loads(line) for line in lines]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in parsed)
    mine = [line for line in parsed if line.get("request_id") == "live-1"]
    assert {line["logger"] for line in mine} == {"uvicorn.access", "parkspot.request"}
    access = next(line for line in mine if line["logger"] == "uvicorn.access")
    assert (access["path"], access["status"]) == ("/api/v1/lots/424242", 404)
    assert any(line["logger"] == "uvicorn.error" for line in parsed)
