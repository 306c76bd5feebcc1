"""Auto-deploy on platform start (AUTO_DEPLOY_ON_STARTUP=true).

Every web process (from the WSGI entry point) and every worker process (django-q2's
`post_spawn`) calls `on_platform_start` once. When DEPLOYMENT_VERSION has no coordination
yet, one local deployment of it to every enabled environment (or those AUTO_DEPLOY_TAGS and
AUTO_DEPLOY_EXCLUDE_TAGS select) is triggered, exactly once
per version however many processes start at the same time on however many machines: the
unique AutoDeploy.version decides, not a check-then-act race.
"""

import logging
import os

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connections, transaction

from deployments.leases import worker_identity
from deployments.models import AutoDeploy, Coordination, TriggerSource
from deployments.services import coordination_start

logger = logging.getLogger(__name__)


def auto_deploy(*, version: str, process: str) -> Coordination | None:
    """Trigger the deployment of `version` unless a coordination or a claim for it exists.

    1. A coordination for the version, or a claim, exists: nothing to do.
    2. Insert the claim (AutoDeploy) and start the coordination in one transaction. Of the
       processes that get here at once, the unique constraint lets one commit; the others
       get IntegrityError and leave.
    3. Bad input (e.g. no enabled environment yet) rolls the claim back with the rest, so a
       later start, once there are environments, tries again.
    Returns the coordination started, or None.
    """
    if Coordination.objects.filter(version=version).exists() or AutoDeploy.objects.filter(version=version).exists():
        logger.info("auto-deploy: version %s already has a coordination; nothing to do", version)
        return None
    try:
        with transaction.atomic():
            claim = AutoDeploy.objects.create(version=version, claimed_by=f"{process} {worker_identity()}")
            coordination = coordination_start(
                triggered_by=TriggerSource.STARTUP,
                version=version,
                ec2_instance_id=os.environ.get("EC2_INSTANCE_ID", ""),
                ec2_public_ip=os.environ.get("EC2_PUBLIC_IP", ""),
                # Unset (empty) selects by no tag: every enabled environment, as before.
                tags=settings.AUTO_DEPLOY_TAGS or None,
                exclude_tags=settings.AUTO_DEPLOY_EXCLUDE_TAGS or None,
            )
            AutoDeploy.objects.filter(pk=claim.pk).update(coordination=coordination)
    except IntegrityError:
        logger.info("auto-deploy: another process started version %s first", version)
        return None
    except ValidationError as exc:
        logger.warning("auto-deploy: version %s not deployed: %s", version, "; ".join(exc.messages))
        return None
    logger.info(
        "auto-deploy: started %s for version %s (%s)", coordination.coordination_id, version, f"{process} process"
    )
    return coordination


def on_platform_start(process: str) -> None:
    """Called once by each web and worker process at start. Never fails the start: a
    database that is not reachable or not migrated yet is logged."""
    if not settings.AUTO_DEPLOY_ON_STARTUP:
        return
    try:
        auto_deploy(version=settings.DEPLOYMENT_VERSION, process=process)
    except Exception:
        logger.exception("auto-deploy on %s start failed", process)
    finally:
        # Do not hand an open connection to forked processes (gunicorn --preload).
        connections.close_all()


def on_worker_start(**kwargs) -> None:
    """django-q2 `post_spawn`: a worker process of `qcluster` started."""
    on_platform_start("worker")
