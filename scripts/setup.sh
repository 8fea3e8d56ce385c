#!/usr/bin/env bash
# Set up this Python to run the tests, the benchmarks and the headless runner against a real ComfyUI:
# the ComfyUI checkout under test (see pipelines/comfyui.py for where it is found), its requirements,
# and the pack's. Installs only what is missing: a second run takes seconds. torch is installed only
# when absent (a ComfyUI user's own torch is never replaced).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
say() { printf '[setup] %s\n' "$*"; }
installed=()
pip_install() {  # quiet, but a failure shows pip's whole output
  local log
  log=$(mktemp)
  if ! python3 -m pip install --quiet --progress-bar off "$@" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}
install_unmet() {  # install_unmet LABEL FILE... [--skip NAME...]: install the requirement lines not yet satisfied
  local label=$1 missing
  shift
  missing=$(python3 -m harness.comfy_env unmet "$@")
  if [ -n "$missing" ]; then
    say "installing $label: $(echo $missing)"
    # shellcheck disable=SC2086
    pip_install $missing
    installed+=($missing)
  fi
}

say "finding the ComfyUI under test (unpacking it the first time can take a minute)"
comfy=$(python3 -m harness.comfy_env locate)

if ! python3 -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('torch') and u.find_spec('torchvision')))"; then
  say "installing torch 2.14.1 and torchvision 0.29.1 (several GB the first time)"
  pip_install torch==2.14.1 torchvision==0.29.1
  installed+=(torch torchvision)
fi
install_unmet "ComfyUI's requirements" "$comfy/requirements.txt" --skip torch torchvision torchaudio
install_unmet "the pack's and the tests' requirements" requirements-dev.txt
missing=$(python3 -m harness.comfy_env unmet requirements-nodeps.txt)
if [ -n "$missing" ]; then
  say "installing without dependencies: $(echo $missing)"
  # shellcheck disable=SC2086
  pip_install --no-deps $missing
  installed+=($missing)
fi

version=$(python3 -c "from pipelines.comfyui import comfyui_version, find_comfyui; print(comfyui_version(find_comfyui()))")
browser=$(command -v chromium || true)
[ -n "$browser" ] || browser="none (the browser tests need Debian's chromium: apt-get install chromium)"
what="nothing new"
[ ${#installed[@]} -eq 0 ] || what="${#installed[@]} package(s)"
say "done in $((SECONDS - started)) s: installed $what; ComfyUI $version at $comfy; browser $browser"
