"""The time series' upkeep task: roll points up, then apply retention (scheduled every minute).

Rolling up comes first, so that retention finds the roll-ups it checks for; both
steps are idempotent, and a run that finds another one still going skips itself.
"""

from celery import shared_task

from modelhub.monitoring.rollups import prune, roll_up
from modelhub.serving.locks import named_lock


@shared_task(name="modelhub.monitoring.maintenance.roll_up_and_prune", ignore_result=True)
def roll_up_and_prune() -> dict:
    with named_lock("monitoring:roll-up-and-prune") as acquired:
        if not acquired:
            return {"skipped": "another roll-up is running"}
        rolled = roll_up()
        pruned = prune()
    return {
        "minute_rollups": rolled.minutes,
        "hour_rollups": rolled.hours,
        "pruned_points": pruned.points,
        "pruned_minute_rollups": pruned.minute_rollups,
        "pruned_hour_rollups": pruned.hour_rollups,
        "pruned_results": pruned.results,
    }
