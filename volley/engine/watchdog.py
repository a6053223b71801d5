"""A watchdog for one process tree: ``python watchdog.py PID`` with a pipe on stdin.

It runs in its own session (no terminal's Ctrl-C or hang-up reaches it), and the only
writer of its pipe is the Volley process that started it. When that process ends, however
it ends (SIGKILL included), the kernel closes the pipe; the watchdog then SIGKILLs PID's
process group, every process in PID's session, and every descendant of PID it has seen.
A parent-death signal alone would miss PID's children, which the kernel does not signal.
A byte on the pipe instead means "ended properly, nothing to do".

Run by path with ``python -I -S``, not as ``volley.engine.watchdog``: it starts in milliseconds and
needs nothing but the standard library, however Volley is installed.
"""

import os
import select
import signal
import sys

# Orphans are re-parented and lose their tie to PID, so the family is looked up while it
# is still whole: one read of /proc/*/stat (3 ms with 80 processes) a second, 0.3% of a CPU.
LOOK_S = 1.0


Process = tuple[int, int]  # pid and start time: a pid alone may be reused by then


def processes() -> dict[Process, tuple[int, int, int]]:
    """Every process now -> (parent, process group, session)."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may hold anything, spaces included.
        fields = stat[stat.rfind(b")") + 2 :].split()
        found[(int(name), int(fields[19]))] = (int(fields[1]), int(fields[2]), int(fields[3]))
    return found


def family(root: int, seen: set[Process]) -> set[Process]:
    """Descendants of ``root`` now, and members of its group or session, added to ``seen``;
    those of ``seen`` alive now."""
    table = processes()
    children: dict[int, list[Process]] = {}
    for process, (parent, group, session) in table.items():
        children.setdefault(parent, []).append(process)
        if process[0] == root or root in (group, session):
            seen.add(process)
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in seen:
                seen.add(child)
                todo.append(child[0])
    return seen & set(table)


def main() -> None:
    root = int(sys.argv[1])
    seen: set[Process] = set()
    family(root, seen)
    while True:
        ready, _, _ = select.select([0], [], [], LOOK_S)
        if ready:
            if os.read(0, 1):
                # Ended properly. At once: Volley waits for this after every run's server,
                # and an interpreter's normal exit takes 4-5 ms.
                os._exit(0)
            break
        family(root, seen)
    try:
        os.killpg(root, signal.SIGKILL)
    except OSError:
        pass  # the group is gone already
    for pid, _ in family(root, seen):
        if pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    main()
