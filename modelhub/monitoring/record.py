"""The one writer of check results and their points.

Checks compute `Result`s without touching the database (so a pass can fan out
over threads and write once at the end); `record()` stores them in bulk and
then tells whoever listens (the alerts app) through `results_recorded`.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import django.dispatch
from django.db import IntegrityError, transaction
from django.utils import timezone

from modelhub.monitoring.models import CheckResult, Point

# Sent after results are stored, with `results`: the CheckResult rows this call
# wrote (those already written by an earlier run of the same pass are left out).
results_recorded = django.dispatch.Signal()


@dataclass
class Result:
    kind: str
    status: str
    server_id: int | None = None
    deployment_id: int | None = None
    version_id: int | None = None
    value: float | None = None
    message: str = ""
    details: dict = field(default_factory=dict)
    # (metric, target, value) triples: the series points this result adds.
    points: list[tuple[str, str, float]] = field(default_factory=list)
    time: datetime | None = None

    def target_key(self) -> str:
        return f"s{self.server_id or ''}d{self.deployment_id or ''}v{self.version_id or ''}"


def record(results: Sequence[Result], pass_id: str | None = None) -> list[CheckResult]:
    """Store `results` (and their points) and return the rows written.

    With a `pass_id`, each result is written at most once however often the
    pass runs (a retried task, two workers): its key is pass id + kind + target.
    """
    now = timezone.now()
    rows = [
        CheckResult(
            kind=r.kind,
            status=r.status,
            server_id=r.server_id,
            deployment_id=r.deployment_id,
            version_id=r.version_id,
            value=r.value,
            message=r.message,
            details=r.details,
            dedupe_key=f"{pass_id}:{r.kind}:{r.target_key()}"[:200] if pass_id else None,
            created_at=r.time or now,
        )
        for r in results
    ]
    for attempt in range(2):
        try:
            with transaction.atomic():
                fresh = _not_yet_recorded(rows, results) if pass_id else list(zip(rows, results, strict=True))
                written = CheckResult.objects.bulk_create([row for row, _ in fresh])
                Point.objects.bulk_create(
                    [
                        Point(metric=metric, target=target, time=row.created_at, value=float(value))
                        for row, r in fresh
                        for metric, target, value in r.points
                        if value is not None
                    ]
                )
            break
        except IntegrityError:
            # Another run of the same pass committed some of these meanwhile:
            # look again (its rows are visible now) and write only the rest.
            if attempt:
                raise
            for row in rows:
                row.pk = None
    if written:
        results_recorded.send(sender=CheckResult, results=written)
    return written


def _not_yet_recorded(rows: list[CheckResult], results: Sequence[Result]) -> list[tuple[CheckResult, Result]]:
    keys = [row.dedupe_key for row in rows]
    seen = set(CheckResult.objects.filter(dedupe_key__in=keys).values_list("dedupe_key", flat=True))
    return [(row, r) for row, r in zip(rows, results, strict=True) if row.dedupe_key not in seen]
