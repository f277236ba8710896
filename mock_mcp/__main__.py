"""``python -m mock_mcp``: see the package docstring (``--check`` probes the health key)."""

from __future__ import annotations

import sys

from common.service import main_entry


def _build(argv: list[str]):
    # Imported here so ``--check`` answers without loading the MCP SDK.
    from mock_mcp.service import build

    return build(argv)


if __name__ == "__main__":
    sys.exit(main_entry("mock_mcp", _build))
