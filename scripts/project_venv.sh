# Sourced by .ci/run and scripts/up.sh: create (once) or reuse the project's virtual environment
# at $VTLA_VENV (default: .venv in the repository root) and activate it. Needs only Python >= 3.10;
# on Debian/Ubuntu, where venv is a separate package (PEP 668 refuses system-wide pip installs),
# python3-venv is installed with apt when running as root.
vtla_python=${PYTHON:-python3}
if ! "$vtla_python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "vtla-bridge needs Python >= 3.10 ($vtla_python is $("$vtla_python" --version 2>&1)); set PYTHON=..." >&2
  return 1 2>/dev/null || exit 1
fi
VTLA_VENV=${VTLA_VENV:-$(pwd)/.venv}
if [ ! -x "$VTLA_VENV/bin/python" ]; then
  if ! "$vtla_python" -c 'import ensurepip, venv' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      ver=$("$vtla_python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "python$ver-venv" >/dev/null \
        || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    else
      echo "Python's venv module is missing: sudo apt-get install python3-venv, then run this again" >&2
      return 1 2>/dev/null || exit 1
    fi
  fi
  echo "== creating the project virtual environment $VTLA_VENV"
  "$vtla_python" -m venv "$VTLA_VENV"
  "$VTLA_VENV/bin/python" -m pip install -q --upgrade pip
fi
# shellcheck disable=SC1091
. "$VTLA_VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1
