#!/usr/bin/env bash
# Install slipsq as a gateway service on Debian 12 / Raspberry Pi OS (x86-64 or arm64), as root,
# from a source tree, needing nothing but what this script installs:
#
#   tools/install-gateway.sh                    install, or upgrade in place (config and blocks kept)
#   tools/install-gateway.sh --uninstall        remove the program, the unit and every firewall rule
#   tools/install-gateway.sh --uninstall --purge   ... and the configuration, block store and logs
#
# What it does: installs the system packages (apt), builds slipsq into its own virtual environment
# in /opt/slipsq (never pip into the system Python), links /usr/local/bin/slipsq to it, writes
# /etc/slipsq/slipsq.toml when there is none (`slipsq config init`: every option, commented, the
# allow list guessed from this machine including your SSH client address), installs and enables
# systemd/slipsq.service (not started: review the allow list first), and prints what it did.
#
# --root DIR (or DESTDIR=DIR): install everything under DIR instead of /, for tests and packaging; no
# apt, no systemctl, no firewall. The virtual environment is built in DIR/opt/slipsq and only runs
# there (a venv is not relocatable), so the link points into DIR too.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT="${DESTDIR:-}"
PREFIX=/opt/slipsq
BINDIR=/usr/local/bin
CONFDIR=/etc/slipsq
UNITDIR=/etc/systemd/system
STATEDIR=/var/lib/slipsq
LOGDIR=/var/log/slipsq
PYTHON=python3
MODE=install
PURGE=0
APT=auto
SYSTEMD=auto
ALLOW=()
APT_PKGS=(python3 python3-venv python3-dev build-essential libnetfilter-queue-dev libnfnetlink-dev
          iptables ipset iproute2 kmod)

say() { printf 'slipsq-install: %s\n' "$*"; }
die() { printf 'slipsq-install: %s\n' "$*" >&2; exit 1; }

usage() {
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
  cat <<EOF

options:
  --root DIR        install under DIR (also DESTDIR=DIR); implies --no-apt --no-systemd
  --prefix DIR      the virtual environment [default: $PREFIX]
  --allow IP        also put IP or CIDR on the allow list of a new configuration (repeatable)
  --python PY       the Python to build the venv with [default: python3, >= 3.11]
  --no-apt          do not install system packages
  --no-systemd      do not run systemctl (daemon-reload, enable, restart)
  --uninstall       remove what an install added (the configuration and state stay, see --purge)
  --purge           with --uninstall: also remove $CONFDIR, $STATEDIR and $LOGDIR
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
    --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
    --allow) ALLOW+=(--allow "${2:?--allow needs an address}"); shift 2 ;;
    --python) PYTHON="${2:?--python needs a command}"; shift 2 ;;
    --no-apt) APT=no; shift ;;
    --no-systemd) SYSTEMD=no; shift ;;
    --uninstall) MODE=uninstall; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path, not '$PREFIX'" ;; esac
if [ -n "$ROOT" ]; then
  ROOT="$(mkdir -p "$ROOT" && cd "$ROOT" && pwd)"
  [ "$ROOT" != / ] || ROOT=""
fi
if [ -n "$ROOT" ]; then APT=no; SYSTEMD=no; fi
if [ "$SYSTEMD" = auto ]; then
  # systemd is running (not merely installed): the test sd_booted() uses
  if [ -d /run/systemd/system ]; then SYSTEMD=yes; else SYSTEMD=no; fi
fi
[ -n "$ROOT" ] || [ "$(id -u)" = 0 ] || die "run as root (or give --root DIR for a scratch install)"

VENV="$ROOT$PREFIX"
MANIFEST="$VENV/slipsq-install.manifest"
CONF="$ROOT$CONFDIR/slipsq.toml"
UNIT="$ROOT$UNITDIR/slipsq.service"
LINK="$ROOT$BINDIR/slipsq"

# --- uninstall ------------------------------------------------------------------------------------
if [ "$MODE" = uninstall ]; then
  if [ "$SYSTEMD" = yes ] && systemctl list-unit-files slipsq.service >/dev/null 2>&1; then
    # stop first: a clean stop removes the NFQUEUE diversion itself
    systemctl disable --now slipsq.service >/dev/null 2>&1 && say "stopped and disabled slipsq.service" || true
  fi
  if [ -z "$ROOT" ] && [ -x "$VENV/bin/slipsq" ]; then
    # whatever is left (a crashed daemon's diversion, the block chain, the sets): everything tagged slipsq
    "$VENV/bin/slipsq" rules remove || say "warning: 'slipsq rules remove' failed; check 'iptables -t security -S' for slipsq rules"
  fi
  if [ -e "$UNIT" ]; then rm -f "$UNIT"; say "removed $UNIT"; fi
  if [ "$SYSTEMD" = yes ]; then systemctl daemon-reload; fi
  if [ -L "$LINK" ] && [ "$(readlink "$LINK")" = "$VENV/bin/slipsq" ]; then rm -f "$LINK"; say "removed $LINK"; fi
  if [ -d "$VENV" ]; then
    [ -e "$MANIFEST" ] || [ -x "$VENV/bin/slipsq" ] || die "$VENV does not look like slipsq's; not removing it"
    rm -rf "$VENV"; say "removed $VENV"
  fi
  if [ "$PURGE" = 1 ]; then
    for d in "$ROOT$CONFDIR" "$ROOT$STATEDIR" "$ROOT$LOGDIR"; do
      if [ -e "$d" ]; then rm -rf "$d"; say "removed $d"; fi
    done
  else
    for d in "$ROOT$CONFDIR" "$ROOT$STATEDIR" "$ROOT$LOGDIR"; do
      if [ -e "$d" ]; then say "kept $d (--uninstall --purge removes it)"; fi
    done
  fi
  say "slipsq is uninstalled"
  exit 0
