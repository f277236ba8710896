"""The operations runbook explains every reject reason the gateway can give."""

from __future__ import annotations

from pathlib import Path

from execution.risk import RejectCode

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_every_reject_code_has_a_row_in_the_runbook():
    text = DOC.read_text()
    missing = [c.value for c in RejectCode if f"| `{c.value}` |" not in text]
    assert not missing, f"docs/operations.md: add a row to 'Reject reasons' for {missing}"
