"""``python -m pattern_engine``: run the pattern engine (``--check`` probes its health key)."""

from common.service import main_entry
from pattern_engine.service import build


def main() -> int:
    return main_entry("pattern_engine", build)


if __name__ == "__main__":
    raise SystemExit(main())
