#!/usr/bin/env bash
# Vagrant provisioning (as root in the box): audtrace set up in the synced checkout by its own
# scripts/setup.sh --test (the README's set-up, test extras included), `audtrace` on PATH.
#
#   provision.sh CHECKOUT        (the Vagrantfile passes /audtrace)
#
# The point of these boxes is the stock kernel with its own header tree, so the running
# kernel's headers must exist in the distribution's repositories. A box older than its
# repositories runs a kernel whose headers are gone: then the kernel is upgraded and the box
# must be rebooted once (`vagrant reload NAME --provision`).
set -euo pipefail

repo=${1:-/audtrace}
release=$(uname -r)
say() { echo "audtrace provision: $*" >&2; }

if command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get -q update >/dev/null
    if [[ ! -d /lib/modules/$release/build ]] && ! apt-cache show "linux-headers-$release" >/dev/null 2>&1; then
        # Debian: linux-image-amd64; Ubuntu: linux-image-generic (whichever meta the box has)
        meta=$(dpkg-query -W -f='${Package}\n' 'linux-image-*' 2>/dev/null \
            | grep -E '^linux-image-(amd64|arm64|generic|virtual)$' | head -n1)
        say "no headers for $release in apt; upgrading ${meta:-the kernel}"
        apt-get -y -q install --only-upgrade "${meta:-linux-image-amd64}" >/dev/null
        say "reboot into the new kernel, then provision again: vagrant reload <name> --provision"
        exit 1
    fi
elif command -v dnf >/dev/null; then
    if [[ ! -d /lib/modules/$release/build ]] && ! dnf -q list --available "kernel-devel-$release" >/dev/null 2>&1; then
        say "no kernel-devel-$release in the repositories; upgrading the kernel"
        dnf -y -q upgrade kernel
        say "reboot into the new kernel, then provision again: vagrant reload <name> --provision"
        exit 1
    fi
fi

bash "$repo/scripts/setup.sh" --test
ln -sfn "$repo/audtrace" /usr/local/bin/audtrace
say "ready: \`sudo audtrace doctor\`; the test suite: \`sudo $repo/tests/run\`"
