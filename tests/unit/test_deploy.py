"""The deployment files, checked without a Docker engine: every compose file against the Compose
Specification's JSON schema and against rules of ours (commands name real modules, environment keys
are settings the services know and load, only the panel and the API publish ports, health checks and
restart policies, volumes declared), the Dockerfiles' sources exist and are not ignored, and the
launch scripts fail cleanly where they must (no Docker, missing or placeholder secrets)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
PRODUCTION = ROOT / "docker-compose.production.yml"
GPU = ROOT / "docker-compose.gpu.yml"
COMPOSE_FILES = (PRODUCTION, GPU)
IMAGE = "aitrader:"  # services running our Python image (Dockerfile)
PUBLISHED = {"backend", "frontend"}  # the only services with host ports
SECRETS = {"POSTGRES_PASSWORD", "AITRADER_API_JWT_SECRET", "AITRADER_ADMIN_PASSWORD"}
# Values the tests give the required secrets (real-looking, not placeholders).
TEST_ENV = {"POSTGRES_PASSWORD": "f3a9c1d2e4b5a6978812ab34cd56ef70",
            "AITRADER_API_JWT_SECRET": "kQ2v9Zx8Lr4Tn1Bw7Yc3Hs6Jd0Pf5Ug2Me8Ai4Ko1",
            "AITRADER_ADMIN_PASSWORD": "Vt8#qLm2-Rz5wXp"}

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


# ---------------------------------------------------------------------------------------------------
# helpers


def _settings_module():
    """scripts/gen_config_docs.py: its SECTIONS enumerate every settings class (and import them)."""
    spec = importlib.util.spec_from_file_location("gen_config_docs", ROOT / "scripts" / "gen_config_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _raw(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _variables(obj: Any, found: dict[str, set[str]] | None = None) -> dict[str, set[str]]:
    """Every ${VAR...} in the file: name -> the operators used with it ('', ':-', ':?', ...)."""
    found = {} if found is None else found
    if isinstance(obj, dict):
        for v in obj.values():
            _variables(v, found)
    elif isinstance(obj, list):
        for v in obj:
            _variables(v, found)
    elif isinstance(obj, str):
        for m in _VAR.finditer(obj):
            found.setdefault(m.group(1), set()).add(m.group(2) or "")
    return found


def _interpolate(obj: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}."""
    if isinstance(obj, dict):
        return {k: _interpolate(v, env) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_interpolate(v, env) for v in obj]
    if not isinstance(obj, str):
        return obj

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        val = env.get(name)
        if op in (":-", "-"):
            return val if (val if op == ":-" else val is not None) else arg
        if op in (":?", "?") and not (val if op == ":?" else val is not None):
            raise KeyError(f"{name}: {arg}")
        return val or ""

    return _VAR.sub(sub, obj.replace("$$", "\0")).replace("\0", "$")


