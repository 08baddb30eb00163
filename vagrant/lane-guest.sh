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
#
# `lane_systemd LABEL [VAR=VALUE...] -- PYTEST-ARGS...` lines are the same runs with systemd
# as PID 1 (what `systemctl` needs), made after every lane_run, in the same boot: this script
# writes them into a oneshot unit (audtrace-lane.service: the same lane_run, its output on the
# console, AUDTRACE_REQUIRE_SYSTEMD=1 so that a test marked `systemd` fails rather than skips)
# and a target wanting basic.target and that unit only (not multi-user.target: no auditd, no
# getty), then execs /lib/systemd/systemd with --unit= that target. The mounts and /audtrace
# stay. The unit powers the guest off once done, whatever its result (SuccessAction,
# FailureAction); systemd crashing reboots (--crash-reboot), and so does a kernel soft lockup
# (softlockup_panic, panic=-1), which ends qemu too; any other hang is ended by the host's
# timeout. The guest's disk is a snapshot: what is written into /etc goes with the boot.
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

systemd_runs=()     # the lane_systemd lines, as lane_run calls, for the unit made at the end
lane_systemd() {
    systemd_runs+=("$(printf '%q ' lane_run "$@")")
    say "run $1: after the others, with systemd as PID 1"
}

# Hands PID 1 over to systemd, which makes the lane_systemd runs and powers off.
systemd_handover() {
    local dir=/var/lib/audtrace-lane units=/etc/systemd/system
    mkdir -p "$dir"
    {
        echo 'set -u'
        # systemd-sysctl has set procps's console level again: kernel chatter off the console
        echo 'echo 1 >/proc/sys/kernel/printk'
        # a soft lockup (both CPUs stuck in the kernel for minutes, seen once under emulation
        # as systemd and the daemon loaded BPF programs) panics, with every CPU's backtrace
        # and the kernel log on the console; panic=-1 then ends qemu at once
        echo 'sysctl -qw kernel.softlockup_all_cpu_backtrace=1 kernel.panic_print=32' \
            'kernel.softlockup_panic=1'
        declare -px PATH HOME LANG TERM AUDTRACE_TEST_START_TIMEOUT
        echo 'export AUDTRACE_REQUIRE_SYSTEMD=1'
        declare -f say lane_run
        printf '%s\n' "${systemd_runs[@]}"
        echo 'sync'
        echo 'say "runs under systemd done: powering off"'
    } >"$dir/runs.sh"
    printf '%s\n' "[Unit]" \
        "Description=audtrace lane: the pytest runs that need systemd as PID 1" \
        "# no hard dependency: whatever failed before, the runs are made and the guest ends" \
        "DefaultDependencies=no" "Wants=basic.target" "After=basic.target" \
        "Conflicts=shutdown.target" "Before=shutdown.target" \
        "SuccessAction=poweroff-force" "FailureAction=poweroff-force" "" \
        "[Service]" "Type=oneshot" "ExecStart=/bin/bash $dir/runs.sh" \
        "StandardInput=null" "StandardOutput=tty" "StandardError=inherit" \
        "TTYPath=/dev/console" >"$units/audtrace-lane.service"
    printf '%s\n' "[Unit]" \
        "Description=audtrace lane: basic.target and the runs, nothing of multi-user.target" \
        "DefaultDependencies=no" "AllowIsolate=yes" "Wants=audtrace-lane.service" \
        >"$units/audtrace-lane.target"
    # a machine id: without one systemd counts a first boot, and systemd-firstboot would
    # prompt on the console for ever
    systemd-machine-id-setup >/dev/null
    ln -sf /dev/null "$units/systemd-firstboot.service"
    # journald's audit socket would make journald turn kernel audit on and read its records;
    # the tests check that audit is left as they found it
    ln -sf /dev/null "$units/systemd-journald-audit.socket"
    sync
    say "handing PID 1 over to systemd for ${#systemd_runs[@]} run(s)"
    exec /lib/systemd/systemd --unit=audtrace-lane.target --crash-reboot
    say "cannot exec /lib/systemd/systemd"     # then the EXIT trap powers off
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
((${#systemd_runs[@]})) && systemd_handover
say "done"
exit
}
