"""Wait until the database answers (and, with --migrated, has no pending migration).

The entrypoint (docker/entrypoint.sh) runs this before every process: in Compose and
Kubernetes the database may start after ModelHub, and a web or worker must not run on a
schema its release does not expect. It gives up after WAIT_FOR_DB_S seconds (120) with
an error naming what was missing. --queues also refuses a queue no task is routed to
(settings.TASK_QUEUE_NAMES): a worker on a misspelled queue would consume nothing.
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the app's root (/app)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--migrated", action="store_true", help="also wait until no migration is pending")
    parser.add_argument("--queues", help="comma-separated Celery queues to check against TASK_QUEUE_NAMES")
    args = parser.parse_args()
    try:
        limit = float(os.environ.get("WAIT_FOR_DB_S", "120"))
    except ValueError:
        print(f"wait_for_db: WAIT_FOR_DB_S={os.environ['WAIT_FOR_DB_S']!r} is not a number of seconds", file=sys.stderr)
        return 2

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelhub.settings")
    import django

    django.setup()  # a bad setting stops here, naming the variable
    from django.conf import settings
    from django.db import DEFAULT_DB_ALIAS, connections
    from django.db.migrations.executor import MigrationExecutor
    from django.db.utils import Error as DatabaseError

    if args.queues is not None:
        unknown = sorted({q.strip() for q in args.queues.split(",")} - set(settings.TASK_QUEUE_NAMES))
        if unknown:
            known = ", ".join(settings.TASK_QUEUE_NAMES)
            print(f"wait_for_db: unknown queue(s) {', '.join(unknown)}: the queues are {known}", file=sys.stderr)
            return 2

    connection = connections[DEFAULT_DB_ALIAS]
    where = f"{connection.vendor} database {connection.settings_dict.get('NAME')!s}"
    host = connection.settings_dict.get("HOST")
    if host:
        where += f" on {host}:{connection.settings_dict.get('PORT') or 'default port'}"
    deadline = time.monotonic() + limit
    said = None
    while True:
        try:
            connection.ensure_connection()
            if not args.migrated:
                return 0
            executor = MigrationExecutor(connection)
            pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
            if not pending:
                return 0
            problem = f"{len(pending)} migration(s) not applied yet, e.g. {pending[0][0]} (run the migrate mode)"
        except DatabaseError as exc:
            connection.close()  # a failed connection is not reused by the next try
            problem = f"cannot connect: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        if time.monotonic() >= deadline:
            print(f"wait_for_db: gave up after {limit:g} s: {where}: {problem}", file=sys.stderr)
            return 1
        if problem != said:  # once per change, not once a second
            print(f"wait_for_db: waiting for the {where}: {problem}", file=sys.stderr)
            said = problem
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


if __name__ == "__main__":
    sys.exit(main())
