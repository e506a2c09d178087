"""Ctrl-C of a Ray run reaches the CLI as Ctrl-C.

Ray Train V2's `fit()` installs its own SIGINT handler on the main thread: the first Ctrl-C asks
the controller to abort and `fit()` then returns or raises `SystemExit` (Ray's handler calls
`sys.exit` when the controller is already gone). Either way no KeyboardInterrupt arrives, so
`train` exited 1 without the "--resume" hint that `--local` prints, and Ray's handler stayed
installed after `fit()`. `noting_sigint` records a SIGINT through the interpreter's wakeup fd,
which sees every signal whatever handler runs, and puts the earlier handler back afterwards."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from typing import Callable, Iterator


@contextlib.contextmanager
def noting_sigint() -> Iterator[Callable[[], bool]]:
    """Yields `interrupted()`: whether SIGINT arrived inside the block. A no-op off the main thread
    (where Ray installs no handler either)."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    seen = bytearray()

    def interrupted() -> bool:
        try:
            while chunk := reader.recv(512):
                seen.extend(chunk)
        except (BlockingIOError, OSError):
            pass
        return signal.SIGINT in seen

    handler = signal.getsignal(signal.SIGINT)
    earlier_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    try:
        yield interrupted
    finally:
        interrupted()                          # drain before the socket closes
        signal.set_wakeup_fd(earlier_fd)
        signal.signal(signal.SIGINT, handler)
        reader.close()
        writer.close()


@contextlib.contextmanager
def deferred_sigint() -> Iterator[None]:
    """A SIGINT inside the block takes effect as it ends. tensorboardX hands every event to its
    writer thread through a queue whose Condition.notify a KeyboardInterrupt can cut midway: the
    thread's wake-up is lost, and the writer's close at exit then waited forever (a Ctrl-C'd
    --local run that never exited). A no-op off the main thread (Ray Train's workers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list = []
    earlier = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, earlier)
        if got and callable(earlier):
            earlier(signal.SIGINT, None)        # the process's own handler: KeyboardInterrupt by default
        elif got and earlier == signal.SIG_DFL:
            raise KeyboardInterrupt
