"""Sample retention: blocks whose newest sample is past MONITORING_SAMPLE_RETENTION_DAYS go,
in batches, with labels past it; newer ones stay whole."""

from datetime import timedelta

import numpy as np
import pytest

from modelhub.audit.actors import Actor
from modelhub.audit.models import Source
from modelhub.monitoring.models import PredictionLabel, SampleBlock
from modelhub.monitoring.sampling import prune_samples, record_labels
from tests.monitoring.test_drift import END, START, digits, feed  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db


def test_prune_deletes_old_blocks_and_labels_in_batches_and_keeps_the_rest(digits, settings):  # noqa: F811
    settings.MONITORING_SAMPLE_RETENTION_DAYS = 7
    settings.RETENTION_BATCH_SIZE = 2  # several batches for the five old blocks
    rng = np.random.default_rng(0)
    x, y = rng.random((400, 64), dtype=np.float32), rng.integers(0, 10, 400)
    for prefix in "abcdefg":  # one block per call
        feed(digits, x[:50], y[:50], prefix=prefix)
    blocks = list(SampleBlock.objects.order_by("pk"))
    assert len(blocks) == 7
    now = END + timedelta(days=30)
    old, new = blocks[:5], blocks[5:]
    SampleBlock.objects.filter(pk__in=[b.pk for b in new]).update(
        first_time=now - timedelta(days=1), last_time=now - timedelta(days=1)
    )
    record_labels(digits.model, [("a0", "3"), ("f0", "4")], Actor(source=Source.CLI))
    PredictionLabel.objects.filter(request_id="a0").update(created_at=START)
    PredictionLabel.objects.filter(request_id="f0").update(created_at=now)

    assert prune_samples(now=now) == len(old)

    assert sorted(SampleBlock.objects.values_list("pk", flat=True)) == [b.pk for b in new]
    assert list(PredictionLabel.objects.values_list("request_id", flat=True)) == ["f0"]
    assert prune_samples(now=now) == 0  # idempotent
