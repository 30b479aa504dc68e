"""Ctrl-C and SIGTERM for lenet_train.py: the first asks training to stop after the current step, a second exits at once.

CPython runs a signal's handler in the main thread, between two steps of Python; while the main thread waits inside
OneFlow (a native call that does not return), no handler runs, and a step never ends. So a thread of its own also
watches the signals as they arrive (signal.set_wakeup_fd, to which CPython writes each one at once): a second signal
exits at once, whatever the main thread is doing, and so does the first if the main thread then stays GRACE seconds
at one place of its Python code (inside one native call).
"""
import atexit
import os
import select
import signal
import sys
import threading
import time

GRACE = 10  # seconds in one native call after a signal; training returns from each OneFlow call far sooner
LOOK = 0.25  # seconds between looks at where the main thread is, once a signal has come
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """The handler of SIGINT and SIGTERM; `signum` is the first signal once the main thread has taken it.

    at_once: the first signal exits at once too (under the launcher, where processes stopping at different steps
    would wait on each other).
    """

    def __init__(self, at_once=False):
        self.signum = None
        self.at_once = at_once

    def install(self):
        """Handle SIGINT and SIGTERM from now on, and start the thread that watches them; call it from the main thread."""
        read, write = os.pipe()
        os.set_blocking(write, False)  # CPython's handler must never block on it
        signal.set_wakeup_fd(write)
        for signum in SIGNALS:
            signal.signal(signum, self)
        watcher = threading.Thread(target=self.watch, args=(read, threading.main_thread().ident), name="stop-request",
                                   daemon=True)
        watcher.start()

        def stop_watching():
            # Ended before Python's own end: a daemon thread that wakes while Python ends is made to exit by
            # pthread_exit, which OneFlow's C++ runtime meets with std::terminate (SIGABRT).
            os.write(write, b"\0")  # not a signal: the watcher's cue to return
            watcher.join()

        atexit.register(stop_watching)

    def __call__(self, signum, frame):
        if self.signum is not None or self.at_once:
            os._exit(128 + signum)  # a half-written save is only ever the .saving folder beside the model
        self.signum = signum

    def watch(self, read, main):
        """Count the signals as they arrive on the wakeup pipe: exit at the second, or when after the first the main
        thread (whose id is main) stays GRACE seconds at one place of its code."""
        first, place, since = None, None, None
        while True:
            if select.select([read], [], [], None if first is None else LOOK)[0]:
                for signum in os.read(read, 64):
                    if signum == 0:
                        return
                    if signum in SIGNALS and first is not None:
                        os._exit(128 + signum)
                    if signum in SIGNALS:
                        first = signum
            if first is None:
                continue
            frame = sys._current_frames().get(main)
            now = (id(frame), frame.f_lasti) if frame is not None else None
            if now != place:
                place, since = now, time.monotonic()
            elif time.monotonic() - since > GRACE:
                print(f"interrupted by {signal.Signals(first).name}: training was inside OneFlow and did not come "
                      f"back within {GRACE} s; stopped at once", file=sys.stderr, flush=True)
                os._exit(128 + first)
