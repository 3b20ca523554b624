"""Regression alerts: a webhook notification block and a Prefect automation that posts to it whenever a
run emits `codegen-eval.run.regressed` (see codegen_eval/orchestration/events.py).

Both live on the Prefect server (OSS servers run automations), so they outlast the command that made
them; creating them again with the same name updates them in place.
"""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlparse
from uuid import UUID

from pydantic import BaseModel

from codegen_eval.orchestration.events import RUN_REGRESSED

DEFAULT_NAME = "codegen-eval-regression"

# Rendered by the Prefect server (Jinja) with the triggering event; the webhook receives
# {"text": "<subject>\n<body>"}, which Slack, Mattermost and most chat webhooks display as is.
SUBJECT = "codegen-eval regression: {{ event.payload.dataset }} · {{ event.payload.model }}"
BODY = """\
{{ event.payload.dataset }} · {{ event.payload.model }} (judge {{ event.payload.judge_model }}), run {{ event.payload.run_id }}
pass rate {{ "%.0f" | format(event.payload.pass_rate_before * 100) }}% → {{ "%.0f" | format(event.payload.pass_rate_after * 100) }}% \
on {{ event.payload.shared_cases }} shared cases since run {{ event.payload.previous_run }}, McNemar p = {{ "%.4g" | format(event.payload.p_value) }}
regressed cases ({{ event.payload.regressed_count }}): {{ event.payload.regressed_cases | join(", ") }}
report: {{ event.payload.report }}
comparison: {{ event.payload.comparison }}"""


class AlertSetup(BaseModel):
    name: str
    block_document_id: UUID
    automation_id: UUID
    created: bool  # False: an automation of that name existed and was updated


def create_alert(webhook: str, name: str = DEFAULT_NAME) -> AlertSetup:
    """Create, or update in place, the webhook block `name` and the automation `name` that posts to it."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    check_alert_input(webhook, name)
    block = CustomWebhookNotificationBlock(name=name, url=webhook, method="POST", json_data={"text": "{{subject}}\n{{body}}"})
    block_id = block.save(name, overwrite=True)
    automation = AutomationCore(
        name=name,
        description=f"Posts to {urlparse(webhook).netloc} when a codegen-eval run is worse than the previous run of its dataset and model.",
        trigger=EventTrigger(
            expect={RUN_REGRESSED}, match={"prefect.resource.id": "codegen-eval.run.*"},
            posture=Posture.Reactive, threshold=1, within=timedelta(0),
        ),
        actions=[SendNotification(block_document_id=block_id, subject=SUBJECT, body=BODY)],
    )
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(name)
        for duplicate in existing[1:]:  # left by an older, non-idempotent set-up
            client.delete_automation(duplicate.id)
        if existing:
            client.update_automation(existing[0].id, automation)
            return AlertSetup(name=name, block_document_id=block_id, automation_id=existing[0].id, created=False)
        return AlertSetup(name=name, block_document_id=block_id, automation_id=client.create_automation(automation), created=True)


def check_alert_input(webhook: str, name: str) -> None:
    """A ValueError naming the option, for a webhook that is not http(s) or a name Prefect would refuse."""
    url = urlparse(webhook)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise ValueError(f"--webhook {webhook!r}: expected an http:// or https:// URL")
    if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name):
        raise ValueError(f"--name {name!r}: use lowercase letters, digits and dashes (a Prefect block name)")
