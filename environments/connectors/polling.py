"""Polling agents (`connection_method = "polling"`): the machine's agent asks the platform
for work over HTTPS, so nothing connects to the machine (a laptop behind NAT).

No worker runs the script or holds a connection: a run is offered in the database, claimed
by the agent's poll and recorded by the agent's requests (deployments/agent_runs.py). This
module is the method's connector for what needs no run: the preflight, from when the
agent was last seen.
"""

from datetime import datetime

from django.utils import timezone

from environments.connectors.base import ConnectorError, DeploymentContext, Reporter, RunResult, Target

# A preflight passes when the agent was seen within this many poll intervals.
ONLINE_INTERVALS = 3


def seen_seconds_ago(seen_at: datetime | None) -> int | None:
    if seen_at is None:
        return None
    return max(0, int((timezone.now() - seen_at).total_seconds()))


def last_seen(seen_at: datetime | None) -> str:
    """'agent last seen N s ago', as the admin, the API and check_environments say it."""
    seconds = seen_seconds_ago(seen_at)
    return "agent never seen" if seconds is None else f"agent last seen {seconds} s ago"


def is_online(seen_at: datetime | None, poll_interval: int) -> bool:
    seconds = seen_seconds_ago(seen_at)
    return seconds is not None and seconds <= ONLINE_INTERVALS * poll_interval


class PollingConnector:
    def run(self, target: Target, context: DeploymentContext, reporter: Reporter) -> RunResult:
        # The coordinator offers a polling run instead of starting a delivery thread.
        raise ConnectorError(
            "a polling environment's run is taken by its agent, not started by a worker",
            reason="internal_error",
            permanent=True,
        )

    def check(self, target: Target, context: DeploymentContext) -> str:
        if not target.agent_token_hash:
            raise ConnectorError(
                f"no agent token is set, {last_seen(target.agent_seen_at)}: generate one in the admin (or give "
                "agent_token) and start the agent with it",
                reason="agent_token_missing",
                permanent=True,
            )
        if not is_online(target.agent_seen_at, target.poll_interval):
            limit = ONLINE_INTERVALS * target.poll_interval
            raise ConnectorError(
                f"{last_seen(target.agent_seen_at)} (online: seen within {limit} s, {ONLINE_INTERVALS} × its "
                "poll interval)",
                reason="agent_offline",
                permanent=False,
            )
        return last_seen(target.agent_seen_at)
