"""Alerts for unattended runs: a texprod flow run that fails or crashes, or that no worker
starts, posts one message to a webhook (Slack, Mattermost, Google Chat, or any endpoint
that takes JSON), sent by the Prefect server itself, so a scheduled job that failed at
night, or never ran because its GPU host was down, is known before the press asks for
its file.

    make alerts ALERT_URL=https://hooks.slack.com/services/...   # python -m flows.alerts URL

On the server PREFECT_API_URL names this saves the notification block `texprod-alerts`
(a Prefect custom webhook: POST {"text": subject + body}) and two automations, `texprod:
a run failed` and `texprod: a run did not start` (still Late `--late-after` seconds after
Prefect marked it Late); running it again replaces them all.
"""

from __future__ import annotations

import argparse
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
LATE_AUTOMATION = "texprod: a run did not start"
FLOWS = ["generate-texture", "train-generator"]
ENDED_BADLY = {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
# what a run that left Late did next: a worker took it, or someone ended it
LEFT_LATE = {f"prefect.flow-run.{state}" for state in (
    "Pending", "Running", "Cancelling", "Cancelled", "Crashed", "Failed", "Completed")}
LATE_AFTER_S = 600  # default; Prefect's proactive triggers need 10 s at least
# Jinja, rendered by the server with the run, its flow and its deployment (if any)
DEPLOYMENT = "{% if deployment %}Deployment {{ flow.name }}/{{ deployment.name }}. {% endif %}"
SUBJECT = "texprod: {{ flow.name }} run {{ flow_run.name }} {{ flow_run.state.name | lower }}"
BODY = "{{ flow_run.state.message }}\n" + DEPLOYMENT + "{{ flow_run | ui_url or '' }}"
LATE_SUBJECT = "texprod: {{ flow.name }} run {{ flow_run.name }} has not started"
LATE_BODY = ("It was due at {{ flow_run.expected_start_time }} and no worker has taken it: "
             "is a worker of its work pool running?\n" + DEPLOYMENT
             + "{{ flow_run | ui_url or '' }}")


def bad_url(url: str) -> str | None:
    """What is wrong with a webhook URL, naming the value and what is allowed, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return (f"ALERT_URL: got {url!r}, must be the http(s):// URL of a webhook (e.g. a "
                "Slack incoming webhook)")
    return None


def save_alerts(url: str, late_after_s: int = LATE_AFTER_S) -> list[Automation]:
    """The block and the automations, replacing any earlier ones of the same names."""
    # a webhook URL is a credential: kept among the block's secrets, shown masked
    webhook = CustomWebhookNotificationBlock(name=BLOCK, url="{{webhook_url}}",
                                             secrets={"webhook_url": url},
                                             json_data={"text": "{{subject}}\n{{body}}"})
    block_id = webhook.save(BLOCK, overwrite=True)
    with get_client(sync_client=True) as client:
        for name in (AUTOMATION, LATE_AUTOMATION):
            for old in client.read_automations_by_name(name):
                client.delete_automation(old.id)
    texprod_runs = {"match": {"prefect.resource.id": "prefect.flow-run.*"},
                    "match_related": {"prefect.resource.role": "flow",
                                      "prefect.resource.name": FLOWS}}
    failed = Automation(
        name=AUTOMATION,
        description="Posts to the texprod-alerts webhook when a texprod run fails or "
                    "crashes (make alerts ALERT_URL=...).",
        trigger=EventTrigger(expect=ENDED_BADLY, posture=Posture.Reactive, threshold=1,
                             within=timedelta(0), **texprod_runs),
        actions=[SendNotification(block_document_id=block_id, subject=SUBJECT, body=BODY)])
    late = Automation(
        name=LATE_AUTOMATION,
        description=f"Posts to the texprod-alerts webhook when a texprod run is still Late "
                    f"{late_after_s} s after Prefect marked it so (make alerts ALERT_URL=...).",
        # per run: after its Late event, no sign of a worker (or an end) within the window
        trigger=EventTrigger(after={"prefect.flow-run.Late"}, expect=LEFT_LATE,
                             for_each={"prefect.resource.id"}, posture=Posture.Proactive,
                             threshold=1, within=timedelta(seconds=late_after_s),
                             **texprod_runs),
        actions=[SendNotification(block_document_id=block_id, subject=LATE_SUBJECT,
                                  body=LATE_BODY)])
    return [failed.create(), late.create()]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.alerts",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("url", help="the webhook to post to (make alerts ALERT_URL=...)")
    ap.add_argument("--late-after", type=int, default=LATE_AFTER_S, metavar="SECONDS",
                    help="alert when a run is still Late this long (default %(default)s; "
                    "make alerts ALERT_LATE_S=...)")
    args = ap.parse_args(argv)
    if problem := bad_url(args.url):
        ap.exit(2, f"alerts: {problem}\n")
    if args.late_after < 10:
        ap.exit(2, f"alerts: ALERT_LATE_S: got {args.late_after}, must be at least 10 "
                "seconds (Prefect's shortest window)\n")
    try:
        saved = save_alerts(args.url, args.late_after)
    except httpx.HTTPError as e:  # the API down, or refusing: one line, no traceback
        api = get_current_settings().api.url
        print(f"alerts: the Prefect API at {api} did not take them: {type(e).__name__}: {e}",
              file=sys.stderr)
        return 1
    print(f"alerts: runs of {', '.join(FLOWS)} that fail, crash or are still Late after "
          f"{args.late_after} s post to {urlsplit(args.url).hostname} (block {BLOCK}; "
          f"automations {', '.join(repr(a.name) for a in saved)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