fi

# --- install --------------------------------------------------------------------------------------
[ -f "$SRC/setup.py" ] && [ -f "$SRC/systemd/slipsq.service" ] || die "$SRC is not a slipsq source tree"
arch="$(dpkg --print-architecture 2>/dev/null || uname -m)"
os="$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-unknown}" || echo unknown)"
say "installing slipsq from $SRC on $os ($arch)${ROOT:+ into $ROOT}"

if [ "$APT" != no ]; then
  missing=()
  for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    say "system packages: all present"
  fi
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
  || die "$PYTHON is missing or older than 3.11 (Debian 12 has 3.11: apt-get install python3)"
[ -e /usr/include/libnetfilter_queue/libnetfilter_queue.h ] \
  || die "libnetfilter-queue-dev is missing (apt-get install libnetfilter-queue-dev, or run without --no-apt)"

upgrade=0
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c '' 2>/dev/null; then
  upgrade=1
  old="$("$VENV/bin/slipsq" --version 2>/dev/null || echo 'an unknown version')"
  say "upgrading $VENV in place (was $old)"
else
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
  say "created the virtual environment $VENV"
fi
# build from a clean copy: the checkout's own build products (.venv, in-place .so) and caches (the
# benchmarks' captures in bench/out: gigabytes) stay out of it, and a read-only source tree works.
# GNU tar exits 1 when a file changed while it was read (a checkout in use: a build or a test
# writing beside it); what it read is whole, so that is no failure here
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
{ tar -C "$SRC" --exclude=./.venv --exclude=./build --exclude=./.git --exclude='*.so' --exclude='*.egg-info' \
    --exclude=./.pytest_cache --exclude=./.mypy_cache --exclude=./.ruff_cache --exclude='__pycache__' \
    --exclude=./bench/out --warning=no-file-changed -cf - . || [ $? -eq 1 ]; } | tar -C "$build" -xf -
pip=("$VENV/bin/python" -m pip -q --disable-pip-version-check)
"${pip[@]}" install --upgrade pip setuptools wheel "Cython>=3.1,<3.3" "NetfilterQueue>=1.1"
# --no-build-isolation: setup.py cimports NetfilterQueue's .pxd to build the inline module (_nfq)
"${pip[@]}" install --upgrade --no-build-isolation "$build"
"$VENV/bin/python" -c 'import slipsq.sources._nfq, slipsq._flowtable' 2>/dev/null \
  || die "the build in $VENV lacks the compiled inline core (slipsq.sources._nfq); see the pip output above"
version="$("$VENV/bin/slipsq" --version)"
mkdir -p "$VENV/share/doc/slipsq"
install -m 0644 "$SRC/README.md" "$VENV/share/doc/slipsq/README.md"
install -m 0644 "$SRC/systemd/README.md" "$VENV/share/doc/slipsq/service.md"
say "built $version into $VENV"

mkdir -p "$ROOT$BINDIR"
ln -sfn "$VENV/bin/slipsq" "$LINK"
say "linked $LINK -> $VENV/bin/slipsq"

if [ -e "$CONF" ]; then
  if "$VENV/bin/slipsq" config show --config "$CONF" >/dev/null; then
    say "kept the configuration $CONF (it loads)"
  else
    say "warning: the kept configuration $CONF does not load with this version (see the line above)"
  fi
else
  mkdir -p "$ROOT$CONFDIR"
  "$VENV/bin/slipsq" config init "${ALLOW[@]}" > "$CONF.new"
  chmod 0640 "$CONF.new"
  mv "$CONF.new" "$CONF"
  ips="$(grep -m1 '^ips = ' "$CONF" || echo 'ips = [] (no SSH session found: add your admin host)')"
  say "wrote $CONF: allow list $ips"
fi

mkdir -p "$ROOT$UNITDIR"
sed "s|/opt/slipsq/|$PREFIX/|g" "$SRC/systemd/slipsq.service" > "$UNIT.new"
chmod 0644 "$UNIT.new"
mv "$UNIT.new" "$UNIT"
say "installed the unit $UNIT"

printf '%s\n' "# files slipsq's installer added (tools/install-gateway.sh --uninstall removes them)" \
  "$VENV" "$LINK" "$UNIT" "$CONF" > "$MANIFEST"

if [ "$SYSTEMD" = yes ]; then
  systemctl daemon-reload
  systemctl enable slipsq.service >/dev/null 2>&1
  say "enabled slipsq.service (it starts at boot)"
  if [ "$upgrade" = 1 ] && systemctl is-active --quiet slipsq.service; then
    systemctl restart slipsq.service
    say "restarted the running service on the new version"
  fi
else
  say "systemd is not running here${ROOT:+ (scratch root)}: not enabled"
fi

cat <<EOF

slipsq is installed ($version). Next:
  1. check the allow list in $CONFDIR/slipsq.toml (hosts that must never be blocked: your admin machines)
  2. systemctl start slipsq          # divert forwarded traffic to NFQUEUE 0 (fail-open) and inspect it
  3. slipsq status; journalctl -u slipsq -f; journalctl -u slipsq SLIPSQ_ACTION=block
Remove it all again: tools/install-gateway.sh --uninstall (or make uninstall)
EOF
