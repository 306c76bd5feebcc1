"""Closing a coordination whose environments have all ended (runner.sequence.finish),
with a cancel landing in the middle of it."""

import pytest
from django.db import connection

from deployments.models import Coordination, CoordinationStatus as C, StageEvent, TargetStatus as T, TriggerSource
from deployments.runner.sequence import finish
from deployments.services import coordination_cancel, coordination_start
from deployments.transitions import transition

pytestmark = pytest.mark.django_db


@pytest.fixture
def ended_run(make_ssh_environment) -> Coordination:
    """A coordination in local_deploying whose one environment has succeeded."""
    make_ssh_environment("env_a", "./init_aicore.sh")
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND)
    for status in (C.EC2_DEPLOYING, C.EC2_COMPLETED, C.LOCAL_TRIGGERING, C.LOCAL_DEPLOYING):
        transition(coordination, status)
    target = coordination.targets.get()
    for status in (T.TRIGGERING, T.RUNNING, T.SUCCEEDED):
        transition(target, status)
    return coordination


def cancel_when(status: str, coordination: Coordination):
    """A database hook: just before the UPDATE that moves the coordination to `status`,
    an operator's cancel commits (as a web process's would, between two statements)."""
    fired = []

    def hook(execute, sql, params, many, context):
        if not fired and sql.startswith('UPDATE "deployments_coordination"') and status in (params or ()):
            fired.append(True)
            coordination_cancel(coordination=Coordination.objects.get(pk=coordination.pk))
        return execute(sql, params, many, context)

    return hook


@pytest.mark.parametrize("moment", [C.LOCAL_COMPLETED, C.COMPLETED])
def test_a_cancel_that_lands_while_the_run_closes_ends_it_cancelled(ended_run, moment):
    with connection.execute_wrapper(cancel_when(moment, ended_run)):
        finish(ended_run)  # before the fix: InvalidTransition (local_deploying → completed)

    ended_run.refresh_from_db()
    assert ended_run.status == C.CANCELLED
    assert not StageEvent.objects.filter(coordination=ended_run, new_status=C.COMPLETED).exists()


def test_a_run_whose_environments_all_succeeded_completes(ended_run):
    finish(ended_run)

    ended_run.refresh_from_db()
    assert ended_run.status == C.COMPLETED
    assert list(
        StageEvent.objects.filter(coordination=ended_run, target=None).values_list("new_status", flat=True)
    )[-2:] == [C.LOCAL_COMPLETED, C.COMPLETED]
