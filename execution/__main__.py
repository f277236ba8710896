"""``python -m execution``: run the execution gateway (``--check`` probes its health)."""

from __future__ import annotations

from common.config import CommonSettings, load
from common.service import main_entry
from execution.config import ExecutionSettings


def build(argv: list[str]):
    from execution.service import ExecutionGateway

    return ExecutionGateway(load(CommonSettings), load(ExecutionSettings))


if __name__ == "__main__":
    raise SystemExit(main_entry("execution", build))