def _compose(path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    return _interpolate(_raw(path), TEST_ENV if env is None else env)


def _merged(*paths: Path) -> dict[str, Any]:
    """Compose's merge of several files (mappings merged key by key, the later file winning)."""

    def merge(a: Any, b: Any) -> Any:
        if isinstance(a, dict) and isinstance(b, dict):
            out = dict(a)
            for k, v in b.items():
                out[k] = merge(a[k], v) if k in a else v
            return out
        return b

    doc: dict[str, Any] = {}
    for p in paths:
        doc = merge(doc, _compose(p))
    return doc


def _env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _python_module(argv: list[str]) -> str:
    assert argv[:2] == ["python", "-m"] and len(argv) >= 3, f"not `python -m MODULE`: {argv}"
    return argv[2]


def _is_ours(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).startswith(IMAGE)


def _module_exists(name: str) -> bool:
    spec = importlib.util.find_spec(name)
    if spec is None:
        return False
    if spec.submodule_search_locations is not None:  # a package: `python -m` runs its __main__
        return importlib.util.find_spec(f"{name}.__main__") is not None
    return True


# ---------------------------------------------------------------------------------------------------
# compose: the specification's schema


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_matches_the_compose_specification(path):
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft201909Validator.check_schema(schema)
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(_compose(path)), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_the_schema_check_catches_a_bad_file():
    bad = _compose(PRODUCTION)
    bad["services"]["redis"]["restart_policy"] = "always"  # not a service key
    bad["services"]["backend"]["ports"] = "8000:8000"  # must be a list
    validator = jsonschema.Draft201909Validator(json.loads(SCHEMA.read_text()))
    messages = [e.message for e in validator.iter_errors(bad)]
    assert len(messages) == 2, messages


def test_compose_refuses_to_start_without_each_secret():
    for missing in SECRETS:
        env = {k: v for k, v in TEST_ENV.items() if k != missing}
        with pytest.raises(KeyError, match=missing):
            _compose(PRODUCTION, env)
    required = {name for name, ops in _variables(_raw(PRODUCTION)).items() if ops & {":?", "?"}}
    assert required == SECRETS


# ---------------------------------------------------------------------------------------------------
# compose: our rules


def test_every_command_and_healthcheck_runs_a_module_that_exists():
    for path in COMPOSE_FILES:
        for name, svc in _merged(PRODUCTION, path)["services"].items():
            if not _is_ours(svc):
                continue
            module = _python_module(svc["command"])
            assert _module_exists(module), f"{path.name}: {name}: no module {module}"
            if name != "migrate":
                hc = svc["healthcheck"]["test"]
                assert hc[0] == "CMD", f"{name}: healthcheck must be exec form"
                assert _python_module(hc[1:]) == module, f"{name}: healthcheck checks another module"
                assert "--check" in hc


def test_every_environment_key_is_a_setting_and_every_value_loads(clean_env, tmp_path):
    gen = _settings_module()
    from common.config import CommonSettings, known_env_names, load

    known = known_env_names()
    by_module = {
        "mock_mcp": ["McpSettings"], "execution": ["ExecutionSettings"], "strategy_engine": ["StrategySettings"],
        "pattern_engine": ["PatternEngineSettings"], "backend.jobs.worker": ["JobSettings", "LlmSettings"],
        "backend.api": ["ApiSettings", "AdminSettings"], "alembic": [],
    }
    classes = {cls.__name__: cls for _, cls in gen.SECTIONS}
    clean_env.chdir(tmp_path)  # no .env of the checkout
    checked = 0
    for path in COMPOSE_FILES:
        for name, svc in _merged(PRODUCTION, path)["services"].items():
            if not _is_ours(svc):
                continue
            env = _env_of(svc)
            unknown = set(env) - known
            assert not unknown, f"{path.name}: {name}: environment keys no settings class knows: {unknown}"
            for k, v in env.items():  # the image's /app is this checkout
                clean_env.setenv(k, v.replace("/app/", f"{ROOT}/"))
            try:
                load(CommonSettings)
                for cls_name in by_module[_python_module(svc["command"])]:
                    settings = load(classes[cls_name])
                    for field in type(settings).model_fields:
                        if field in ("config", "strategies_path", "portfolio_path", "risk_file", "account_file"):
                            assert Path(getattr(settings, field)).is_file(), f"{name}: {field} not a file"
                    checked += 1
            finally:
                for k in env:
                    clean_env.delenv(k, raising=False)
    assert checked >= 8


def test_compose_variables_are_settings_or_documented_deploy_variables():
    from common.config import known_env_names

    _settings_module()
    known = known_env_names()
    deployment_doc = (ROOT / "docs" / "deployment.md").read_text()
    for path in COMPOSE_FILES:
        for var in _variables(_raw(path)):
            if var in known:
                continue
            assert var.startswith("DEPLOY_") or var == "POSTGRES_PASSWORD", f"{path.name}: ${{{var}}}"
            assert f"`{var}`" in deployment_doc, f"{var} (read by compose) is not documented in docs/deployment.md"


def test_only_the_panel_and_the_api_publish_ports_on_loopback_by_default():
    services = _merged(PRODUCTION, GPU)["services"]
    assert {n for n, s in services.items() if s.get("ports")} == PUBLISHED
    for name in PUBLISHED:
        for spec in services[name]["ports"]:
            assert str(spec).startswith("127.0.0.1:"), f"{name}: {spec} must bind DEPLOY_BIND (127.0.0.1)"
    assert services["backend"]["ports"] == ["127.0.0.1:8000:8000"]
    assert services["frontend"]["ports"] == ["127.0.0.1:8080:8080"]


def test_health_checks_restart_policies_dependencies_and_volumes():
    for path in COMPOSE_FILES:
        doc = _merged(PRODUCTION, path)
        services = doc["services"]
        declared = set(doc.get("volumes") or {})
        for name, svc in services.items():
            for dep, cond in (svc.get("depends_on") or {}).items():
                assert dep in services, f"{name} depends on unknown {dep}"
                if dep == "migrate":
                    assert cond["condition"] == "service_completed_successfully"
            for vol in svc.get("volumes") or []:
                source = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source", "")
                if source and not source.startswith((".", "/", "~")):
                    assert source in declared, f"{path.name}: {name}: volume {source} not declared"
            if name == "migrate":
                assert svc["restart"] == "no" and "healthcheck" not in svc
                continue
            assert svc.get("restart") in ("always", "unless-stopped", "on-failure"), f"{name}: no restart policy"
            assert svc.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
            if _is_ours(svc):
                assert "migrate" in svc["depends_on"], f"{name} must wait for the migrations"
        redis = " ".join(services["redis"]["command"])
        assert "--appendonly yes" in redis and "--maxmemory-policy noeviction" in redis


CONSUMERS = {"mock_mcp", "execution", "strategy_engine", "pattern_engine"}  # bus consumer groups' members


def test_every_bus_consumer_keeps_its_consumer_name_when_its_container_is_recreated():
    """The consumer name is AITRADER_INSTANCE, else the host name, which compose makes the container id: a
    recreated container would come back as a new consumer and its entries wait AITRADER_CLAIM_IDLE_MS."""
    for path in COMPOSE_FILES:
        services = _merged(PRODUCTION, path)["services"]
        for name, svc in services.items():
            if _is_ours(svc) and _python_module(svc["command"]) in CONSUMERS:
                assert svc.get("hostname") or _env_of(svc).get("AITRADER_INSTANCE"), f"{path.name}: {name}"
        names = [svc.get("hostname") for svc in services.values() if svc.get("hostname")]
        assert len(names) == len(set(names)), names


def test_services_reached_over_the_network_listen_on_every_interface():
    """Inside a container 127.0.0.1 is the container itself: the MCP server, the API and /metrics listen on
    0.0.0.0 (then the MCP SDK's DNS-rebinding check, which it enables only for loopback hosts, lets the
    strategy engine's `Host: mock_mcp:8765` through), and the others reach them by service name."""
    services = _compose(PRODUCTION)["services"]
    assert _env_of(services["mock_mcp"])["AITRADER_MCP_HOST"] == "0.0.0.0"
    assert _env_of(services["backend"])["AITRADER_API_HOST"] == "0.0.0.0"
    mcp_port = _env_of(services["mock_mcp"])["AITRADER_MCP_PORT"]
    for name, svc in services.items():
        if _is_ours(svc):
            env = _env_of(svc)
            assert env["AITRADER_METRICS_HOST"] == "0.0.0.0"
            assert env["REDIS_URL"].startswith("redis://redis:") and "@postgres:5432/" in env["DATABASE_URL"]
            if "AITRADER_SE_MCP_URL" in env:
                assert env["AITRADER_SE_MCP_URL"] == f"http://mock_mcp:{mcp_port}/mcp", name


def test_gpu_override_reserves_a_gpu_and_runs_tensorrt_with_a_cache_volume():
    gpu = _compose(GPU)
    pe = gpu["services"]["pattern_engine"]
    assert set(gpu["services"]) == {"pattern_engine"}
    dev = pe["deploy"]["resources"]["reservations"]["devices"][0]
    assert dev["driver"] == "nvidia" and "gpu" in dev["capabilities"]
    assert pe["build"]["args"] == {"VARIANT": "gpu", "EXTRAS": "gpu"}
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r"^gpu = \[", pyproject, re.MULTILINE), "the gpu extra the image installs"
    assert "tensorrt-cache:/var/cache/aitrader/tensorrt" in pe["volumes"]
    cfg = yaml.safe_load((ROOT / "config" / "pattern.gpu.yml").read_text())
    onnx = [d for d in cfg["detectors"].values() if d.get("type") == "onnx"]
    assert onnx and all(d["backend"] == "tensorrt" for d in onnx)
    assert all(d["backend_options"]["cache_dir"] == "/var/cache/aitrader/tensorrt" for d in onnx)
    assert pe["environment"]["AITRADER_PE_CONFIG"] == "/app/config/pattern.gpu.yml"


