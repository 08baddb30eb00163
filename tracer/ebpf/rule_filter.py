"""auditctl rules -> in-kernel eBPF filters where exact, kernel audit rules for the rest.

Kernel audit judges a syscall against the exit list in order and the first matching rule
decides (`always` writes the event with that rule's key, `never` drops it). Splitting one
list between two engines must keep that, so placement walks the rules in order:

- a rule runs in eBPF when every part of it has an exact eBPF equivalent (see `_why_not`)
  and no earlier rule that runs in kernel audit can match the same syscalls (else the
  kernel rule would win there, which eBPF cannot know);
- otherwise it runs in kernel audit, preceded there by a `never` copy of each earlier
  eBPF rule it overlaps, so an event eBPF already reported is not reported twice;
- 32-bit calls reach eBPF only through the raw tracepoints sys_enter/sys_exit, which tell
  them apart by the task's compat state (`compat`: the program then runs on those). With
  them, `-F arch=b32` rules run in eBPF as the others, and a rule without `-F arch` matches
  the 32-bit calls of the same numbers there, as in the kernel. Without them, a 32-bit
  rule runs in kernel audit, and so does the 32-bit part of a rule without `-F arch`
  (`-F arch=b32`, the same numbers).

The eBPF side is generated C (one function per rule, compiled with the program), not a
table of comparisons walked by a loop: BCC compiles at start anyway, the compiler folds
each rule to a few compares and a switch on the syscall number, the verifier sees
straight-line code whatever the rule count, and a syscall costs only its own rules.

Syscall-generic: `Filter`/`compile_rules` take any list of compat.rules.Rule, so a
subcommand that wants "these syscalls, these conditions" can build rules and reuse it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from audtrace.compat import tables
from audtrace.compat.rules import Rule, machine_arches
from audtrace.tracer.ebpf.layout import kernel_dev

# the kernel's syscall classes behind -F perm (include/asm-generic/audit_*.h), plus the
# syscalls audit_match_perm classifies itself (open*, execve*, socketcall); names the
# tables lack are the generic numbers of newer syscalls
_DIR_WRITE = ("rename", "mkdir", "rmdir", "creat", "link", "unlink", "symlink", "mknod",
              "mkdirat", "mknodat", "unlinkat", "renameat", "linkat", "symlinkat", "renameat2")
_WRITE = _DIR_WRITE + ("acct", "swapon", "quotactl", "truncate", "truncate64", "bind")
_READ = ("readlink", "quotactl", "listxattr", "llistxattr", "flistxattr", "getxattr",
         "lgetxattr", "fgetxattr", "readlinkat")
_ATTR = ("chmod", "fchmod", "chown", "fchown", "lchown", "setxattr", "lsetxattr", "fsetxattr",
         "removexattr", "lremovexattr", "fremovexattr", "fchownat", "fchmodat", "chown32",
         "fchown32", "lchown32")
_OPEN = ("open", "openat", "openat2", "open_by_handle_at")
_EXEC = ("execve", "execveat")
_NEW_NUMBERS = {"r": (464, 465), "a": (452, 463, 466), "w": ()}   # getxattrat.. fchmodat2..

# fields eBPF compares exactly, and what it reads for them
_IDENTITY = {"pid": "id->pid", "ppid": "id->ppid", "uid": "id->uid", "euid": "id->euid",
             "suid": "id->suid", "fsuid": "id->fsuid", "gid": "id->gid", "egid": "id->egid",
             "sgid": "id->sgid", "fsgid": "id->fsgid", "auid": "id->auid",
             "sessionid": "id->ses"}
_ARGS = {"a0": "(u32)a[0]", "a1": "(u32)a[1]", "a2": "(u32)a[2]", "a3": "(u32)a[3]"}
# at sys_enter an argument is read only where a rule's syscall test passed (bpf/rules.c)
_ENTER_ARGS = {f"a{i}": f"(u32)rule_arg(c, compat, {i})" for i in range(4)}
_C_OPS = {"=": "==", "!=": "!=", "<": "<", ">": ">", "<=": "<=", ">=": ">="}
_COMPARE_FIELDS = {10: ("uid", "auid"), 11: ("uid", "euid"), 12: ("uid", "fsuid"),
                   13: ("uid", "suid"), 14: ("auid", "fsuid"), 15: ("auid", "suid"),
                   16: ("auid", "euid"), 17: ("euid", "suid"), 18: ("euid", "fsuid"),
                   19: ("suid", "fsuid"), 20: ("gid", "egid"), 21: ("gid", "fsgid"),
                   22: ("gid", "sgid"), 23: ("egid", "fsgid"), 24: ("egid", "sgid"),
                   25: ("sgid", "fsgid")}
NO_RETURN = ("exit", "exit_group")


@dataclass
class Placed:
    """Where one rule of the set runs, and why."""
    index: int                  # position in the rule set, from 1
    rule: Rule
    where: str                  # "ebpf", "audit", "ebpf+audit" (native in eBPF, b32 in audit)
    why: str
    companion: Rule | None = None   # the kernel part of an "ebpf+audit" rule


@dataclass
class Plan:
    placed: list[Placed]
    ebpf: list[Rule]                         # in order; the filter's rule n is ebpf[n-1]
    audit: list[Rule]                        # in order, never-copies included
    exe_ids: dict[str, tuple[int, int]] = field(default_factory=dict)   # path -> (ino, dev)
    # eBPF sees 32-bit calls (raw tracepoints) and some eBPF rule matches them
    compat: bool = False
    arches: tuple[int, int] = (0, 0)         # (b64, b32) of the machine

    def keys(self, n: int) -> list[str]:
        """The keys of the eBPF filter's rule n (1-based), as the record's key= carries them."""
        return list(self.ebpf[n - 1].keys) if 0 < n <= len(self.ebpf) else []


# ---- what runs where -------------------------------------------------------------------
def _exe_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, kernel_dev(st.st_dev)


def _why_not(rule: Rule, native: int) -> str | None:
    """None when eBPF can run the native-arch part of `rule` exactly, else the reason."""
    if rule.list != "exit":
        return f"the {rule.list} list is not about syscall exits"
    if rule.action not in ("always", "never"):
        return f"action {rule.action}"
    for name, _op, value in rule.fields:
        if name in _ARGS or name in ("pid", "ppid", "uid", "euid", "suid", "fsuid", "sgid",
                                     "fsgid", "auid", "sessionid", "exit", "success", "key"):
            continue
        if name in ("gid", "egid"):   # =/!= also search the supplementary groups
            continue
        if name == "arch":
            continue
        if name == "exe":
            if _exe_id(str(value)) is None:
                return f"-F exe={value} does not exist now (kernel audit follows the path)"
            continue
        if name == "field_compare":
            if int(value) not in _COMPARE_FIELDS:
                return "-C on file object owners needs the syscall's inodes"
            continue
        if name in ("path", "dir"):
            return f"-F {name}= needs the kernel's path resolution (a watch)"
        return f"-F {name} has no eBPF equivalent here"
    return None


def _arches(rule: Rule, b64: int, b32: int) -> set[int]:
    out = {b64, b32}
    for name, op, value in rule.fields:
        if name == "arch":
            out = {a for a in out if (a == int(value)) == (op == "=")}
    return out


def _perm_syscalls(bits: int, arch: int) -> set[int] | None:
    names: list[str] = []
    extra: tuple[int, ...] = ()
    if bits & 2:
        names += [*_WRITE, *_OPEN]
    if bits & 4:
        names += [*_READ, *_OPEN]
        extra += _NEW_NUMBERS["r"]
    if bits & 8:
        names += list(_ATTR)
        extra += _NEW_NUMBERS["a"]
    if bits & 1:
        names += list(_EXEC)
    if bits & 6:
        names.append("socketcall")
    nrs = {tables.syscall_number(arch, n) for n in names}
    return {n for n in nrs if n is not None} | set(extra)


def domain(rule: Rule, b64: int, b32: int) -> dict[int, set[int] | None]:
    """arch -> syscall numbers the rule can match there (None: every syscall)."""
    out: dict[int, set[int] | None] = {}
    perm = next((int(v) for n, o, v in rule.fields if n == "perm" and o == "="), None)
    for arch in _arches(rule, b64, b32):
        nrs: set[int] | None = set(rule.syscalls) if rule.syscalls else None
        if perm is not None:
            by_perm = _perm_syscalls(perm, arch)
            nrs = by_perm if nrs is None else nrs & (by_perm or set())
        out[arch] = nrs
    return out


def overlaps(d1: dict[int, set[int] | None], d2: dict[int, set[int] | None]) -> bool:
    for arch, s1 in d1.items():
        if arch not in d2:
            continue
        s2 = d2[arch]
        if s1 is None or s2 is None or s1 & s2:
            if s1 == set() or s2 == set():
                continue
            return True
    return False


def _never_copy(rule: Rule) -> Rule:
    return Rule(rule.list, "never", rule.syscalls,
                tuple(f for f in rule.fields if f[0] != "key"))


def _with_arch(rule: Rule, arch: str, value: int) -> Rule:
    return Rule(rule.list, rule.action, rule.syscalls, (("arch", "=", value), *rule.fields))


# what the generated program may hold: each syscall of a rule's switch and each field test
# counts 1, twice for the rules' copy in rules_enter. Measured here: 80 rules of 4 syscalls
# and 6 fields load; 400 rules of 6 syscalls and 7 fields overflow the 16-bit jump offsets.
MAX_EBPF_COST = 1600


def _cost(rule: Rule) -> int:
    return max(len(rule.syscalls), 1) + len(rule.fields)


NO_COMPAT = "32-bit syscalls do not reach the syscall tracepoints"


def plan(rules: list[Rule], host: int | None = None, ebpf: bool = True,
         compat: bool = False, no_compat: str = NO_COMPAT) -> Plan:
    """Place each rule (see the module doc). `ebpf=False`: everything in kernel audit.
    `compat`: eBPF sees 32-bit calls (raw tracepoints) and can run 32-bit rules; else
    `no_compat` says why not."""
    host = tables.host_arch() if host is None else host
    b64, b32 = machine_arches(host)
    in_ebpf = {b64, b32} if compat else {b64}
    sees_compat = False
    placed: list[Placed] = []
    ebpf_rules: list[tuple[Rule, dict]] = []     # (rule, native domain)
    kernel: list[Rule] = []
    kernel_domains: list[dict] = []
    copied: set[int] = set()
    exe_ids: dict[str, tuple[int, int]] = {}
    cost = 0

    def to_kernel(rule: Rule) -> None:
        d = domain(rule, b64, b32)
        for i, (er, ed) in enumerate(ebpf_rules):
            if i not in copied and overlaps(ed, d):
                kernel.append(_never_copy(er))
                copied.add(i)
        kernel.append(rule)
        kernel_domains.append(d)

    for i, rule in enumerate(rules, start=1):
        if not ebpf:
            kernel.append(rule)
            placed.append(Placed(i, rule, "audit", "--source audit"))
            continue
        arches = _arches(rule, b64, b32) if rule.list == "exit" else set()
        why = _why_not(rule, host)
        if why is None and not arches & in_ebpf:
            why = no_compat
        native_domain = {a: nrs for a, nrs in domain(rule, b64, b32).items() if a in in_ebpf}
        if why is None and cost + _cost(rule) > MAX_EBPF_COST:
            why = (f"the eBPF filters are full ({MAX_EBPF_COST} syscall and field tests: "
                   "the program must stay within the verifier's jump range)")
        if why is None and any(overlaps(native_domain, kd) for kd in kernel_domains):
            why = "an earlier rule that runs in kernel audit can match the same syscalls " \
                  "(the first matching rule decides)"
        if why is not None:
            to_kernel(rule)
            placed.append(Placed(i, rule, "audit", why))
            continue
        for name, _op, value in rule.fields:
            if name == "exe":
                ident = _exe_id(str(value))
                assert ident is not None
                exe_ids[str(value)] = ident
        ebpf_rules.append((rule, native_domain))
        cost += _cost(rule)
        sees_compat = sees_compat or b32 in native_domain
        if b32 in arches - in_ebpf:
            part = _with_arch(rule, "b32", b32)
            to_kernel(part)
            placed.append(Placed(i, rule, "ebpf+audit", "no -F arch: the 64-bit syscalls in "
                                 "eBPF, the 32-bit ones (same numbers) in kernel audit", part))
        else:
            placed.append(Placed(i, rule, "ebpf", _ebpf_why(rule, b64 in arches,
                                                             b32 in arches)))
    return Plan(placed, [r for r, _d in ebpf_rules], kernel, exe_ids, sees_compat, (b64, b32))


def _ebpf_why(rule: Rule, native: bool = True, compat: bool = False) -> str:
    parts = ["syscalls" if rule.syscalls else "every syscall"]
    if compat:
        parts[0] += (" (32-bit calls too, same numbers: raw tracepoints)" if native
                     else " (32-bit calls: raw tracepoints)")
    names = {n for n, _o, _v in rule.fields}
    if names & set(_ARGS):
        parts.append("arguments")
    if names & set(_IDENTITY) or "field_compare" in names:
        parts.append("credentials")
    if names & {"exit", "success"}:
        parts.append("result")
    if "exe" in names:
        parts.append("executable (inode and device)")
    return "exact in eBPF: " + ", ".join(parts)


def explain(p: Plan) -> list[str]:
    """One line per rule: where it runs and why; then what kernel audit gets."""
    out = []
    for pl in p.placed:
        out.append(f"rule {pl.index}: {pl.where:<10} {pl.rule}")
        out.append(f"           {pl.why}")
    if p.audit:
        out.append("kernel audit rules, in order:")
        out += [f"  {r}" for r in p.audit]
    return out


# ---- the generated C ---------------------------------------------------------------------
def _cmp(left: str, op: str, value: int) -> str:
    v = f"{value & 0xFFFFFFFF}U"
    if op == "&":
        return f"(({left}) & {v}) != 0"
    if op == "&=":
        return f"(({left}) & {v}) == {v}"
    return f"({left}) {_C_OPS[op]} {v}"


def _condition(name: str, op: str, value, exe_ids: dict[str, tuple[int, int]],
               arches: tuple[int, int], args: dict[str, str] = _ARGS) -> str | None:
    """The C test of one field (None: always true). `arches`: (b64, b32) of the machine;
    `args`: how the arguments are read."""
    if name in _ARGS:
        return _cmp(args[name], op, int(value))
    if name in ("gid", "egid") and op in ("=", "!="):
        # the kernel's AUDIT_GID/EGID: a supplementary group matches too
        v = f"{int(value) & 0xFFFFFFFF}U"
        if op == "=":
            return f"({_IDENTITY[name]} == {v} || in_groups({v}))"
        return f"({_IDENTITY[name]} != {v} && !in_groups({v}))"
    if name in _IDENTITY:
        return _cmp(_IDENTITY[name], op, int(value))
    if name == "exit":
        # audit_comparator on u32 values; no result (exit_group) never matches
        return f"valid && ({_cmp('(u32)ret', op, int(value))})"
    if name == "success":
        want = 1 if int(value) else 2      # AUDITSC_SUCCESS / AUDITSC_FAILURE
        return f"valid && ({_cmp('valid', op, want)})"
    if name == "arch":
        # `compat`: the call is a 32-bit one (0 where eBPF sees none)
        native, compat = ((a == int(value)) == (op == "=") for a in arches)
        if native and compat:
            return None
        if native or compat:
            return "!compat" if native else "compat"
        return "0"
    if name == "exe":
        ino, dev = exe_ids[str(value)]
        same = f"(exe->ino == {ino}ULL && exe->dev == {dev}U)"
        return same if op == "=" else f"!{same}"
    if name == "field_compare":
        left, right = _COMPARE_FIELDS[int(value)]
        return f"({_IDENTITY[left]}) {_C_OPS[op]} ({_IDENTITY[right]})"
    if name == "key":
        return None
    raise ValueError(f"field {name} cannot run in eBPF")


def _syscall_test(rule: Rule) -> str:
    if not rule.syscalls:
        return "1"
    cases = " ".join(f"case {nr}:" for nr in rule.syscalls)
    return f"({{ int _in = 0; switch (nr) {{ {cases} _in = 1; }} _in; }})"


def c_source(p: Plan, host: int | None = None) -> str:
    """rules_enter() and rules_match() for bpf/rules.c."""
    host = tables.host_arch() if host is None else host
    arches = machine_arches(host)
    lines = ["/* generated from the rule set by tracer/ebpf/rule_filter.py */"]
    enter_terms = []
    for n, rule in enumerate(p.ebpf, start=1):
        conds = [c for f in rule.fields
                 if (c := _condition(*f, p.exe_ids, arches)) is not None]
        # the arch first: a 32-bit call's arguments are read from other registers
        args = [c for f in sorted(rule.fields, key=lambda f: f[0] != "arch")
                if f[0] in _ARGS or f[0] == "arch"
                if (c := _condition(*f, p.exe_ids, arches, _ENTER_ARGS)) is not None]
        body = " &&\n\t       ".join([_syscall_test(rule), *conds])
        lines.append(f"/* {n}: {str(rule).replace('*/', '* /')} */")
        lines.append(f"static __always_inline int rule_{n}(s32 nr, u32 compat, const u64 *a, "
                     "const struct identity *id, s64 ret, u32 valid, "
                     f"const struct exe_id *exe)\n{{\n\treturn {body};\n}}")
        if rule.action == "always":
            enter_terms.append(" && ".join([_syscall_test(rule), *args]))
    lines.append("static __always_inline int rules_enter(s32 nr, u32 compat, "
                 "const struct sc_call *c)\n{")
    for term in enter_terms:
        lines.append(f"\tif ({term})\n\t\treturn 1;")
    lines.append("\treturn 0;\n}")
    lines.append("/* the first matching rule decides: its number for always, 0 for never */")
    lines.append("static __always_inline int rules_match(s32 nr, u32 compat, const u64 *a, "
                 "const struct identity *id, s64 ret, u32 valid, const struct exe_id *exe)\n{")
    for n, rule in enumerate(p.ebpf, start=1):
        result = n if rule.action == "always" else 0
        lines.append(f"\tif (rule_{n}(nr, compat, a, id, ret, valid, exe))\n"
                     f"\t\treturn {result};")
    lines.append("\treturn 0;\n}")
    return "\n".join(lines) + "\n"


def uses_exe(p: Plan) -> bool:
    return bool(p.exe_ids)


def syscall_union(p: Plan) -> set[int] | None:
    """Native syscall numbers the eBPF rules need attached (None: every syscall)."""
    return traced_numbers(p)[0]


def traced_numbers(p: Plan) -> tuple[set[int] | None, set[int] | None]:
    """(native, 32-bit) syscall numbers the eBPF rules can match (None: every syscall)."""
    b64, b32 = p.arches
    out: list[set[int] | None] = [set(), set()]
    for rule in p.ebpf:
        arches = _arches(rule, b64, b32)
        for i, arch in enumerate((b64, b32)):
            if arch not in arches or (arch == b32 and not p.compat):
                continue
            if not rule.syscalls:
                out[i] = None
            elif out[i] is not None:
                out[i] |= set(rule.syscalls)
    return out[0], out[1]
