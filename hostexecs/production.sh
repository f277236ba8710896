#!/usr/bin/env bash
# The production stack through Docker Compose (docker-compose.production.yml; docs/deployment.md).
#
#   hostexecs/production.sh check            # the secrets set and not placeholders (+ `compose config` with Docker)
#   hostexecs/production.sh up [--gpu]       # build the images, start everything (--gpu: + docker-compose.gpu.yml)
#   hostexecs/production.sh down [--gpu]     # stop and remove the containers (the named volumes stay)
#   hostexecs/production.sh ps | logs [SERVICE...] [--gpu]
#   hostexecs/production.sh scale-workers N  # N job workers
#
# Secrets come from the environment or from the file named by DEPLOY_ENV_FILE (default .env.production,
# mode 0600, never committed): POSTGRES_PASSWORD, AITRADER_API_JWT_SECRET, AITRADER_ADMIN_PASSWORD.
# A missing, short or placeholder value (changeme, secret, password, <...>, xxx) stops here, before compose.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "production.sh: $*" >&2; exit 1; }

cmd="${1:-}"; [ -n "$cmd" ] || usage; shift
files=(-f docker-compose.production.yml)
args=()
for a in "$@"; do
  if [ "$a" = "--gpu" ]; then files+=(-f docker-compose.gpu.yml); else args+=("$a"); fi
done

env_file="${DEPLOY_ENV_FILE:-$ROOT/.env.production}"
if [ -f "$env_file" ]; then
  if [ -n "$(find "$env_file" -perm /077 2>/dev/null)" ]; then
    die "$env_file is readable by others: chmod 600 $env_file"
  fi
  set -a; . "$env_file"; set +a
fi

# The same words common.config refuses for a secret setting (tests/unit/test_deploy.py keeps them in step).
PLACEHOLDERS=" changeme change-me change_me placeholder secret password xxx todo your-secret-here "
is_placeholder() {
  local v; v="$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]' | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')"
  case "$PLACEHOLDERS" in *" $v "*) return 0 ;; esac
  case "$v" in "<"*) return 0 ;; esac
  [ "${#v}" -ge 3 ] && [ -z "${v//x/}" ]
}
need_secret() {  # NAME MIN_LENGTH HINT
  local name="$1" min="$2" hint="$3" v="${!1:-}"
  [ -n "$v" ] || die "$name is not set ($hint)"
  if is_placeholder "$v"; then die "$name looks like a placeholder: set a real value ($hint)"; fi
  [ "${#v}" -ge "$min" ] || die "$name is too short (at least $min characters; $hint)"
}
check_secrets() {
  need_secret POSTGRES_PASSWORD 16 "e.g. openssl rand -hex 24"
  case "$POSTGRES_PASSWORD" in *[!A-Za-z0-9._~-]*)
    die "POSTGRES_PASSWORD must be URL-safe (it goes into DATABASE_URL): letters, digits, . _ ~ - (e.g. openssl rand -hex 24)" ;;
  esac
  need_secret AITRADER_API_JWT_SECRET 32 "e.g. openssl rand -base64 48"
  need_secret AITRADER_ADMIN_PASSWORD 12 "the first admin's password"
  if [ -n "${AITRADER_LLM_API_KEY:-}" ] && is_placeholder "$AITRADER_LLM_API_KEY"; then
    die "AITRADER_LLM_API_KEY looks like a placeholder"
  fi
  if [ -n "${AITRADER_BROKER_TOKEN_KEY:-}" ] && is_placeholder "$AITRADER_BROKER_TOKEN_KEY"; then
    die "AITRADER_BROKER_TOKEN_KEY looks like a placeholder"
  fi
}
have_compose() { command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; }
need_compose() {
  have_compose || die "docker compose is not available: install Docker Engine with the compose plugin
(https://docs.docker.com/engine/install/), or run the stack without Docker: scripts/dev_up.sh"
}
compose() { docker compose "${files[@]}" "$@"; }

case "$cmd" in
  check)
    check_secrets
    echo "production.sh: secrets set and not placeholders"
    if have_compose; then compose config -q && echo "production.sh: compose files valid ($(docker compose version --short))"
    else echo "production.sh: docker compose not found (needed for up/down/ps/logs)"; fi
    ;;
  up)
    need_compose; check_secrets
    compose build "${args[@]}"
    compose up -d --wait "${args[@]}"
    compose ps
    echo "panel: http://${DEPLOY_BIND:-127.0.0.1}:${DEPLOY_PANEL_PORT:-8080}/ui/   API: http://${DEPLOY_BIND:-127.0.0.1}:${DEPLOY_API_PORT:-8000}/docs"
    ;;
  down) need_compose; compose down "${args[@]}" ;;
  ps) need_compose; compose ps "${args[@]}" ;;
  logs) need_compose; compose logs --tail=200 "${args[@]}" ;;
  scale-workers)
    n="${args[0]:-}"; [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] || die "scale-workers N: N must be a number >= 1"
    need_compose; check_secrets
    compose up -d --wait --no-recreate --scale "worker=$n" worker
    ;;
  -h|--help|help) usage ;;
  *) echo "production.sh: unknown command '$cmd'" >&2; usage ;;
esac
