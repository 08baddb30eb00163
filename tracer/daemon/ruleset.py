"""The kernel audit rules of a reload: from the rules in force to the new ones, touching as
few as the kernel's first-match order allows.

The kernel appends a rule at the end of its list, and the first rule of a list that matches
an event decides (its key, or `never`). A rule in both sets stays where it is; new rules are
appended in the new order. Where that would leave two rules that can match the same event
(same list, overlapping syscalls) in the wrong order, the one that must come later is
*moved*: taken out and added again at the end, its place in the new order. That is the only
way a rule in both sets is ever touched, and the daemon says so.

Steps run in this order: adds and moves in the new order (so new rules are in force before
anything goes), then removals of the rules the new set no longer has, once the programs
they worked with are gone.
"""

from __future__ import annotations

from collections.abc import Callable

from audtrace.compat.rules import Rule, machine_arches
from audtrace.tracer.ebpf.rule_filter import domain, overlaps

Step = tuple[str, Rule]     # ("add" | "move" | "remove", rule)


def can_meet(a: Rule, b: Rule) -> bool:
    """Can one event match both? Rules of different lists never meet; exit rules meet when
    their syscalls (per arch, watches by their perm classes) overlap; others are assumed to."""
    if a.list != b.list:
        return False
    if a.list != "exit":
        return True
    b64, b32 = machine_arches()
    return overlaps(domain(a, b64, b32), domain(b, b64, b32))


def steps(current: list[Rule], wanted: list[Rule],
          meet: Callable[[Rule, Rule], bool] = can_meet) -> list[Step]:
    kept = [r for r in current if r in wanted]
    at = {r: i for i, r in enumerate(wanted)}
    moved: list[Rule] = []
    while True:
        order = [r for r in kept if r not in moved] + \
                [r for r in wanted if r not in kept or r in moved]
        late = _out_of_order(order, at, meet)
        if late is None:
            break
        moved.append(late)
    out: list[Step] = [("move" if r in moved else "add", r) for r in wanted
                       if r not in kept or r in moved]
    return out + [("remove", r) for r in current if r not in wanted]


def _out_of_order(order: list[Rule], at: dict[Rule, int],
                  meet: Callable[[Rule, Rule], bool]) -> Rule | None:
    """The first rule the kernel would hold before one that the new order puts before it,
    when the two can meet. It is always a kept rule: the appended ones are in the new order."""
    for i, x in enumerate(order):
        for y in order[i + 1:]:
            if at[y] < at[x] and meet(x, y):
                return x
    return None
