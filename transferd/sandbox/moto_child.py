"""Entry point of the moto S3 server subprocess: moto plus a watchdog on the parent sandbox.

If the sandbox dies without stopping us (SIGKILL, crash), our parent pid changes and we exit, so no
moto process is ever orphaned. Run as `python -m transferd.sandbox.moto_child --parent-pid PID -H .. -p ..`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(0.25)
        if os.getppid() != parent_pid:
            os._exit(0)  # the parent is gone: leave at once, there is nothing to clean up


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--parent-pid", type=int, required=True)
    args, moto_argv = parser.parse_known_args(argv)
    # werkzeug logs every request at INFO; the sandbox keeps its own request log instead.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    threading.Thread(target=_watch_parent, args=(args.parent_pid,), daemon=True).start()
    if os.getppid() != args.parent_pid:
        sys.exit(0)
    from moto.server import main as moto_main

    moto_main(moto_argv)


if __name__ == "__main__":
    main()
