# Create .venv with the project installed (sourced by quick-start.sh and test.sh).
# shellcheck shell=bash
ensure_venv() {
  local extras="${1:-}"
  local py="${PYTHON:-$(command -v python3.11 || command -v python3)}"
  "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
    || { echo "Python >= 3.11 is required (found $("$py" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2; exit 1; }
  if [ ! -x "$ROOT/.venv/bin/python" ]; then
    echo "creating .venv with $("$py" --version)" >&2
    "$py" -m venv "$ROOT/.venv"
  fi
  local stamp="$ROOT/.venv/.installed${extras:+-$extras}"
  if [ "${AITRADER_SKIP_INSTALL:-0}" != 1 ] && { [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; }; then
    echo "installing aitrader${extras:+[$extras]} into .venv (first run takes a minute)" >&2
    "$ROOT/.venv/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT${extras:+[$extras]}"
    touch "$stamp"
  fi
  export AITRADER_PYTHON="$ROOT/.venv/bin/python"
  export PATH="$ROOT/.venv/bin:$PATH"
}
