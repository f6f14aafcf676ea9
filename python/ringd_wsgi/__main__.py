"""The master process: binds (in Rust), forks the workers, replaces those that exit.

Workers are forked before any thread starts; each imports the app itself, so SIGHUP (a
restart of every worker) loads the app code anew. SIGTERM/SIGINT stop the workers
gracefully; a worker whose app fails to import stops the whole server.
"""

import os
import signal
import sys
import time

from . import _ringd

EXIT_BOOT = 3
EXIT_TIMEOUT = 4


def _worker(master, slot):
    code = 1
    try:
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(s, signal.SIG_DFL)
        code = master.run_worker(slot)
    except BaseException:  # noqa: BLE001 - anything at all: report, then exit
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main(argv=None):
    master = _ringd.prepare(sys.argv[1:] if argv is None else list(argv))
    children = {}  # pid -> slot
    state = {"stopping": False, "restart": False}

    def spawn(slot):
        pid = os.fork()
        if pid == 0:
            _worker(master, slot)
        children[pid] = slot

    def on_stop(signum, _frame):
        state["stopping"] = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def on_hup(_signum, _frame):
        state["restart"] = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)

    for slot in range(master.workers):
        spawn(slot)
    status = 0
    failures = []
    while children:
        if state["restart"] and not state["stopping"]:
            state["restart"] = False
            print("ringd-wsgi: SIGHUP: restarting every worker (the app is imported anew)",
                  file=sys.stderr, flush=True)
            for pid in list(children):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        try:
            pid, st = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        slot = children.pop(pid, None)
        if slot is None:
            continue
        code = os.waitstatus_to_exitcode(st)
        if state["stopping"]:
            continue
        if code == EXIT_BOOT:
            print("ringd-wsgi: a worker could not load the app; stopping", file=sys.stderr,
                  flush=True)
            status = EXIT_BOOT
            on_stop(signal.SIGTERM, None)
            continue
        if code not in (0, EXIT_TIMEOUT):
            print(f"ringd-wsgi: worker {pid} exited with status {code}; replacing it",
                  file=sys.stderr, flush=True)
        now = time.monotonic()
        failures = [t for t in failures if now - t < 5] + ([now] if code != 0 else [])
        if len(failures) > 10 * master.workers:
            print("ringd-wsgi: workers keep failing; stopping", file=sys.stderr, flush=True)
            status = 1
            on_stop(signal.SIGTERM, None)
            continue
        spawn(slot)
    return status


if __name__ == "__main__":
    sys.exit(main())
