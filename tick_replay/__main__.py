"""``python -m tick_replay``: replay tick files or the synthetic market into the bus."""

from tick_replay.cli import run

raise SystemExit(run())
