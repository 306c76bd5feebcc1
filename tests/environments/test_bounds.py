"""environments.bounds: one limit per number, and the clamp used where a stored number
becomes a time."""

import math

import pytest

from environments import bounds
from environments.config import DeploymentDefaults


@pytest.mark.parametrize("value", [10**12, math.inf, math.nan, 0, -1, 1.5, True, "300"])
def test_a_timeout_outside_its_bound_is_refused_with_the_limit_named(value):
    assert bounds.TIMEOUT.problem(value) == "must be a whole number from 1 to 604800 seconds (7 days)"


def test_a_timeout_inside_its_bound_is_accepted():
    assert bounds.TIMEOUT.problem(604800) is None


@pytest.mark.parametrize(("value", "clamped"), [(10**12, 604800), (math.inf, 604800), (math.nan, 604800), (0, 1)])
def test_a_stored_timeout_beyond_its_bound_is_clamped_inside_it(value, clamped):
    assert bounds.TIMEOUT.clamp(value) == clamped


def test_deployment_defaults_from_stored_blocks_beyond_their_bounds_are_clamped():
    defaults = DeploymentDefaults.from_blocks(
        {
            "default_settings": {
                "timeout": 10**12,
                "retry_count": 10**12,
                "retry_delay": 1e300,
                "health_check_timeout": 1e300,
                "health_check_retries": 10**12,
            },
            "ssh_settings": {"connection_timeout": 1e300},
            "deployment_settings": {"parallel_limit": 10**12},
        }
    )

    assert defaults.as_json() == {
        **defaults.as_json(),
        "default_timeout": 604800,
        "retry_count": 100,
        "retry_delay": 3600.0,
        "health_check_timeout": 300.0,
        "health_check_retries": 100,
        "connect_timeout": 300.0,
        "parallel_limit": 10_000,
    }