def test_gpu_pattern_file_is_the_cpu_one_but_for_the_model_backend():
    from pattern_engine.pattern_config import load_pattern_config

    load_pattern_config(ROOT / "config" / "pattern.gpu.yml")  # valid as a pattern file
    cpu = yaml.safe_load((ROOT / "config" / "pattern.yml").read_text())
    gpu = yaml.safe_load((ROOT / "config" / "pattern.gpu.yml").read_text())
    for cfg in (cpu, gpu):
        for d in cfg["detectors"].values():
            if d.get("type") == "onnx":
                d.pop("backend", None)
                d.pop("backend_options", None)
    assert gpu == cpu, "config/pattern.gpu.yml drifted from config/pattern.yml: copy the change over"


def test_nginx_proxies_the_api_service_and_the_websocket():
    conf = (ROOT / "frontend" / "nginx.conf").read_text()
    services = _compose(PRODUCTION)["services"]
    port = _env_of(services["backend"])["AITRADER_API_PORT"]
    assert f"set $api http://backend:{port};" in conf
    assert "location = /ws" in conf and "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "location /ui/" in conf
    assert services["frontend"]["build"]["dockerfile"] == "frontend/Dockerfile"


# ---------------------------------------------------------------------------------------------------
# Dockerfiles


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def _ignored(rel: str, patterns: list[str]) -> bool:
    first = rel.strip("/").split("/")[0]
    return any(p.strip("/") in (first, rel.strip("/")) for p in patterns)


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "frontend/Dockerfile"])
def test_dockerfile_copies_files_that_exist_and_are_not_ignored(dockerfile):
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    ins = _instructions(ROOT / dockerfile)
    stages = {m.group(1) for op, rest in ins if op == "FROM"
              for m in [re.search(r"\bAS\s+(\S+)", rest, re.IGNORECASE)] if m}
    copies = 0
    for op, rest in ins:
        if op in ("COPY", "ADD"):
            parts = shlex.split(rest)
            flags = [p for p in parts if p.startswith("--")]
            paths = [p for p in parts if not p.startswith("--")]
            src = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            if src is not None:
                assert src in stages, f"{dockerfile}: COPY --from={src}: no such stage"
                continue
            for s in paths[:-1]:
                assert (ROOT / s).exists(), f"{dockerfile}: COPY {s}: not in the repository"
                assert not _ignored(s, patterns), f"{dockerfile}: COPY {s}: excluded by .dockerignore"
                copies += 1
        if op == "FROM" and "${VARIANT}" in rest:
            base = rest.split()[0]
            for variant in ("cpu", "gpu"):
                assert base.replace("${VARIANT}", variant) in stages, f"{dockerfile}: {base} for {variant}"
    assert copies >= 3


