import pytest

from deployments.models import (
    Coordination,
    CoordinationStatus as C,
    CoordinationTarget,
    StageEvent,
    TargetStatus as T,
    TriggerSource,
)
from deployments.services import coordination_start
from deployments.transitions import (
    COORDINATION_TRANSITIONS,
    TARGET_TRANSITIONS,
    InvalidTransition,
    transition,
)
from tests.factories import make_coordination

pytestmark = pytest.mark.django_db

# The whole table, written out here on purpose (not read from the code): a move added to or
# dropped from deployments.transitions must be a deliberate change to this test too.
COORDINATION_MOVES = {
    "pending": {"ec2_deploying", "failed", "cancelled"},
    "ec2_deploying": {"ec2_completed", "failed", "cancelled"},
    "ec2_completed": {"local_triggering", "failed", "cancelled"},
    "local_triggering": {"local_deploying", "local_completed", "failed", "cancelled"},
    "local_deploying": {"local_completed", "awaiting_approval", "failed", "cancelled"},
    "awaiting_approval": {"local_deploying", "failed", "cancelled"},
    "local_completed": {"completed", "failed", "cancelled"},
    "completed": set(),
    "failed": set(),
    "cancelled": set(),
}
TARGET_MOVES = {
    "pending": {"triggering", "failed", "cancelled"},
    "triggering": {"running", "failed", "cancelled", "interrupted"},
    "running": {"succeeded", "failed", "cancelled", "interrupted"},
    "succeeded": set(),
    "failed": set(),
    "cancelled": set(),
    "interrupted": set(),
}


@pytest.fixture
def coordination(make_ssh_environment):
    make_ssh_environment("env_a", "./init_aicore.sh")
    return coordination_start(triggered_by=TriggerSource.COMMAND)


def test_every_status_has_a_row_in_the_tables():
    assert set(COORDINATION_TRANSITIONS) == set(C.values)
    assert set(TARGET_TRANSITIONS) == set(T.values)


def test_terminal_statuses_allow_no_further_move():
    for status in (C.COMPLETED, C.FAILED, C.CANCELLED):
        assert COORDINATION_TRANSITIONS[status] == set()
    for status in (T.SUCCEEDED, T.FAILED, T.CANCELLED, T.INTERRUPTED):
        assert TARGET_TRANSITIONS[status] == set()


def test_a_move_writes_exactly_one_event_with_old_and_new_status(coordination):
    before = StageEvent.objects.count()

    assert transition(coordination, C.EC2_DEPLOYING, message="go", data={"mode": "reported"})

    assert StageEvent.objects.count() == before + 1
    event = StageEvent.objects.latest("id")
    assert (event.old_status, event.new_status, event.message, event.data) == (
        C.PENDING,
        C.EC2_DEPLOYING,
        "go",
        {"mode": "reported"},
    )
    coordination.refresh_from_db()
    assert coordination.status == C.EC2_DEPLOYING
    assert coordination.started_at is not None


def test_a_move_the_table_forbids_raises_and_changes_nothing(coordination):
    before = StageEvent.objects.count()

    with pytest.raises(InvalidTransition):
        transition(coordination, C.COMPLETED)

    coordination.refresh_from_db()
    assert coordination.status == C.PENDING
    assert StageEvent.objects.count() == before


def test_the_second_of_two_racing_moves_loses_and_writes_nothing(coordination):
    from deployments.models import CoordinationTarget

    first = CoordinationTarget.objects.get()
    second = CoordinationTarget.objects.get()  # the same row, loaded by another worker
    assert transition(first, T.TRIGGERING)
    before = StageEvent.objects.count()

    assert transition(second, T.TRIGGERING) is False

    assert StageEvent.objects.count() == before
    assert second.status == T.PENDING  # the loser's copy is not changed in memory


def test_terminal_moves_stamp_finished_at(coordination):
    target = coordination.targets.get()
    transition(target, T.TRIGGERING)
    transition(target, T.FAILED, fields={"reason": "connection_failed"})
    target.refresh_from_db()
    assert target.finished_at is not None
    assert target.started_at is not None
    assert target.reason == "connection_failed"


def test_stage_events_cannot_be_changed_or_deleted_one_by_one(coordination):
    from deployments.models import AppendOnlyError

    event = StageEvent.objects.filter(coordination=coordination).first()
    event.message = "rewritten"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    assert StageEvent.objects.get(pk=event.pk).message != "rewritten"
    coordination.delete()  # deleting the whole coordination takes its events with it
    assert not StageEvent.objects.filter(pk=event.pk).exists()


def wrong_answers(obj: Coordination | CoordinationTarget, table: dict[str, set[str]], *, listed: bool) -> list:
    """Every move listed (or not listed) in `table` that `transition` does not allow (or
    refuse), tried on `obj` put in the move's starting status directly, as a run leaves it."""
    expected = "allowed" if listed else "refused"
    pairs = [(old, new) for old in table for new in table if (new in table[old]) == listed]
    return [(old, new) for old, new in pairs if attempt(obj, old, new) != expected]


def attempt(obj: Coordination | CoordinationTarget, old: str, new: str) -> str:
    """'allowed', 'refused' (InvalidTransition) or 'lost' (no move made) for `old` → `new`."""
    type(obj).objects.filter(pk=obj.pk).update(status=old)
    obj.status = old
    try:
        moved = transition(obj, new)
    except InvalidTransition:
        return "refused"
    return "allowed" if moved and type(obj).objects.get(pk=obj.pk).status == new else "lost"


@pytest.fixture
def target() -> CoordinationTarget:
    return make_coordination("deploy_table", C.LOCAL_DEPLOYING, {"env_a": T.PENDING}).targets.get()


def test_the_written_out_tables_name_every_status():
    assert set(COORDINATION_MOVES) == set(C.values)
    assert set(TARGET_MOVES) == set(T.values)


def test_every_coordination_move_the_table_lists_is_allowed(target):
    assert wrong_answers(target.coordination, COORDINATION_MOVES, listed=True) == []


def test_every_coordination_move_the_table_does_not_list_is_refused(target):
    assert wrong_answers(target.coordination, COORDINATION_MOVES, listed=False) == []


def test_every_target_move_the_table_lists_is_allowed(target):
    assert wrong_answers(target, TARGET_MOVES, listed=True) == []


def test_every_target_move_the_table_does_not_list_is_refused(target):
    assert wrong_answers(target, TARGET_MOVES, listed=False) == []
