"""LOG_FORMAT=json: one JSON object per log line, with the coordination and environment a
record is about; a bad LOG_FORMAT stops start-up naming it."""

import json
import logging
import sys
from datetime import UTC, datetime

import pytest
import requests

from deployments.models import Coordination, CoordinationStatus as C, TriggerSource
from deployments.services import coordination_start
from deployments.tasks import run_coordination
from powerautomation.structured_logging import JsonFormatter, LogContextFilter, log_context
from tests.support.passes import sqlite_pass_only
from tests.support.processes import QCluster, Web, process_environment, start_with, wait_until


def formatted(record: logging.LogRecord) -> dict:
    LogContextFilter().filter(record)
    return json.loads(JsonFormatter().format(record))


def record(message: str = "hello %s", args=("world",), **extra) -> logging.LogRecord:
    made = logging.LogRecord("deployments.test", logging.WARNING, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def test_a_record_is_one_json_object_with_time_level_logger_and_message():
    line = formatted(record())

    assert set(line) == {"time", "level", "logger", "message"}
    assert line["level"] == "WARNING"
    assert line["logger"] == "deployments.test"
    assert line["message"] == "hello world"
    assert line["time"].endswith("Z")
    assert abs((datetime.fromisoformat(line["time"]) - datetime.now(UTC)).total_seconds()) < 60


def test_a_record_with_a_coordination_id_gets_the_field():
    line = formatted(record(coordination_id="deploy_1", environment_id="mac_local_001"))

    assert line["coordination_id"] == "deploy_1"
    assert line["environment_id"] == "mac_local_001"


def test_the_log_context_tags_records_and_the_records_own_ids_win():
    with log_context(coordination_id="deploy_1"):
        with log_context(environment_id="mac_local_001"):
            inner = formatted(record())
            own = formatted(record(environment_id="linux_local_002"))
        outer = formatted(record())
    after = formatted(record())

    assert (inner["coordination_id"], inner["environment_id"]) == ("deploy_1", "mac_local_001")
    assert own["environment_id"] == "linux_local_002"
    assert outer["coordination_id"] == "deploy_1" and "environment_id" not in outer
    assert "coordination_id" not in after


def test_a_multi_line_message_and_its_exception_stay_on_one_line():
    try:
        raise ValueError("broken\nin two")
    except ValueError:
        made = logging.LogRecord("x", logging.ERROR, __file__, 1, "first\nsecond", None, sys.exc_info())

    text = JsonFormatter().format(made)

    assert "\n" not in text
    line = json.loads(text)
    assert line["message"] == "first\nsecond"
    assert "ValueError: broken" in line["exception"]


def test_a_bad_log_format_stops_start_up_naming_it():
    result = start_with(LOG_FORMAT="yaml")

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "LOG_FORMAT must be text or json, not 'yaml'" in result.stderr


@pytest.mark.django_db(transaction=True)
def test_a_coordinations_delivery_threads_log_with_both_ids(refusing_agent):
    """urllib3 logs its connections at DEBUG from inside the delivery thread."""
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND, coordination_id="deploy_logged")
    lines: list[dict] = []
    handler = logging.Handler(level=logging.DEBUG)
    handler.addFilter(LogContextFilter())
    handler.emit = lambda rec: lines.append(json.loads(JsonFormatter().format(rec)))  # type: ignore[method-assign]
    root, urllib3 = logging.getLogger(), logging.getLogger("urllib3")
    root.addHandler(handler)
    level = urllib3.level
    urllib3.setLevel(logging.DEBUG)
    try:
        run_coordination(coordination_pk=coordination.pk)
    finally:
        root.removeHandler(handler)
        urllib3.setLevel(level)

    assert any(line["logger"] == "deployments.runner.sequence" for line in lines), lines
    assert all(line.get("coordination_id") == "deploy_logged" for line in lines if line["logger"].startswith("deploy"))
    in_thread = [line for line in lines if line["logger"].startswith("urllib3")]
    assert in_thread, lines
    assert all(line.get("environment_id") == refusing_agent.environment_id for line in in_thread)
    assert all(line.get("coordination_id") == "deploy_logged" for line in in_thread)


def json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}\n---\n{text}")
    return [json.loads(line) for line in lines]


@sqlite_pass_only
@pytest.mark.django_db(transaction=True)
def test_a_worker_logs_json_lines_with_the_coordination_id(refusing_agent, tmp_path):
    cluster = QCluster(process_environment(LOG_FORMAT="json", LOG_LEVEL="DEBUG"), tmp_path / "qcluster.log")
    try:
        coordination = coordination_start(triggered_by=TriggerSource.COMMAND, coordination_id="deploy_json")
        wait_until(
            lambda: Coordination.objects.get(pk=coordination.pk).status == C.FAILED, 60, "the coordination to fail"
        )
    finally:
        cluster.stop()

    lines = json_lines(cluster.output())
    assert any(line["logger"] == "django-q" for line in lines), lines  # django-q2's own logger
    ours = [line for line in lines if line["logger"] == "deployments.runner.sequence"]
    assert ours and all(line["coordination_id"] == "deploy_json" for line in ours), lines
    assert any(line.get("environment_id") == "docker_agent" for line in lines), lines


@sqlite_pass_only
@pytest.mark.django_db(transaction=True)
def test_the_web_process_logs_json_lines_access_log_included(tmp_path):
    log = tmp_path / "gunicorn.log"
    web = Web(process_environment(LOG_FORMAT="json"), log, workers=1, threads=2)
    try:
        assert requests.get(f"{web.url}/metrics", timeout=10).status_code == 200
        assert requests.get(f"{web.url}/no-such-page", timeout=10).status_code == 404
    finally:
        web.stop()

    lines = json_lines(log.read_text())
    loggers = {line["logger"] for line in lines}
    assert {"gunicorn.error", "gunicorn.access", "django.request"} <= loggers, lines
    assert any("GET /metrics" in line["message"] for line in lines if line["logger"] == "gunicorn.access")