def test_python_image_installs_the_project_and_checks_every_service_imports():
    text = (ROOT / "Dockerfile").read_text()
    m = re.search(r'python -c "import ([^"]+)"', text)
    assert m, "the build imports the services once"
    for module in (s.strip() for s in m.group(1).split(",")):
        assert importlib.util.find_spec(module) is not None, module
    for pkg in ("common", "tick_replay", "pattern_engine", "strategy_engine", "execution", "mock_mcp", "backend"):
        assert f"COPY {pkg}/ {pkg}/" in text, f"the image lacks {pkg}/"
    for needed in ("alembic/", "alembic.ini", "config/"):
        assert needed in text


def test_every_volume_mounted_on_our_image_is_a_folder_the_image_gives_its_user():
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    runtime = text[text.index("AS runtime\n"):]
    made = set(re.search(r"mkdir -p ([^&]+)", runtime).group(1).split())
    owned = re.search(r"chown -R aitrader:aitrader ([^&\n]+)", runtime).group(1).split()
    assert "USER aitrader" in runtime
    targets = set()
    for path in COMPOSE_FILES:
        for name, svc in _merged(PRODUCTION, path)["services"].items():
            if _is_ours(svc):
                targets |= {v.split(":")[1] for v in svc.get("volumes") or [] if isinstance(v, str)}
    assert targets, "no volumes on our services?"
    for target in targets:
        assert target in made, f"{target}: mounted by compose but not made in the image (it would be root's)"
        assert any(target == o or target.startswith(o.rstrip("/") + "/") for o in owned), f"{target} not chowned"


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_build_context():
    patterns = {p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()}
    for must in (".venv", "node_modules", "**/node_modules", "var", "data", ".env", ".env.*", ".git"):
        assert must in patterns, f".dockerignore must exclude {must}"


# ---------------------------------------------------------------------------------------------------
# launch scripts


NEW_SCRIPTS = ["hostexecs/production.sh", "scripts/dev_up.sh", "scripts/scale.sh", "scripts/stop_pipeline.sh",
               "scripts/start_pipeline.sh", "hostexecs/quick-start.sh", "hostexecs/dev-frontend.sh",
               "hostexecs/dev-fullstack.sh"]


