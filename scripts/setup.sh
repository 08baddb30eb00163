#!/usr/bin/env bash
# Installs what audtrace needs on Debian 12 / Ubuntu (or, with dnf, Rocky/Alma 9) and
# prepares the repo's .venv.
#
#   scripts/setup.sh [--test]     (root; ./audtrace and tests/run call it)
#
# Idempotent. When .venv/.audtrace-stamp matches (sha256 of pyproject.toml + this script,
# plus the extras already installed) it exits at once without root. Otherwise:
#   1. apt: installs only the Debian packages that dpkg-query reports missing (and runs
#      `apt-get update` only then): python3-bpfcc, python3-venv, auditd (for auditctl,
#      ausearch, aureport, ausyscall), iproute2, and a kernel header tree for BCC's compiler
#      (linux-headers-$(uname -r) when apt has it, else the distro's generic headers package;
#      none when /lib/modules/$(uname -r)/build already exists); with --test also laurel
#      (audit's JSON plugin: the tests feed it audtrace's output) and audispd-plugins
#      (audisp-remote: the tests ship records to a private auditd with it), where apt has
#      them, with the auditd plugins they ship left inactive when installed here (the tests
#      run them on their own), logrotate (the tests rotate the daemon's log with it) and
#      strace (they count the daemon's fsync calls).
#      auditd's daemon is not started by the install (a temporary policy-rc.d denies it when
#      the system has none); its unit is enabled by the package as usual, so it starts at the
#      next boot unless you run `systemctl disable auditd`.
#   2. .venv: `/usr/bin/python3 -m venv --system-site-packages` (BCC is a system package for
#      /usr/bin/python3), then pip installs the dependencies listed in pyproject.toml
#      (and, with --test, the `test` extras).
#   3. The checkout is made importable as `audtrace.*` without `pip install -e .`:
#      .venv/pkgroot/audtrace/{tracer,compat,bpf} are relative symlinks to the repo's folders
#      and site-packages/audtrace-checkout.pth holds a path relative to site-packages, so the
#      repo (with its .venv) can be moved.
#   4. The stamp is written last.
# Progress goes to stderr as short "audtrace setup:" lines; the full apt/pip output goes to
# .venv/setup.log (the previous run's log is kept as .venv/setup.log.1).
set -euo pipefail

repo=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
venv=$repo/.venv
stamp_file=$venv/.audtrace-stamp
log=$venv/setup.log
sys_python=/usr/bin/python3
# The RHEL family (Rocky, Alma 9: dnf, no apt) has the same needs under rpm names.
rpm_family() { ! command -v apt-get >/dev/null && command -v dnf >/dev/null; }
# RHEL 9's python3 is 3.9 and audtrace needs 3.10+: there the venv is made from python3.11,
# which is given the system's BCC module (python3-bcc is built for 3.9; pure Python) below.
if rpm_family && ! "$sys_python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    sys_python=/usr/bin/python3.11
fi

want_test=0
for arg in "$@"; do
    case $arg in
        --test) want_test=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "audtrace setup: unknown option: $arg" >&2; exit 2 ;;
    esac
done

say() { echo "audtrace setup: $*" >&2; }

# The same computation as in ./audtrace's fast path.
current_hash() {
    local h
    h=$(cat "$repo/pyproject.toml" "$repo/scripts/setup.sh" | sha256sum)
    echo "${h%% *}"
}

# True when the stamp matches and records every extra that is wanted now.
stamp_ok() {
    local hash extras
    [[ -x $venv/bin/python && -f $stamp_file ]] || return 1
    { read -r hash; read -r extras || true; } <"$stamp_file"
    [[ $hash == "$(current_hash)" ]] || return 1
    ((want_test == 0)) || [[ " $extras " == *" test "* ]]
}

stamp_ok && exit 0

if ((EUID != 0)); then
    say "installing packages needs root; run: sudo $0${*:+ $*}"
    exit 1
fi

# One set-up at a time per checkout (two first runs of ./audtrace may race).
exec 9<"${BASH_SOURCE[0]}"
flock 9
stamp_ok && exit 0

started=$SECONDS

# A .venv that is not a system-site-packages venv of /usr/bin/python3's version cannot see BCC:
# remove it before the log (which lives inside it) is opened.
venv_healthy() {
    [[ -x $venv/bin/python && -x $sys_python ]] || return 1
    grep -qx 'include-system-site-packages = true' "$venv/pyvenv.cfg" 2>/dev/null || return 1
    local probe='import sys; print(sys.base_prefix, sys.version_info[:2])'
    [[ "$("$venv/bin/python" -c "$probe" 2>/dev/null)" == "$("$sys_python" -c "$probe")" ]]
}
if [[ -e $venv ]] && ! venv_healthy; then
    say "removing unusable .venv"
    rm -rf "$venv"
