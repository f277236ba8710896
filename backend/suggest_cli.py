"""``aitrader suggest "PROMPT" [--json] [--provider offline|openai]``: run one suggestion job and print it.

Advice only: the job reads the account over MCP and the recent signals, asks the LLM
provider and stores the run (``suggestions`` table); it places no order. Exit 0 when the
run completed, 1 when it failed (the reason is printed and stored), 2 for bad usage or
configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import textwrap
from typing import Any

__all__ = ["add_parser", "run"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
_TABLES = ("jobs", "suggestions")


def add_parser(sub: Any) -> None:
    sp = sub.add_parser("suggest", help="advice on the account from the LLM provider (never places orders)",
                        description=__doc__.split("\n\n")[1].replace("\n", " "))
    sp.add_argument("prompt", help='what to look at, e.g. "scan my portfolio" or "what about BTCUSDT?"')
    sp.add_argument("--provider", choices=["offline", "openai"], default=None,
                    help="offline: deterministic rules (default unless AITRADER_LLM_PROVIDER says otherwise); "
                         "openai: the OpenAI-compatible server at AITRADER_LLM_URL")
    sp.add_argument("--json", action="store_true", help="print the stored run as JSON")


def _default(o: Any) -> Any:
    return o.isoformat() if hasattr(o, "isoformat") else str(o)


def format_run(rec: dict[str, Any]) -> str:
    """A stored run as text: a header line, the suggestions as a table, the summary."""
    head = (f"suggestion run {rec['id']} {rec['status']} ({rec['provider']}/{rec['model']}, "
            f"context {rec['context_digest'][:12] or '-'})")
    if rec["status"] != "completed":
        return f"{head}\n{rec['error']}"
    rows = [[s["symbol"], s["action"], s["size"], s["size_unit"], f"{s['confidence']:.2f}", s["rationale"]]
            for s in rec["suggestions"]]
    headers = ["SYMBOL", "ACTION", "SIZE", "UNIT", "CONF", "RATIONALE"]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers[:-1])]
    lead = sum(widths) + 2 * len(widths)
    lines = [head, "  ".join(h.ljust(w) for h, w in zip(headers[:-1], widths)) + "  RATIONALE"]
    for r in rows:
        wrapped = textwrap.wrap(r[-1], width=max(40, 150 - lead)) or [""]
        lines.append("  ".join(c.rjust(w) if i in (2, 4) else c.ljust(w) for i, (c, w) in
                               enumerate(zip(r[:-1], widths))) + "  " + wrapped[0])
        lines += [" " * lead + w for w in wrapped[1:]]
    if not rows:
        lines.append("(no suggestions)")
    lines.append(f"summary: {rec['summary']}")
    lines.append("advice only: nothing was ordered")
    return "\n".join(lines)


def run(args: argparse.Namespace, common: Any) -> int:
    import sqlalchemy as sa

    from backend.views import ViewError, open_database
    from common.config import ConfigError, load
    from strategy_engine.config import StrategySettings
    from strategy_engine.suggestions.config import LlmSettings
    from strategy_engine.suggestions.job import SuggestionService, check_prompt

    what = "aitrader suggest"
    try:
        prompt = check_prompt(args.prompt)
    except ValueError as e:
        print(f"{what}: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        llm, broker = load(LlmSettings), load(StrategySettings)
    except ConfigError as e:
        print(f"{what}: configuration error: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        engine = open_database(common.db_url)
    except ViewError as e:
        print(f"{what}: {e}", file=sys.stderr)
        return EXIT_FAIL
    try:
        missing = [t for t in _TABLES if t not in set(sa.inspect(engine).get_table_names())]
        if missing:
            print(f"{what}: database not migrated (missing tables {', '.join(missing)}): "
                  "run scripts/run_migrations.sh", file=sys.stderr)
            return EXIT_FAIL
        svc = SuggestionService(engine, llm, broker, common.redis_url)
        try:
            rec = asyncio.run(svc.suggest(prompt, f"cli:{getpass.getuser()}", args.provider))
        except ConfigError as e:
            print(f"{what}: configuration error: {e}", file=sys.stderr)
            return EXIT_USAGE
        except sa.exc.SQLAlchemyError as e:
            print(f"{what}: database error: {str(e).splitlines()[0]}", file=sys.stderr)
            return EXIT_FAIL
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(rec, indent=2, default=_default))
    else:
        print(format_run(rec))
    return EXIT_OK if rec["status"] == "completed" else EXIT_FAIL
