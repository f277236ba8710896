"""frontend/nginx.conf — the panel image's nginx — run by a real nginx in front of a real API: the built
panel at /ui/ (deep links fall back to index.html, assets cached), `/` redirected there, the API's routes
proxied (login, an authorised read) and the /ws WebSocket upgraded through it.

The file is used as shipped but for what the container fixes and a test cannot: the listen port, the API's
address (``backend:8000`` on the compose network; an address needs no resolver) and the root folder; each
substitution must match exactly where expected, so a changed file fails here instead of being tested half.
Needs nginx (``apt-get install nginx-light``; scripts/test.sh installs it as root) and the panel build
(node/npm, as tests/frontend/test_panel.py); skips with the reason otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from tests.frontend.test_panel import FRONTEND, _npm, frontend  # noqa: F401 - the fixture
from tests.integration.harness import ROOT, Pipeline, free_port
from tests.integration.test_api_kill_switch import ADMIN_PW, ApiProcess

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def _conf(api_port: int, port: int, html: Path) -> str:
    text = (ROOT / "frontend" / "nginx.conf").read_text()
    for old, new in (("listen 8080;", f"listen 127.0.0.1:{port};"),
                     ("set $api http://backend:8000;", f"set $api http://127.0.0.1:{api_port};")):
        assert text.count(old) == 1, f"frontend/nginx.conf: expected exactly one `{old}`"
        text = text.replace(old, new)
    assert text.count("root /usr/share/nginx/html;") == 2
    return text.replace("root /usr/share/nginx/html;", f"root {html};")


@pytest.fixture
def panel_build(frontend):  # noqa: F811
    if not (FRONTEND / "dist" / "index.html").exists():
        build = _npm("run", "build")
        assert build.returncode == 0, f"build failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}"
    return FRONTEND / "dist"


def test_nginx_serves_the_panel_and_proxies_the_api_and_the_websocket(panel_build, redis_url, database_url, tmp_path,
                                                                     request):
    if NGINX is None:
        pytest.skip("no nginx binary: apt-get install -y nginx-light (the panel image's proxy config is tested with it)")
    prefix = tmp_path / "nginx"
    (prefix / "logs").mkdir(parents=True)
    # nginx's workers drop to an unprivileged user when started as root: the files must be readable by
    # anyone, as in the image, and pytest's tmp_path is not (0700)
    html = Path(tempfile.mkdtemp(prefix="aitrader-nginx-html-"))
    request.addfinalizer(lambda: shutil.rmtree(html, ignore_errors=True))
    html.chmod(0o755)
    shutil.copytree(panel_build, html / "ui")  # the image's layout: /usr/share/nginx/html/ui/
    for d in [html / "ui", *(x for x in (html / "ui").rglob("*") if x.is_dir())]:
        d.chmod(0o755)
    with Pipeline(redis_url, database_url, tmp_path / "home") as p:
        p.migrate()
        with ApiProcess(p) as api:
            port = free_port()
            (prefix / "site.conf").write_text(_conf(api.port, port, html))
            mime = "include /etc/nginx/mime.types;" if Path("/etc/nginx/mime.types").exists() else ""
            (prefix / "nginx.conf").write_text(
                f"pid {prefix}/nginx.pid;\nerror_log {prefix}/logs/error.log;\nevents {{}}\nhttp {{\n  {mime}\n"
                f"  access_log off;\n  client_body_temp_path {prefix}/body;\n  proxy_temp_path {prefix}/proxy;\n"
                f"  fastcgi_temp_path {prefix}/fcgi;\n  uwsgi_temp_path {prefix}/uwsgi;\n  scgi_temp_path {prefix}/scgi;\n"
                f"  include {prefix}/site.conf;\n}}\n")
            check = subprocess.run([NGINX, "-t", "-c", str(prefix / "nginx.conf"), "-p", str(prefix)],
                                   capture_output=True, text=True, check=False, timeout=30)
            assert check.returncode == 0, check.stderr
            proc = subprocess.Popen([NGINX, "-c", str(prefix / "nginx.conf"), "-p", str(prefix), "-g", "daemon off;"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                base = f"http://127.0.0.1:{port}"
                request.addfinalizer(lambda: print((prefix / "logs" / "error.log").read_text()[-3000:]))
                deadline = time.monotonic() + 15
                while True:
                    try:
                        httpx.get(f"{base}/ui/", timeout=1)
                        break
                    except httpx.HTTPError:
                        assert proc.poll() is None, proc.stderr.read().decode()
                        assert time.monotonic() < deadline, "nginx did not answer"
                        time.sleep(0.1)
                _check(base, panel_build)
            finally:
                proc.terminate()
                proc.wait(10)


def _check(base: str, dist: Path) -> None:
    index = (dist / "index.html").read_text()
    with httpx.Client(base_url=base, timeout=10) as c:
        r = c.get("/")
        assert r.status_code == 302 and r.headers["location"].endswith("/ui/")
        for path in ("/ui/", "/ui/jobs", "/ui/backtests/12"):  # deep links: the SPA's index
            r = c.get(path)
            assert r.status_code == 200 and r.text == index, path
            assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-cache"
        asset = max((dist / "assets").glob("*.js"), key=lambda f: f.stat().st_size)
        r = c.get(f"/ui/assets/{asset.name}", headers={"Accept-Encoding": "gzip"})
        assert r.status_code == 200 and r.content == asset.read_bytes()  # httpx undoes the gzip
        assert "immutable" in r.headers["cache-control"] and r.headers["content-encoding"] == "gzip"
        r = c.get(f"/ui/assets/{asset.name}", headers={"Accept-Encoding": "identity"})
        assert r.content == asset.read_bytes() and "content-encoding" not in r.headers
        assert c.get("/ui/assets/missing-file.js").status_code == 404

        health = c.get("/health")  # the API's, through the proxy
        assert health.status_code == 200 and health.json()["status"] == "ok"
        spec = c.get("/openapi.json", headers={"Accept-Encoding": "gzip"})  # the API's answers: never compressed
        assert len(spec.content) > 1024 and "content-encoding" not in spec.headers
        login = c.post("/auth/login", json={"username": "chief", "password": ADMIN_PW})
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        assert c.get("/orders").status_code == 401
        assert c.get("/orders", headers={"Authorization": f"Bearer {token}"}).status_code == 200

    with ws_connect(base.replace("http", "ws") + "/ws", open_timeout=10) as ws:
        ws.send(json.dumps({"token": token, "channels": ["heartbeats"]}))
        welcome = json.loads(ws.recv(timeout=10))
        assert welcome["channel"] == "system" and welcome["data"]["type"] == "welcome"
        assert welcome["data"]["user"] == "chief"