fi
mkdir -p "$venv"
[[ -f $log ]] && mv -f "$log" "$log.1"
echo "=== audtrace setup $(date -Is) args: $*" >"$log"

fail() {
    say "FAILED: $*; the end of $log follows"
    tail -n 25 "$log" | sed 's/^/    /' >&2
    exit 1
}

# ---- 1. Debian packages ---------------------------------------------------------------------

installed() { [[ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" == ii* ]]; }

generic_headers_pkg() {
    local id="" id_like=""
    # shellcheck disable=SC1091
    [[ -r /etc/os-release ]] && { id=$(. /etc/os-release && echo "${ID:-}"); id_like=$(. /etc/os-release && echo "${ID_LIKE:-}"); }
    if [[ $id == ubuntu || " $id_like " == *" ubuntu "* ]]; then
        echo linux-headers-generic
    else
        echo "linux-headers-$(dpkg --print-architecture)"
    fi
}

# Prints the header package to install, or nothing when a usable tree is already there.
headers_needed() {
    local release generic
    release=$(uname -r)
    [[ -d /lib/modules/$release/build ]] && return 0
    installed "linux-headers-$release" && return 0
    if apt-cache show "linux-headers-$release" >/dev/null 2>&1; then
        echo "linux-headers-$release"
        return 0
    fi
    # No headers for this kernel exist in apt (custom kernel): the generic tree is only given to
    # BCC's compiler; struct offsets come from BTF.
    generic=$(generic_headers_pkg)
    installed "$generic" || echo "$generic"
}

missing_packages() {
    local p
    for p in python3-bpfcc python3-venv auditd iproute2; do
        installed "$p" || echo "$p"
    done
    # the tests read audtrace's output with laurel as an auditd plugin would (Debian 12,
    # Ubuntu 22.04 on); a distribution without it skips those tests
    # and ship records with audisp-remote as audtrace's plugin, and rotate the daemon's log
    # with logrotate, and count its fsync calls with strace
    local t
    for t in laurel audispd-plugins logrotate strace; do
        if ((want_test)) && ! installed "$t" && apt-cache show "$t" >/dev/null 2>&1; then
            echo "$t"
        fi
    done
    headers_needed
}

# policy-rc.d is Debian's switch for "do not start services during this install". Only ours
# when the system has none; removed on every exit path.
policy=/usr/sbin/policy-rc.d
own_policy=0
drop_policy() { ((own_policy)) && rm -f "$policy"; own_policy=0; }
trap drop_policy EXIT

# dnf installs only what rpm reports missing. auditd is usually installed and running there
# already; audtrace reads beside it.
missing_rpms() {
    local p release
    release=$(uname -r)
    for p in bcc python3-bcc audit iproute; do
        rpm -q "$p" >/dev/null 2>&1 || echo "$p"
    done
    [[ -d /lib/modules/$release/build ]] || echo "kernel-devel-$release"
    [[ -x $sys_python ]] || printf '%s\n' "${sys_python##*/}" "${sys_python##*/}-pip"
}

if rpm_family; then
    mapfile -t missing < <(missing_rpms)
    if ((${#missing[@]})); then
        say "installing ${missing[*]} (dnf; log: $log)"
        echo "+ dnf install ${missing[*]}" >>"$log"
        dnf -y -q install "${missing[@]}" >>"$log" 2>&1 || fail "dnf install ${missing[*]}"
    else
        echo "dnf: nothing missing" >>"$log"
    fi
    missing=()      # nothing for apt below
else
    mapfile -t missing < <(missing_packages)
fi
if ((${#missing[@]})); then
    say "installing ${missing[*]} (apt; log: $log)"
    export DEBIAN_FRONTEND=noninteractive
    apt_opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=300
              -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    echo "+ apt-get update" >>"$log"
    apt-get -q -o DPkg::Lock::Timeout=300 update >>"$log" 2>&1 || fail "apt-get update"
    # The package index may now know linux-headers-$(uname -r): choose again.
    mapfile -t missing < <(missing_packages)
    if [[ " ${missing[*]} " == *" auditd "* && ! -e $policy ]]; then
        # shellcheck disable=SC2016  # the generated script's own $@ and $a
        printf '%s\n' '#!/bin/sh' '# written by audtrace scripts/setup.sh for the duration of one apt-get install' \
            'for a in "$@"; do case $a in auditd|auditd.service) exit 101;; esac; done' 'exit 0' >"$policy"
        chmod 755 "$policy"
        own_policy=1
    fi
    echo "+ apt-get install ${missing[*]}" >>"$log"
    apt-get "${apt_opts[@]}" install "${missing[@]}" >>"$log" 2>&1 \
        || fail "apt-get install ${missing[*]}"
    drop_policy
    # laurel's package activates its auditd plugin (audispd-plugins ships its own inactive);
    # the tests run the binaries on their own, so a plugin installed here stays out of the
    # system's auditd (its next start)
    for t in laurel audispd-plugins; do
        [[ " ${missing[*]} " == *" $t "* ]] || continue
        while read -r conf; do
            [[ $conf == /etc/audit/plugins.d/*.conf && -f $conf ]] || continue
            if grep -qi '^active *= *yes' "$conf"; then
                echo "+ active = no in $conf" >>"$log"
                sed -i 's/^active *= *yes *$/active = no/I' "$conf"
            fi
        done < <(dpkg-query -L "$t" 2>/dev/null)
    done
elif ! rpm_family; then
    echo "apt: nothing missing" >>"$log"
fi

# ---- 2. virtualenv and Python dependencies --------------------------------------------------

py=$venv/bin/python
if [[ ! -x $py ]]; then
    say "creating .venv ($sys_python, --system-site-packages)"
    "$sys_python" -m venv --system-site-packages "$venv" >>"$log" 2>&1 || fail "python3 -m venv"
fi

if [[ $sys_python != /usr/bin/python3 ]]; then     # RHEL 9: BCC of the system's python3
    bcc_dir=$(/usr/bin/python3 -c 'import bcc, os; print(os.path.dirname(bcc.__file__))') \
        || fail "python3-bcc is not importable by /usr/bin/python3"
    ln -sfn "$bcc_dir" "$("$py" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/bcc"
fi

# Requirements straight from pyproject.toml (tomllib is 3.11+; pip vendors tomli for older).
mapfile -t reqs < <("$py" - "$repo/pyproject.toml" "$want_test" <<'EOF'
import sys
try:
    import tomllib
except ImportError:
    from pip._vendor import tomli as tomllib
with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
reqs = list(project.get("dependencies", []))
if sys.argv[2] == "1":
    reqs += project.get("optional-dependencies", {}).get("test", [])
print("\n".join(reqs))
EOF
) || fail "reading pyproject.toml"
if ((${#reqs[@]})); then
    say "installing Python packages into .venv"
    echo "+ pip install ${reqs[*]}" >>"$log"
    "$py" -m pip install --disable-pip-version-check --no-input -q "${reqs[@]}" >>"$log" 2>&1 \
        || fail "pip install ${reqs[*]}"
fi

# ---- 3. the checkout as the `audtrace` package ----------------------------------------------

pkg=$venv/pkgroot/audtrace
mkdir -p "$pkg"
for d in tracer compat bpf; do
    [[ "$(readlink "$pkg/$d" 2>/dev/null)" == "../../../$d" ]] || ln -sfn "../../../$d" "$pkg/$d"
done
"$py" - "$venv/pkgroot" <<'EOF' >>"$log" 2>&1 || fail "writing audtrace-checkout.pth"
import os, sys, sysconfig
site = sysconfig.get_path("purelib")
pth = os.path.join(site, "audtrace-checkout.pth")
line = os.path.relpath(sys.argv[1], site) + "\n"  # site.py joins it with site-packages
if not os.path.exists(pth) or open(pth).read() != line:
    with open(pth + ".tmp", "w") as f:
        f.write(line)
    os.replace(pth + ".tmp", pth)
print("pth:", pth, "->", line.strip())
EOF

"$py" -c 'import bcc, audtrace.compat' >>"$log" 2>&1 \
    || fail ".venv cannot import bcc and audtrace.compat"

# ---- 4. stamp, last -------------------------------------------------------------------------

extras=""
((want_test)) && extras="test"
printf '%s\n%s\n' "$(current_hash)" "$extras" >"$stamp_file.tmp"
mv -f "$stamp_file.tmp" "$stamp_file"
echo "stamp written" >>"$log"
say "ready ($((SECONDS - started)) s)"
