"""The agent's bounded JSON reader (`loads`), in process: the agent is one file, loaded by path."""

import importlib.util
import json
import time

import pytest

from tests.support.agent import AGENT


@pytest.fixture(scope="module")
def agent_module():
    spec = importlib.util.spec_from_file_location("powerautomation_agent_under_test", AGENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nesting_up_to_the_limit_is_read_and_one_more_level_is_refused(agent_module):
    limit = agent_module.MAX_JSON_DEPTH

    assert agent_module.loads("[" * limit + "]" * limit) is not None
    with pytest.raises(agent_module.JSONRefused, match="nested too deep"):
        agent_module.loads("[" * (limit + 1) + "]" * (limit + 1))


def test_brackets_and_escaped_quotes_inside_strings_do_not_count_as_nesting(agent_module):
    text = '{"a": "' + "[{" * 5000 + '\\"' + "[" * 5000 + '\\\\", "b": ["\\"]"]}'

    assert agent_module.loads(text)["b"] == ['"]']


def test_a_megabyte_of_brackets_inside_a_string_is_no_nesting(agent_module):
    """Brackets in a string do not count (and, scanned once, a megabyte ends at once;
    speed targets live in the benchmark, pytest-timeout guards a hang)."""
    text = '"' + "[" * 1_000_000 + '"'

    assert agent_module.loads(text) == "[" * 1_000_000


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"k": 1, "k": 2}', "duplicate key 'k'"),
        ('{"a": {"k": 1, "k": 2}}', "duplicate key 'k'"),
        ("[NaN]", "NaN is not allowed"),
        ("[Infinity]", "Infinity is not allowed"),
        ("[-Infinity]", "-Infinity is not allowed"),
        ("[1e400]", "number 1e400 is out of range"),
    ],
)
def test_duplicate_keys_and_non_finite_numbers_are_refused(agent_module, text, reason):
    with pytest.raises(agent_module.JSONRefused) as refused:
        agent_module.loads(text)

    assert str(refused.value) == reason


def test_bytes_are_read_as_utf_8(agent_module):
    assert agent_module.loads('{"é": 1.5}'.encode()) == {"é": 1.5}
    with pytest.raises(UnicodeDecodeError):
        agent_module.loads(b'"\xff"')


def test_a_remembered_id_whose_time_overflows_a_float_is_dropped(agent_module, tmp_path):
    """10**400 is valid JSON and never older than the cutoff: the id would be refused for ever."""
    path = tmp_path / "ids.json"
    path.write_text(json.dumps({"msg_ok": time.time(), "msg_bad": 10**400}))

    ids = agent_module.WebhookIds(str(path))

    assert "msg_ok" in ids
    assert "msg_bad" not in ids
