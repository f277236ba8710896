"""``aitrader model ...``: train, import, report (``research.py``); register, list, promote, retire,
show (``registry.py``). Each module adds its subcommands to the ``model`` parser and returns
handlers ``{subcommand: fn(args, common) -> exit code}``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from backend.model_cli import registry, research

__all__ = ["add_parser", "run"]

_HANDLERS: dict[str, Callable[[argparse.Namespace, Any], int]] = {}


def add_parser(sub: Any) -> None:
    mp = sub.add_parser("model", help="train, import, register, promote and report on ML models")
    msub = mp.add_subparsers(dest="model_cmd", required=True)
    _HANDLERS.update(research.add_commands(msub))
    _HANDLERS.update(registry.add_commands(msub))


def run(args: argparse.Namespace, common: Any) -> int:
    return _HANDLERS[args.model_cmd](args, common)
