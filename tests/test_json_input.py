"""powerautomation/json_input: the one strict JSON reader for outside input."""

import json
import subprocess
import sys

import pytest

from powerautomation import json_input
from powerautomation.json_input import MAX_DEPTH, JSONInputError
from tests.support.processes import ROOT

TWO_MIB = 2 * 1024 * 1024

# Inputs on which a string-stripping regular expression backtracks from every quote to
# the end of the text: an unterminated string made of escaped quotes. The second puts the
# brackets last, so the scan has to read all of it.
PATHOLOGICAL = {
    "brackets first": "'[' * 70 + '\"' + '\\\\\"' * (TWO_MIB // 2)",
    "brackets last": "'\"' + '\\\\\"' * (TWO_MIB // 2) + '[' * 70",
}


@pytest.mark.parametrize("expression", PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys())
def test_the_depth_scan_of_2_mib_of_escaped_quotes_is_linear(expression):
    """A quadratic scan of 2 MiB runs for hours; a linear one for well under a second. The
    subprocess's timeout (not a timing assertion) is what tells them apart."""
    program = (
        "from powerautomation import json_input\n"
        f"TWO_MIB = {TWO_MIB}\n"
        f"text = {expression}\n"
        "assert len(text) >= TWO_MIB\n"
        "try:\n"
        "    json_input.loads(text)\n"
        "except json_input.JSONInputError as exc:\n"
        "    print(exc)\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=20, check=True
    )

    assert done.stdout.strip()  # refused (too deep, or an unterminated string), not accepted


def test_brackets_escaped_quotes_and_backslashes_inside_strings_do_not_count_as_nesting():
    text = "[[[[ {{{{ " * 20 + '\\" ]]]] \\\\ "'
    document = "[" * (MAX_DEPTH - 2) + json.dumps([text, {"key [[[[": text}]) + "]" * (MAX_DEPTH - 2)

    data = json_input.loads(document)

    for _ in range(MAX_DEPTH - 2):
        data = data[0]
    assert data == [text, {"key [[[[": text}]


def test_a_string_ending_in_an_escaped_backslash_is_closed_so_the_brackets_after_it_count():
    # "\\" is a whole string (one backslash); what follows it is outside any string.
    document = '["\\\\", ' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "]"

    with pytest.raises(JSONInputError, match=f"nested deeper than {MAX_DEPTH} levels"):
        json_input.loads(document)


def test_nesting_up_to_the_limit_is_read_and_beyond_it_refused():
    assert json_input.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    assert json_input.loads("{" + '"a": {' * (MAX_DEPTH - 1) + "}" * MAX_DEPTH) is not None

    for deep in ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), '{"a": ' * 100000 + "1" + "}" * 100000):
        with pytest.raises(JSONInputError, match=f"nested deeper than {MAX_DEPTH} levels"):
            json_input.loads(deep)


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1.5E999"])
def test_a_number_too_large_for_a_float_is_refused_like_infinity(number):
    with pytest.raises(JSONInputError) as raised:
        json_input.loads(f'{{"timeout": {number}}}')

    assert number in str(raised.value)
    assert "infinite" in str(raised.value)


def test_finite_numbers_nan_and_duplicate_keys_as_before():
    assert json_input.loads('{"a": 1.5e3, "b": -2, "c": 1e-400}') == {"a": 1500.0, "b": -2, "c": 0.0}
    with pytest.raises(JSONInputError, match="NaN is not a JSON number"):
        json_input.loads('{"a": NaN}')
    with pytest.raises(JSONInputError, match="Infinity is not a JSON number"):
        json_input.loads('{"a": -Infinity}')
    with pytest.raises(JSONInputError, match="duplicate key 'duplicate'"):
        json_input.loads('{"duplicate": false, "duplicate": true}')
