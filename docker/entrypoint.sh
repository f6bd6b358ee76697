#!/usr/bin/env bash
# The production image's entrypoint: one image, one process per container.
#
#   web                    gunicorn (docker/gunicorn.conf.py; GUNICORN_CMD_ARGS overrides it)
#   gateway [ARGS…]        the inference gateway (python -m modelhub.gateway; ARGS e.g. --workers 4)
#   worker QUEUES [ARGS…]  a Celery worker consuming QUEUES (comma-separated, of TASK_QUEUE_NAMES)
#   beat                   Celery beat: run exactly one in the whole deployment
#   migrate                apply migrations (and create missing schedules), then exit
#   manage ARGS…           python manage.py ARGS (createsuperuser, register_server, …)
#
# Every mode first waits for the database (docker/wait_for_db.py, at most WAIT_FOR_DB_S
# seconds, 120 by default). Only `migrate` migrates: the others also wait until no migration
# is pending, so a web or worker started beside a new release never runs on an old schema.
# The process is exec'd: it gets the container's signals (SIGTERM: a graceful stop).
# tests/deploy/test_entrypoint.py runs this script with a stand-in `python` on PATH.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log_level=${MODELHUB_LOG_LEVEL:-INFO}

usage() {
  echo "usage: entrypoint.sh web | gateway [ARGS…] | worker QUEUES [ARGS…] | beat | migrate | manage ARGS…" >&2
}

wait_for_db() {
  python "$here/wait_for_db.py" "$@"
}

# prometheus_client's multiprocess folder (modelhub/ops/metrics.py): gunicorn's workers, and a
# Celery worker's pool processes, each write their counters there and /metrics sums them. Unless
# one is given, each container gets its own, emptied at every start (a restarted container keeps
# /tmp, and files of processes gone would be summed again).
metrics_dir() {
  if [ -z "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
    export PROMETHEUS_MULTIPROC_DIR="${TMPDIR:-/tmp}/modelhub-metrics-$1"
    rm -rf "$PROMETHEUS_MULTIPROC_DIR"
  fi
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
}

mode=${1:-}
[ $# -gt 0 ] && shift
case "$mode" in
  web)
    wait_for_db --migrated
    metrics_dir web
    exec gunicorn modelhub.wsgi --config "$here/gunicorn.conf.py" "$@"
    ;;
  gateway)
    wait_for_db --migrated
    exec python -m modelhub.gateway --host 0.0.0.0 "$@"
    ;;
  worker)
    queues=${1:-}
    if [ -z "$queues" ] || [[ "$queues" == -* ]]; then
      echo "entrypoint: worker needs its queues first, e.g. 'worker checks,notify' (see TASK_QUEUE_NAMES in modelhub/settings.py)" >&2
      exit 2
    fi
    shift
    # Names the queues it is given (a typo would be a worker that silently consumes nothing).
    wait_for_db --migrated --queues "$queues"
    metrics_dir worker
    # -n: one node name per queue group, so `celery inspect` tells the groups apart.
    # -O fair with prefetch 1 (settings): a busy process takes no new message.
    exec celery -A modelhub worker -n "${queues//,/-}@%h" -Q "$queues" -O fair --loglevel "$log_level" "$@"
    ;;
  beat)
    # The schedules are rows (django-celery-beat's DatabaseScheduler): no schedule file to keep.
    wait_for_db --migrated
    exec celery -A modelhub beat --loglevel "$log_level" "$@"
    ;;
  migrate)
    wait_for_db
    exec python manage.py migrate --noinput "$@"
    ;;
  manage)
    wait_for_db
    exec python manage.py "$@"
    ;;
  "" | -h | --help | help)
    usage
    [ -n "$mode" ] && exit 0
    exit 2
    ;;
  *)
    echo "entrypoint: unknown mode '$mode'" >&2
    usage
    exit 2
    ;;
esac
