"""Trigger the init script with a signed webhook (`connection_method = "webhook"`),
signed as the Standard Webhooks spec says (webhook-id / webhook-timestamp /
webhook-signature, HMAC-SHA256 over `id.timestamp.body`)."""

import base64
import binascii
import hashlib
import hmac
import time

from environments.connectors.base import ConnectorError, DeploymentContext, Reporter, RunResult, Target
from environments.connectors.http import (
    await_completion,
    check_answers,
    json_body,
    post_trigger,
    promises_callback,
    raise_for_answer,
    utc_timestamp,
)


def endpoint(target: Target) -> str:
    return target.webhook_url or f"http://{target.host}:{target.port}/webhook/deploy"


def signing_key(secret: str) -> bytes:
    """`whsec_<base64>` is base64-decoded; any other secret is used as its UTF-8 bytes."""
    if secret.startswith("whsec_"):
        encoded = secret[len("whsec_") :]
        try:
            return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except binascii.Error:
            raise ConnectorError(
                "webhook_secret starts with whsec_ but the rest is not base64", reason="bad_secret", permanent=True
            ) from None
    return secret.encode("utf-8")


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def delivery_id(context: DeploymentContext, target: Target) -> str:
    """Unique per delivery and the same on its retries (and on another worker's)."""
    digest = hashlib.sha256(f"{context.coordination_id}:{target.environment_id}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def payload(target: Target, context: DeploymentContext) -> dict:
    return {
        "event": "ec2_deployment_completed",
        "action": "init_local_environment",
        "environment_id": target.environment_id,
        "coordination_id": context.coordination_id,
        "ec2_instance_id": context.ec2_instance_id,
        "ec2_public_ip": context.ec2_public_ip,
        "deployment_version": context.deployment_version,
        "script_path": target.init_script_path,
        "timestamp": utc_timestamp(),
        "callback_url": context.callback_url,
    }


class WebhookConnector:
    def run(self, target: Target, context: DeploymentContext, reporter: Reporter) -> RunResult:
        url = endpoint(target)
        body = json_body(payload(target, context))
        webhook_id = delivery_id(context, target)
        timestamp = int(time.time())
        headers = {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(target.webhook_secret, webhook_id, timestamp, body),
        }
        secrets = (target.webhook_secret, context.callback_url, headers["webhook-signature"])
        response = post_trigger(url, body=body, headers=headers, context=context, secrets=secrets)
        raise_for_answer(response, url, context, secrets)
        return await_completion(
            target,
            context,
            reporter,
            f"POST {url}: delivered (HTTP {response.status_code})",
            promised=promises_callback(response),
        )

    def check(self, target: Target, context: DeploymentContext) -> str:
        return check_answers(endpoint(target), context)
