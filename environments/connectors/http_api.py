"""Trigger the init script through the local agent's HTTP API (`connection_method =
"http_api"`): a Bearer-authenticated POST with an idempotency key, so a retry after a lost
answer never starts the script twice."""

from environments.connectors.base import DeploymentContext, Reporter, RunResult, Target
from environments.connectors.http import (
    await_completion,
    check_answers,
    finish_original,
    json_body,
    original_answer,
    parse_finished_run,
    post_trigger,
    promises_callback,
    raise_for_answer,
    utc_timestamp,
)


def endpoint(target: Target) -> str:
    return target.api_endpoint or f"http://{target.host}:{target.port}/api/deploy/init"


def payload(target: Target, context: DeploymentContext) -> dict:
    return {
        "action": "init_local_environment",
        "script_path": target.init_script_path,
        "working_directory": target.working_directory,
        "environment_id": target.environment_id,
        "coordination_id": context.coordination_id,
        "ec2_instance_id": context.ec2_instance_id,
        "ec2_public_ip": context.ec2_public_ip,
        "deployment_version": context.deployment_version,
        "timeout": target.timeout,
        "timestamp": utc_timestamp(),
        "callback_url": context.callback_url,
    }


class HTTPAPIConnector:
    def run(self, target: Target, context: DeploymentContext, reporter: Reporter) -> RunResult:
        url = endpoint(target)
        secrets = (target.api_token, context.callback_url)
        response = post_trigger(
            url,
            body=json_body(payload(target, context)),
            headers={
                "Authorization": f"Bearer {target.api_token}",
                "Idempotency-Key": f"{context.coordination_id}:{target.environment_id}",
            },
            context=context,
            secrets=secrets,
        )
        original = original_answer(response)
        if original is not None:  # the original project's agents answer when the script is done
            return finish_original(original, response, url, reporter, secrets)
        raise_for_answer(response, url, context, secrets)
        if response.status_code == 200:
            reporter.script_started(f"POST {url}: the agent ran the script")
            result, output = parse_finished_run(response, url)
            if output:
                reporter.output(output if output.endswith("\n") else output + "\n")
            return result
        return await_completion(
            target,
            context,
            reporter,
            f"POST {url}: accepted (HTTP {response.status_code})",
            promised=promises_callback(response),
        )

    def check(self, target: Target, context: DeploymentContext) -> str:
        return check_answers(endpoint(target), context, {"Authorization": f"Bearer {target.api_token}"})
