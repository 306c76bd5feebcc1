"""The client carries its own copy of the stage log's format (it imports no Django): for
the same events, as the API serves them, it prints what deployments.stage_log prints.
Every branch of the format has an event here, so the two cannot drift apart."""

import sys
from datetime import timedelta

import pytest

from deployments.api.serializers import CoordinationDetailSerializer, StageEventSerializer
from deployments.models import StageEvent
from deployments.selectors import coordination_detail
from deployments.stage_log import format_event, format_total
from tests.factories import make_coordination
from tests.support.client_venv import CLIENT

sys.path.insert(0, str(CLIENT / "src"))
from powerautomation_client import stage_log as client_stage_log  # noqa: E402

pytestmark = pytest.mark.django_db

BUDGET = "2 of 3 environments failed: a (exit_code), b (failure_budget)"
# (environment_id, stage, old_status, new_status, message, data): one per branch.
EVENTS = [
    ("", "coordination", "", "pending", "created by command for 2 environments", {}),
    ("", "ec2", "", "", "instance i-0123456789abcdef0 is running", {}),
    ("", "notify", "", "", "sent coordination.completed", {}),
    ("", "coordination", "", "", "📦 wave 2 of 2: b", {}),
    ("", "coordination", "", "", "handed to a fresh worker task", {}),
    ("", "coordination", "pending", "ec2_deploying", "waiting for the instance", {}),
    ("", "coordination", "ec2_deploying", "ec2_completed", "", {}),
    ("", "coordination", "ec2_deploying", "ec2_completed", "EC2 platform stage done", {}),
    ("", "coordination", "ec2_deploying", "ec2_completed", "platform answered 200", {}),
    ("", "coordination", "ec2_completed", "local_triggering", "", {"targets": 2}),
    ("", "coordination", "ec2_completed", "local_triggering", "", {}),
    ("", "coordination", "local_deploying", "awaiting_approval", "✋ first wave done (1 succeeded, 0 failed)", {}),
    ("", "coordination", "local_deploying", "awaiting_approval", "first wave done", {}),
    ("", "coordination", "awaiting_approval", "local_deploying", "approved by ops: the rollout goes on", {}),
    ("", "coordination", "local_triggering", "local_deploying", "every environment has started", {}),
    ("", "coordination", "local_triggering", "local_deploying", "2 running", {}),
    ("", "coordination", "local_deploying", "local_completed", "all environments finished", {}),
    ("", "coordination", "local_completed", "completed", "", {}),
    (
        "",
        "coordination",
        "local_completed",
        "failed",
        "1 of 2 environments failed",
        {"failed": ["b"], "total": 2, "reasons": "b (exit_code)"},
    ),  # fmt: skip
    (
        "",
        "coordination",
        "local_completed",
        "failed",
        BUDGET,
        {"failed": ["a"], "total": 3, "reasons": "a (exit_code), b (failure_budget)"},
    ),  # fmt: skip
    ("", "coordination", "ec2_deploying", "failed", "the instance never ran", {}),
    ("", "coordination", "local_deploying", "cancelled", "by ops", {}),
    ("", "coordination", "ec2_deploying", "pending", "an unusual move", {}),
    ("a", "trigger", "pending", "triggering", "connecting over ssh to 127.0.0.1:22", {}),
    ("a", "run", "triggering", "running", "running ./init_aicore.sh", {}),
    ("a", "run", "running", "succeeded", "script exited with 0", {}),
    ("b", "run", "running", "failed", "script exited with 4", {"reason": "exit_code"}),
    ("b", "run", "running", "cancelled", "hung up", {}),
    ("b", "run", "running", "interrupted", "the worker died", {"reason": "worker_lost"}),
    ("b", "run", "running", "pending", "odd", {}),
    ("a", "verify", "", "", "health check passed", {}),
    ("a", "run", "", "", "waiting for deploy_x", {"waiting_for": "deploy_x"}),
    ("a", "run", "", "", "hung up by deploy_y", {"superseded_by": "deploy_y"}),
    ("a", "trigger", "", "", "retry 2 of 3 in 1 s", {}),
]


@pytest.mark.parametrize("waves", [[2], [1, 1]])
def test_the_clients_stage_log_is_the_platforms_for_every_kind_of_event(waves):
    coordination = make_coordination("deploy_log", "completed", {"a": "succeeded", "b": "failed"})
    coordination.rollout = {**(coordination.rollout or {}), "waves": waves}
    coordination.finished_at = coordination.created_at + timedelta(seconds=3.456789)
    coordination.save()
    StageEvent.objects.filter(coordination=coordination).delete()
    for environment_id, stage, old, new, message, data in EVENTS:
        StageEvent.objects.create(
            coordination=coordination,
            environment_id=environment_id,
            stage=stage,
            old_status=old,
            new_status=new,
            message=message,
            data=data,
        )
    record = CoordinationDetailSerializer(coordination_detail("deploy_log")).data
    run = client_stage_log.Run.of(record)
    events = StageEvent.objects.filter(coordination=coordination).select_related("coordination").order_by("id")

    platform = [format_event(event) for event in events] + [format_total(coordination)]
    client = [client_stage_log.format_event(StageEventSerializer(event).data, run) for event in events]
    client.append(client_stage_log.format_total(record))

    assert client == platform
    # Each event its own line (but the two ways of saying "EC2 done"): no branch left out.
    assert len(set(platform)) == len(EVENTS)
