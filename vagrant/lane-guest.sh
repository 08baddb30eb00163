#!/bin/bash
# PID 1 of the stock-kernel lane's guest (vagrant/vm-lane boots it; /sbin/audtrace-lane-init,
# baked into the image, has mounted the checkout read-only at /mnt/src and the run share at
# /mnt/run, then exec'd this file from the checkout, so editing it needs no new image).
#
# Makes /audtrace: a copy of the checkout whose .venv is the image's /opt/audtrace-venv
# (Debian's BCC, pytest, click, pyroute2 + an orjson wheel), so the real ./audtrace launcher
# and the tests run unchanged and nothing is fetched. Then sources
# /mnt/run/plan.sh, whose `lane_run LABEL [VAR=VALUE...] -- PYTEST-ARGS...` lines each run
# pytest once and leave LABEL.xml (JUnit) and LABEL.rc in /mnt/run, and whose
# `lane_cmd LABEL [VAR=VALUE...] -- CMD...` lines run CMD in /audtrace (the benchmark:
# `vagrant/vm-lane --bench`), output on the console, and leave LABEL.rc. Powers off at the end;
# if this script dies, the kernel panics and reboots, which ends qemu (-no-reboot) without an
# .rc file, and the host reports the run as not finished.
# shellcheck disable=SC2317  # the functions run (trap, plan.sh); the {} hides it from shellcheck
# The body is one { } block: bash reads it whole before running it, so an edit of this file
# on the host during a run cannot change what the running guest does.
{
set -u
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb
# Under emulation a BCC compile takes 1-2 minutes (more with the header tree's offsets): the
# time the tests should give audtrace to say "tracing" (for helpers.start_audtrace's timeout)
export AUDTRACE_TEST_START_TIMEOUT=${AUDTRACE_TEST_START_TIMEOUT:-300}

say() { echo "audtrace-lane: $*"; }

power_off() {
    sync
    echo o >/proc/sysrq-trigger
    sleep 60
}
trap power_off EXIT

mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
echo 1 >/proc/sys/kernel/printk     # kernel chatter (audit's hold queue...) off the console
ip link set lo up
echo lane >/proc/sys/kernel/hostname

# The checkout as it is now, copied onto the guest's disk: writable for the tests (caches, tmp
# files) without touching the host's copy, and unchanged by edits made while the lane runs.
mkdir -p /audtrace
tar -C /mnt/src --exclude=./.git --exclude=./.venv --exclude=./.hypothesis \
    --exclude=./.pytest_cache --exclude=./.ruff_cache --exclude=./vagrant/.vagrant \
    --exclude=__pycache__ -cf - . | tar -C /audtrace -xf -
ln -s /opt/audtrace-venv /audtrace/.venv
# the stamp ./audtrace checks: the set-up is the image's, for this checkout's set-up files
hash=$(cat /audtrace/pyproject.toml /audtrace/scripts/setup.sh | sha256sum)
printf '%s\ntest\n' "${hash%% *}" >/opt/audtrace-venv/.audtrace-stamp

say "kernel $(uname -r), $(nproc) CPUs, $(grep -o 'audit=[0-9]' /proc/cmdline)," \
    "BTF $([[ -e /sys/kernel/btf/vmlinux ]] && echo yes || echo no)"

lane_run() {
    local label=$1 envs=() started=$SECONDS rc
    shift
    while (($#)) && [[ $1 != -- ]]; do envs+=("$1"); shift; done
    shift
    say "run $label: ${envs[*]} pytest $*"
    (cd /audtrace && env "${envs[@]}" PYTHONDONTWRITEBYTECODE=1 /audtrace/.venv/bin/python -c '
import sys
del sys.path[0]
import pytest
sys.exit(pytest.main())' -p no:cacheprovider --junitxml="/mnt/run/$label.xml" \
        -o junit_suite_name="vm-$label" "$@")
    rc=$?
    echo "$rc" >"/mnt/run/$label.rc"
    say "run $label: exit $rc after $((SECONDS - started)) s"
}

lane_cmd() {
    local label=$1 envs=() started=$SECONDS rc
    shift
    while (($#)) && [[ $1 != -- ]]; do envs+=("$1"); shift; done
    shift
    say "run $label: ${envs[*]} $* (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    (cd /audtrace && env "${envs[@]}" PYTHONDONTWRITEBYTECODE=1 "$@")
    rc=$?
    echo "$rc" >"/mnt/run/$label.rc"
    say "run $label: exit $rc after $((SECONDS - started)) s" \
        "(load average $(cut -d' ' -f1-3 /proc/loadavg))"
}

# shellcheck source=/dev/null  # written by vagrant/vm-lane for this boot
. /mnt/run/plan.sh
sync
say "done"
exit
}
