"""Runs one coordination inside a django-q2 worker task.

- `sequence`: the lead's steps (EC2 stage, triggering, delivery, closing) and a shard's.
- `ec2_step`: the EC2 stage as a step: complete it, or fail the coordination.
- `schedule`: claiming targets and scheduling their delivery threads; recording reports.
- `delivery`: what each thread does for one target (no database).
- `reports`: how a thread's report becomes a transition or a note.
- `stopping`: cancel, deadline, SIGTERM and cluster stop.
- `callbacks`: tokens for agents that report back; `output`: the output tail.
"""
