"""Check results reach the alerts app through monitoring's signal (alerts sit above monitoring)."""

import logging

from django.dispatch import receiver

from modelhub.alerts.evaluation import evaluate
from modelhub.monitoring.record import results_recorded

log = logging.getLogger(__name__)


@receiver(results_recorded, dispatch_uid="modelhub.alerts.evaluate")
def evaluate_recorded_results(sender, results, **kwargs) -> None:
    # The results are stored already; a fault here must not fail the check that recorded them.
    try:
        evaluate(results)
    except Exception:
        log.exception("alert evaluation of %d check results failed", len(results))
