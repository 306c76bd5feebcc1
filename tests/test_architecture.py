"""The house plan, kept: short classes and functions (make lint keeps the layers and the
absence of import circles with import-linter)."""

import ast

import pytest

from tests.support.processes import ROOT

MAX_CLASS_LINES = 250
MAX_FUNCTION_LINES = 80
CHECKED = ("accounts", "environments", "deployments", "console", "powerautomation", "agent", "bench", "client", "tests")


def sources():
    for folder in CHECKED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def too_long(path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            lines = node.end_lineno - node.lineno + 1
            limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
            if lines > limit:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} has {lines} lines (limit {limit})")
    return found


def test_the_check_sees_the_code():
    assert sum(1 for _ in sources()) > 100


@pytest.mark.parametrize("folder", CHECKED)
def test_no_class_is_over_250_lines_and_no_function_over_80(folder):
    found = [line for path in sources() if path.parts[len(ROOT.parts)] == folder for line in too_long(path)]
    assert found == []
