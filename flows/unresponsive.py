"""Runs whose host died are marked Crashed instead of showing Running forever.

A flow run's process sends a heartbeat event every PREFECT_FLOWS_HEARTBEAT_FREQUENCY
seconds (`make worker` sets 60; Prefect's default is 180). When the whole host goes (power,
kernel panic, a GPU node reclaimed), no process is left to report the end, and the run
would stay Running on the dashboard for good, with no alert. This saves on the server one
automation, `texprod: a run stopped responding`: a texprod run with no heartbeat, and no
end, for `--after` seconds since its last heartbeat is set Crashed, which the failure alert
(`make alerts`) then posts. `make server-objects` (and so `make worker` and `make deploy`)
saves it; running it again keeps it when unchanged, else replaces it.

    python -m flows.unresponsive --after 600
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta

import httpx
from prefect import get_client
from prefect.automations import Automation
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.settings import get_current_settings

from flows.alerts import FLOWS

UNRESPONSIVE_AUTOMATION = "texprod: a run stopped responding"
AFTER_S = 600  # ten heartbeats of `make worker`, three of Prefect's default frequency
HEARTBEAT = "prefect.flow-run.heartbeat"
# a run that beats again, or ends, is alive (or done): only silence counts
ALIVE_OR_ENDED = {HEARTBEAT, *(f"prefect.flow-run.{state}" for state in (
    "Completed", "Failed", "Cancelled", "Crashed", "Paused", "Suspended"))}


def save_unresponsive_automation(after_s: int = AFTER_S) -> Automation:
    """The automation: the one saved before if it is this one to the letter (every `make
    worker` saves it, and a restarted worker should not replace server objects under the
    trigger service), else a new one that replaces it (another window, a newer texprod)."""
    wanted = unresponsive_automation(after_s)
    with get_client(sync_client=True) as client:
        saved = client.read_automations_by_name(UNRESPONSIVE_AUTOMATION)
        if len(saved) == 1 and _definition(saved[0]) == _definition(wanted):
            return saved[0]
        for old in saved:
            client.delete_automation(old.id)
    return wanted.create()


def unresponsive_automation(after_s: int) -> Automation:
    """The automation for a window of `after_s` seconds, not yet saved."""
    message = (f"no heartbeat from the run's process for {after_s} s: its host or worker "
               "died (power, kernel, a reclaimed node); run the job again: it resumes from "
               "its stripe spool if the host's disk kept it")
    return Automation(
        name=UNRESPONSIVE_AUTOMATION,
        description=f"Marks a texprod run Crashed when its process has sent no heartbeat "
                    f"for {after_s} s (make server-objects).",
        # per run: after each heartbeat, the next one (or an end) within the window
        trigger=EventTrigger(after={HEARTBEAT}, expect=ALIVE_OR_ENDED,
                             for_each={"prefect.resource.id"}, posture=Posture.Proactive,
                             threshold=1, within=timedelta(seconds=after_s),
                             match={"prefect.resource.id": "prefect.flow-run.*"},
                             match_related={"prefect.resource.role": "flow",
                                            "prefect.resource.name": FLOWS}),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=message)],
    )


def _definition(automation: Automation) -> dict:
    """What an automation does, without the id the server gave it."""
    return automation.model_dump(exclude={"id"})


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.unresponsive",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--after", type=int, default=AFTER_S, metavar="SECONDS",
                    help="mark a run Crashed after this long without a heartbeat (default "
                    "%(default)s; make server-objects UNRESPONSIVE_S=...)")
    args = ap.parse_args(argv)
    if args.after < 60:
        ap.exit(2, f"unresponsive: UNRESPONSIVE_S: got {args.after}, must be at least 60 "
                "seconds (heartbeats come every 30 s at the most often)\n")
    try:
        saved = save_unresponsive_automation(args.after)
    except httpx.HTTPError as e:  # the API down, or refusing: one line, no traceback
        api = get_current_settings().api.url
        print(f"unresponsive: the Prefect API at {api} did not take the automation: "
              f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"unresponsive: runs of {', '.join(FLOWS)} silent for {args.after} s are marked "
          f"Crashed (automation {saved.name!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
