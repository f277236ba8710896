"""hostexecs/dev-fullstack.sh: valid bash, and every script it runs exists and is executable.

Running it for real starts the whole pipeline and a Vite server that only Ctrl-C ends, which is the
developer's loop rather than a test's; what can break silently is a renamed script or a port file
written somewhere else, which these checks catch.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hostexecs" / "dev-fullstack.sh"


def test_it_is_valid_bash() -> None:
    assert SCRIPT.stat().st_mode & 0o111, "not executable"
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    subprocess.run([bash, "-n", str(SCRIPT)], check=True)


def test_every_script_it_runs_or_sources_exists() -> None:
    text = SCRIPT.read_text()
    used = set(re.findall(r"(?:\$ROOT/|\. )((?:scripts|hostexecs)/[\w.-]+\.sh)", text))
    assert used >= {"scripts/start_pipeline.sh", "scripts/_lib.sh", "scripts/_venv.sh", "hostexecs/dev-frontend.sh"}
    for rel in used:
        assert (ROOT / rel).is_file(), rel
    for rel in ("scripts/start_pipeline.sh", "hostexecs/dev-frontend.sh", "scripts/stop_pipeline.sh"):
        assert (ROOT / rel).stat().st_mode & 0o111, f"{rel} not executable"


def test_it_reads_the_api_port_where_start_pipeline_writes_it() -> None:
    port_file = '"$AITRADER_HOME/pids/backend.api.port"'
    assert port_file in (ROOT / "scripts" / "start_pipeline.sh").read_text()
    assert f"port_file={port_file}" in SCRIPT.read_text()
    # and dev-frontend.sh (which it runs) hands that address to Vite's proxy
    assert "AITRADER_PANEL_API" in (ROOT / "frontend" / "vite.config.ts").read_text()
    assert "ensure_venv()" in (ROOT / "scripts" / "_venv.sh").read_text()
