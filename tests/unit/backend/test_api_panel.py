"""The built control panel served by the API under /ui/ (backend/api/panel.py), never over an API route."""

from __future__ import annotations

from pathlib import Path

import pytest

INDEX = "<!doctype html><title>panel</title>"


@pytest.fixture
def built(tmp_path: Path) -> Path:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text(INDEX)
    (dist / "assets" / "app-1234.js").write_text("console.log('panel')")
    (dist / "favicon.svg").write_text("<svg/>")
    (tmp_path / "secret.txt").write_text("outside the build")
    return dist


def test_panel_routes_serve_the_build_and_fall_back_to_index(make_api, built):
    api = make_api(panel_dir=str(built))
    c = api.client
    r = c.get("/", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/ui/"
    for path in ("/ui", "/ui/", "/ui/live", "/ui/health", "/ui/models/x/1"):  # panel pages, reloads included
        r = c.get(path)
        assert r.status_code == 200 and r.text == INDEX, path
        assert r.headers["content-type"].startswith("text/html") and r.headers["cache-control"] == "no-cache"
    r = c.get("/ui/assets/app-1234.js")
    assert r.status_code == 200 and "javascript" in r.headers["content-type"] and "panel" in r.text
    assert c.get("/ui/favicon.svg").text == "<svg/>"
    assert c.get("/ui/assets/missing.js").status_code == 404
    assert c.get("/ui/%2e%2e/secret.txt").text == INDEX  # never a file outside the build


def test_assets_go_gzipped_and_cached_api_responses_never_compressed(make_api, built):
    big = "console.log('panel');\n" * 500  # ~11 KB: above the 1 KB below which compressing is not worth it
    (built / "assets" / "big-5678.js").write_text(big)
    api = make_api(panel_dir=str(built))
    c = api.client
    r = c.get("/ui/assets/big-5678.js", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip" and r.text == big
    assert int(r.headers["content-length"]) < len(big) // 10
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    r = c.get("/ui/assets/big-5678.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in r.headers and r.text == big
    r = c.get("/ui/assets/app-1234.js", headers={"Accept-Encoding": "gzip"})  # tiny: sent as is
    assert "content-encoding" not in r.headers
    assert c.get("/ui/assets/missing.js").headers.get("cache-control") is None  # a 404 is not cached
    assert c.get("/ui/", headers={"Accept-Encoding": "gzip"}).headers["cache-control"] == "no-cache"
    r = c.get("/openapi.json", headers={"Accept-Encoding": "gzip"})  # large JSON, still never compressed
    assert r.status_code == 200 and len(r.content) > 1024 and "content-encoding" not in r.headers


def test_panel_never_shadows_the_api(make_api, built):
    api = make_api(panel_dir=str(built))
    c = api.client
    assert c.get("/health").json()["status"] == "ok"
    r = c.get("/nope")  # unknown API paths stay the API's JSON 404
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert c.get("/kill-switch").status_code == 401
    paths = c.get("/openapi.json").json()["paths"]
    assert not any(p == "/" or p.startswith("/ui") for p in paths)


def test_no_build_no_panel_routes(make_api, tmp_path):
    api = make_api(panel_dir=str(tmp_path / "not-built"))
    r = api.client.get("/ui/live")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert api.client.get("/").status_code == 404
