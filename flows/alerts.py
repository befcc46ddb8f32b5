"""Alerts for unattended runs: a texprod flow run that fails or crashes posts one message
to a webhook (Slack, Mattermost, Google Chat, or any endpoint that takes JSON), sent by
the Prefect server itself, so a scheduled job that failed at night is known before the
press asks for its file.

    make alerts ALERT_URL=https://hooks.slack.com/services/...   # python -m flows.alerts URL

On the server PREFECT_API_URL names this saves the notification block `texprod-alerts`
(a Prefect custom webhook: POST {"text": subject + body}) and the automation
`texprod: a run failed`; running it again replaces both (a new URL, a fixed template).
"""

from __future__ import annotations

import sys
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
from prefect import get_client
from prefect.automations import Automation
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.settings import get_current_settings

BLOCK = "texprod-alerts"
AUTOMATION = "texprod: a run failed"
FLOWS = ["generate-texture", "train-generator"]
ENDED_BADLY = {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
# Jinja, rendered by the server with the run, its flow and its deployment (if any)
SUBJECT = "texprod: {{ flow.name }} run {{ flow_run.name }} {{ flow_run.state.name | lower }}"
BODY = ("{{ flow_run.state.message }}\n"
        "{% if deployment %}Deployment {{ flow.name }}/{{ deployment.name }}. {% endif %}"
        "{{ flow_run | ui_url or '' }}")


def bad_url(url: str) -> str | None:
    """What is wrong with a webhook URL, naming the value and what is allowed, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return (f"ALERT_URL: got {url!r}, must be the http(s):// URL of a webhook (e.g. a "
                "Slack incoming webhook)")
    return None


def save_alerts(url: str) -> Automation:
    """The block and the automation, replacing any earlier ones of the same names."""
    # a webhook URL is a credential: kept among the block's secrets, shown masked
    webhook = CustomWebhookNotificationBlock(name=BLOCK, url="{{webhook_url}}",
                                             secrets={"webhook_url": url},
                                             json_data={"text": "{{subject}}\n{{body}}"})
    block_id = webhook.save(BLOCK, overwrite=True)
    with get_client(sync_client=True) as client:
        for old in client.read_automations_by_name(AUTOMATION):
            client.delete_automation(old.id)
    return Automation(
        name=AUTOMATION,
        description="Posts to the texprod-alerts webhook when a texprod run fails or "
                    "crashes (make alerts ALERT_URL=...).",
        trigger=EventTrigger(
            expect=ENDED_BADLY, posture=Posture.Reactive, threshold=1,
            within=timedelta(0), match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": FLOWS}),
        actions=[SendNotification(block_document_id=block_id, subject=SUBJECT, body=BODY)],
    ).create()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m flows.alerts WEBHOOK_URL (make alerts ALERT_URL=...)",
              file=sys.stderr)
        return 2
    if problem := bad_url(argv[0]):
        print(f"alerts: {problem}", file=sys.stderr)
        return 2
    try:
        automation = save_alerts(argv[0])
    except httpx.HTTPError as e:  # the API down, or refusing: one line, no traceback
        api = get_current_settings().api.url
        print(f"alerts: the Prefect API at {api} did not take them: {type(e).__name__}: {e}",
              file=sys.stderr)
        return 1
    print(f"alerts: failed or crashed runs of {', '.join(FLOWS)} post to "
          f"{urlsplit(argv[0]).hostname} (block {BLOCK}, automation {automation.name!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
