"""``aitrader model`` subcommands: see backend/model_cli/__init__.py."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def add_commands(msub: Any) -> dict[str, Callable[[argparse.Namespace, Any], int]]:
    return {}