@pytest.mark.parametrize("script", NEW_SCRIPTS)
def test_scripts_parse_and_are_executable(script):
    path = ROOT / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    p = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr


def _no_docker_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """PATH with bash's basics but no docker (a folder of links to the tools the scripts use)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("bash", "sed", "tr", "find", "cat", "dirname", "od", "mkdir", "env", "grep"):
        found = next((Path(d) / tool for d in ("/usr/bin", "/bin") if (Path(d) / tool).exists()), None)
        if found and not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(found)
    return {"PATH": str(bin_dir), "HOME": str(tmp_path), "DEPLOY_ENV_FILE": str(tmp_path / "none"), **extra}


def _production(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "hostexecs" / "production.sh"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False, timeout=30)


@pytest.mark.parametrize("cmd", ["up", "down", "ps", "logs"])
def test_production_without_docker_fails_with_a_clear_message(tmp_path, cmd):
    p = _production([cmd], _no_docker_env(tmp_path, **TEST_ENV))
    assert p.returncode == 1
    assert "docker compose is not available" in p.stderr and "scripts/dev_up.sh" in p.stderr


def test_production_check_names_a_missing_secret(tmp_path):
    for missing in sorted(SECRETS):
        env = _no_docker_env(tmp_path, **{k: v for k, v in TEST_ENV.items() if k != missing})
        p = _production(["check"], env)
        assert p.returncode == 1 and f"{missing} is not set" in p.stderr, p.stderr


def test_production_check_refuses_the_placeholders_the_settings_refuse(tmp_path):
    from common.config import _PLACEHOLDERS, is_placeholder

    for value in sorted(_PLACEHOLDERS) + ["<generate me>", "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"]:
        assert is_placeholder(value)
        env = _no_docker_env(tmp_path, **{**TEST_ENV, "AITRADER_API_JWT_SECRET": value})
        p = _production(["check"], env)
        assert p.returncode == 1 and "AITRADER_API_JWT_SECRET looks like a placeholder" in p.stderr, (value, p.stderr)
    short = _production(["check"], _no_docker_env(tmp_path, **{**TEST_ENV, "AITRADER_ADMIN_PASSWORD": "Ab3$x"}))
    assert short.returncode == 1 and "AITRADER_ADMIN_PASSWORD is too short" in short.stderr
    unsafe = _production(["check"], _no_docker_env(tmp_path, **{**TEST_ENV, "POSTGRES_PASSWORD": "a@b/c:d" * 4}))
    assert unsafe.returncode == 1 and "URL-safe" in unsafe.stderr


def test_production_check_passes_with_real_secrets_and_reads_a_private_env_file(tmp_path):
    p = _production(["check"], _no_docker_env(tmp_path, **TEST_ENV))
    assert p.returncode == 0, p.stderr
    assert "secrets set and not placeholders" in p.stdout and "docker compose not found" in p.stdout
    env_file = tmp_path / "prod.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in TEST_ENV.items()).replace("$", "\\$"))
    env_file.chmod(0o644)
    loose = _production(["check"], _no_docker_env(tmp_path, DEPLOY_ENV_FILE=str(env_file)))
    assert loose.returncode == 1 and "chmod 600" in loose.stderr
    env_file.chmod(0o600)
    ok = _production(["check"], _no_docker_env(tmp_path, DEPLOY_ENV_FILE=str(env_file)))
    assert ok.returncode == 0, ok.stderr


def test_production_secret_list_matches_the_compose_file():
    script = (ROOT / "hostexecs" / "production.sh").read_text()
    assert set(re.findall(r"^\s*need_secret (\w+)", script, re.MULTILINE)) == SECRETS
    placeholders = re.search(r'^PLACEHOLDERS=" (.*) "$', script, re.MULTILINE).group(1).split()
    from common.config import _PLACEHOLDERS

    assert set(placeholders) == _PLACEHOLDERS


def test_dev_up_with_docker_requested_but_absent_says_so(tmp_path):
    p = subprocess.run(["bash", str(ROOT / "scripts" / "dev_up.sh"), "--docker"], cwd=ROOT,
                       env=_no_docker_env(tmp_path), capture_output=True, text=True, check=False, timeout=30)
    assert p.returncode == 1 and "--docker needs Docker" in p.stderr


def test_compose_spec_schema_is_vendored_with_its_origin():
    note = (ROOT / "tests" / "data" / "README.md").read_text()
    assert "compose-spec.json" in note and "Apache" in note
    assert json.loads(SCHEMA.read_text())["title"] == "Compose Specification"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
