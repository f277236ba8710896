"""``aitrader jobs list|show ID|cancel ID|submit TYPE|reap`` and ``aitrader worker``: jobs on the task queue.

``submit`` queues a job (``--payload`` JSON; the types and their payloads: docs/jobs.md) and
prints its id; ``cancel`` cancels a queued job at once or asks a running one to stop;
``reap`` ends or re-queues running jobs whose worker stopped renewing their lease (every
worker does this on its own too). ``aitrader worker`` is ``python -m backend.jobs.worker``.
Exit 0 on success, 1 when the job / database / queue says no, 2 for bad usage or configuration.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

__all__ = ["add_parsers", "run", "run_worker"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
_STATUSES = ("queued", "running", "completed", "failed", "cancelled")


def add_parsers(sub: Any) -> None:
    jp = sub.add_parser("jobs", help="jobs on the task queue: list, show, cancel, submit, reap")
    jsub = jp.add_subparsers(dest="action", required=True)
    lp = jsub.add_parser("list", help="jobs, newest first")
    lp.add_argument("--type", default=None, help="only jobs of this type")
    lp.add_argument("--status", choices=_STATUSES, default=None)
    lp.add_argument("--limit", type=int, default=50)
    sp = jsub.add_parser("show", help="one job: status, progress, payload, result or error")
    sp.add_argument("id", type=int)
    cp = jsub.add_parser("cancel", help="cancel a queued job now, or ask a running one to stop")
    cp.add_argument("id", type=int)
    qp = jsub.add_parser("submit", help="queue a job (a worker runs it)")
    qp.add_argument("type", help="suggestion, train, backtest ...")
    qp.add_argument("--payload", default="{}", help="the job's payload as a JSON object")
    rp = jsub.add_parser("reap", help="end or re-queue running jobs whose worker was lost")
    for p in (lp, sp, cp, qp, rp):
        p.add_argument("--json", action="store_true")
    wp = sub.add_parser("worker", help="run a job worker (python -m backend.jobs.worker)")
    wp.add_argument("--concurrency", type=int, default=None, help="jobs run at once (default AITRADER_JOBS_CONCURRENCY)")
    wp.add_argument("--queues", default=None, help="comma-separated queues (default AITRADER_JOBS_QUEUE)")


def run_worker(args: argparse.Namespace, _common: Any) -> int:
    from backend.jobs.worker import main

    argv = [*(["--concurrency", str(args.concurrency)] if args.concurrency is not None else []),
            *(["--queues", args.queues] if args.queues else [])]
    return main(argv)


def _default(o: Any) -> Any:
    return o.isoformat() if hasattr(o, "isoformat") else str(o)


def _dump(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=_default))


def _when(t: Any) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def format_job(j: dict[str, Any]) -> str:
    lines = [f"job {j['id']} {j['type']} {j['status']}  progress {j['progress']:.0%} {j['progress_note']}".rstrip(),
             (f"  by {j['created_by']} at {_when(j['created_at'])}; started {_when(j['started_at'])}; "
              f"finished {_when(j['finished_at'])}"),
             (f"  attempts {j['attempts']}, worker {j['worker'] or '-'}, lease {_when(j['heartbeat_at'])}, "
              f"task {j['task_id'] or '-'}" + ("; cancel requested" if j["cancel_requested"] else "")),
             f"  payload {json.dumps(j['payload'], default=_default)}"]
    if j["error"]:
        lines.append(f"  error: {j['error']}")
    if j["result"] is not None:
        lines.append(f"  result {json.dumps(j['result'], default=_default)}")
    return "\n".join(lines)


def run(args: argparse.Namespace, common: Any) -> int:
    import sqlalchemy as sa

    from backend import jobs
    from backend.jobs import store
    from backend.views import ViewError, open_database
    from common.config import ConfigError, load

    what = f"aitrader jobs {args.action}"
    try:
        settings = load(jobs.JobSettings)
        jobs.load_job_types(settings.extra_module_list)
    except (ConfigError, ImportError) as e:
        print(f"{what}: configuration error: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        engine = open_database(common.db_url)
    except ViewError as e:
        print(f"{what}: {e}", file=sys.stderr)
        return EXIT_FAIL
    queue = jobs.JobQueue(common, settings) if args.action in ("cancel", "submit", "reap") else None
    actor = f"cli:{getpass.getuser()}"
    try:
        if args.action == "list":
            rows = store.list_jobs(engine, kind=args.type, status=args.status, limit=max(1, args.limit))
            if args.json:
                _dump(rows)
                return EXIT_OK
            for j in rows:
                print(f"{j['id']:>6}  {j['type']:<11} {j['status']:<9} {j['progress']:>4.0%}  {j['created_by']:<20} "
                      f"{_when(j['created_at'])}  {(j['error'] or j['progress_note'])[:60]}")
            if not rows:
                print("no jobs")
            return EXIT_OK
        if args.action == "show":
            row = store.get(engine, args.id)
            if row is None:
                print(f"{what}: no job {args.id}", file=sys.stderr)
                return EXIT_FAIL
            if args.json:
                _dump(row)
            else:
                print(format_job(row))
            return EXIT_OK
        if args.action == "cancel":
            outcome, row = jobs.cancel(engine, args.id, actor, queue=queue)
            if args.json:
                _dump({"outcome": outcome, "job": row})
            else:
                print(f"job {args.id}: " + ("cancelled" if outcome == "cancelled" else
                                            "cancel requested; it stops at its next check point"))
            return EXIT_OK
        if args.action == "submit":
            try:
                payload = json.loads(args.payload)
            except json.JSONDecodeError as e:
                print(f"{what}: --payload is not JSON: {e}", file=sys.stderr)
                return EXIT_USAGE
            if not isinstance(payload, dict):
                print(f"{what}: --payload must be a JSON object", file=sys.stderr)
                return EXIT_USAGE
            job_id = jobs.submit(engine, args.type, payload, actor, queue=queue)
            if args.json:
                _dump({"id": job_id})
            else:
                print(f"job {job_id} queued ({args.type})")
            return EXIT_OK
        assert queue is not None
        done = jobs.reap(engine, queue=queue)
        if args.json:
            _dump(done)
        else:
            print("\n".join(f"job {d['id']} ({d['type']}): {d['action']}" for d in done) or "no job lost its worker")
        return EXIT_OK
    except (jobs.UnknownJobType, jobs.PayloadInvalid) as e:
        print(f"{what}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (jobs.JobNotFound, jobs.JobFinished, jobs.QueueUnavailable) as e:
        print(f"{what}: {f'no job {args.id}' if isinstance(e, jobs.JobNotFound) else e}", file=sys.stderr)
        return EXIT_FAIL
    except sa.exc.SQLAlchemyError as e:
        print(f"{what}: database error: {str(e).splitlines()[0]}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        if queue is not None:
            queue.close()
        engine.dispose()
