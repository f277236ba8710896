"""Service logs as JSON lines (AITRADER_LOG_JSON): one object per record with its extras and traceback."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

from common.logs import configure_logging
from tests.integration.harness import ROOT


def test_json_lines_carry_the_fields_extras_and_traceback():
    buf = io.StringIO()
    configure_logging("INFO", True, stream=buf)
    try:
        log = logging.getLogger("aitrader.test")
        log.info("intent %s blocked", "co-1", extra={"limit": "concentration", "qty": 5})
        log.debug("not at INFO")
        try:
            raise ValueError("bad tick")
        except ValueError:
            log.exception("handling failed")
    finally:
        configure_logging("INFO", False)
    first, second = (json.loads(line) for line in buf.getvalue().splitlines())
    assert first["message"] == "intent co-1 blocked" and first["level"] == "INFO" and first["logger"] == "aitrader.test"
    assert first["limit"] == "concentration" and first["qty"] == 5 and first["ts"].endswith("+00:00")
    assert second["level"] == "ERROR" and "ValueError: bad tick" in second["exc"]


def test_a_service_started_with_log_json_writes_json_lines(tmp_path):
    """A process set up as the services are (settings from the environment) logs JSON lines to stderr."""
    env = {"PATH": "/usr/bin:/bin", "AITRADER_LOG_JSON": "true", "AITRADER_HOME": str(tmp_path),
           "REDIS_URL": "redis://127.0.0.1:9/0", "AITRADER_MCP_PORT": "0"}
    p = subprocess.run([sys.executable, "-c", "import logging; from common.service import setup_logging; "
                        "from common.config import CommonSettings, load; c = load(CommonSettings); "
                        "setup_logging(c.log_level, c.log_json); logging.getLogger('svc').warning('up')"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stderr.strip().splitlines()[-1])
    assert rec["message"] == "up" and rec["level"] == "WARNING" and rec["logger"] == "svc"
