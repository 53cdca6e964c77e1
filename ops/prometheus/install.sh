#!/bin/sh
# Install Prometheus and promtool from Debian's `prometheus` package, if either is missing.
#
# Idempotent: does nothing when both binaries are already on PATH. Needs root (or sudo) and apt.
# Debian's package also installs and (on systemd hosts) enables a `prometheus` service; we never
# start it: the tests and the operator run the binary themselves with the project's config.
set -eu

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    echo "prometheus already installed: $(command -v prometheus)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install.sh: apt-get not found; install Prometheus (prometheus + promtool) by hand" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install.sh: need root (or sudo) to apt-get install prometheus" >&2
        exit 1
    fi
fi

echo "installing prometheus (apt-get)"
# policy-rc.d exit 101 keeps invoke-rc.d from starting the Debian service during install on
# sysvinit/container hosts; the file is ours only if it did not exist before.
POLICY=/usr/sbin/policy-rc.d
OWN_POLICY=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    OWN_POLICY=1
fi
cleanup() { if [ "$OWN_POLICY" -eq 1 ]; then $SUDO rm -f "$POLICY"; fi; }
trap cleanup EXIT

$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus \
    >/dev/null

# On systemd hosts the package enables the unit; stop it so only our own process runs.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

command -v prometheus >/dev/null && command -v promtool >/dev/null
echo "installed $(prometheus --version 2>&1 | head -n 1)"
