#!/usr/bin/env bash
# Sets up everything shadowfs needs on a Debian machine (as root), then runs one job:
#   bash scripts/bootstrap.sh demo    mount the embedded default config, run a workload, unmount
#   bash scripts/bootstrap.sh test    the whole test suite (ruff, mypy, pytest)
#   bash scripts/bootstrap.sh setup   only the set-up
# Only what is missing is installed, and each install is logged.
set -euo pipefail
job="${1:-setup}"
shift || true
top="$(cd "$(dirname "$0")/.." && pwd)"
cd "$top"
log() { printf '[bootstrap] %s\n' "$*" >&2; }

need_pkgs=()
probe() {  # probe PACKAGE TEST-COMMAND...
    local pkg="$1"; shift
    if ! "$@" >/dev/null 2>&1; then need_pkgs+=("$pkg"); fi
}
probe build-essential command -v gcc
probe build-essential command -v make
probe python3-dev bash -c 'test -n "$(python3 -c "import sysconfig,os;p=sysconfig.get_paths()[\"include\"];print(p if os.path.exists(p+\"/Python.h\") else \"\")")"'
probe python3-venv python3 -c 'import venv, ensurepip'
probe fuse3 command -v fusermount3
probe libfuse3-dev test -e /usr/include/fuse3/fuse_lowlevel.h
probe pkg-config command -v pkg-config
probe fio command -v fio
if ((${#need_pkgs[@]})); then
    mapfile -t need_pkgs < <(printf '%s\n' "${need_pkgs[@]}" | sort -u)
    log "installing missing Debian packages: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q -o DPkg::Lock::Timeout=300 "${need_pkgs[@]}"
else
    log "Debian packages: all present"
fi
[ -e /dev/fuse ] || { log "no /dev/fuse on this machine: shadowfs cannot mount"; exit 3; }

py=python3
$py -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || py=python3.11
venv="$top/.venv"
if [ ! -x "$venv/bin/python" ]; then
    log "creating virtualenv $venv"
    $py -m venv "$venv"
fi
stamp="$venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    log "installing shadowfs and its pinned dependencies into $venv"
    "$venv/bin/pip" install -q --upgrade pip >&2
    "$venv/bin/pip" install -q -c constraints.txt -e ".[dev]" >&2
    rm -f "$venv"/.installed-*
    touch "$stamp"
else
    log "virtualenv up to date"
fi
export PATH="$venv/bin:$PATH"
export OPENBLAS_NUM_THREADS=1

case "$job" in
    setup) ;;
    demo) exec "$venv/bin/shadowfs" demo "$@" ;;
    test)
        log "ruff"
        "$venv/bin/ruff" check shadowfs tiers predictor bench tests
        "$venv/bin/ruff" format --check shadowfs tiers predictor bench tests
        log "mypy"
        "$venv/bin/mypy"
        log "pytest"
        exec "$venv/bin/python" -m pytest "$@"
        ;;
    *) log "unknown job '$job' (demo, test or setup)"; exit 2 ;;
esac
