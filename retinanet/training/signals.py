"""Stopping a run cleanly on Ctrl-C or SIGTERM: the training loop asks between two steps.

The first signal only sets a flag (``StopRequest.requested``); the loop finishes its step, the
trainer saves ``checkpoint_interrupted.pt`` and exits with 128 + the signal number. A second
signal raises KeyboardInterrupt at once, except while a checkpoint is being written
(``StopRequest.saving``): then the write is finished first, so that no epoch is lost.
"""
import contextlib
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """First Ctrl-C or SIGTERM (what schedulers and ``docker stop`` send): finish the current step,
    save, exit with 128 + the signal number. A second one stops at once."""

    def __init__(self):
        self.signum = None
        self._saving = 0
        self._stop_after_save = False

    def requested(self):
        return self.signum is not None

    @property
    def signal_name(self):
        if self.signum is None:
            return None
        return "Ctrl-C" if self.signum == signal.SIGINT else signal.Signals(self.signum).name

    def exit_code(self):
        return 128 + (self.signum or signal.SIGINT)

    @contextlib.contextmanager
    def saving(self, stop_after=True):
        """A block that writes a checkpoint: a second signal inside it waits for the block to end, and
        then (``stop_after``) raises KeyboardInterrupt; the program is stopping anyway otherwise."""
        self._saving += 1
        try:
            yield
        finally:
            self._saving -= 1
        if not self._saving and self._stop_after_save and stop_after:
            self._stop_after_save = False
            raise KeyboardInterrupt

    def _handle(self, signum, frame):
        if self.signum is not None:
            if self._saving:
                self._stop_after_save = True
                print(f"\n{signal.Signals(signum).name}: a checkpoint is being written; stopping as soon as it is "
                      "complete", flush=True)
                return
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{self.signal_name}: stopping after this step and saving a checkpoint "
              "(a second one stops at once)", flush=True)

    def on_stop_signals(self):
        """Context manager installing the handler (only the main thread may install signal handlers)."""
        return _SignalHandler(STOP_SIGNALS, self._handle)


class _SignalHandler:
    def __init__(self, signums, handler):
        self.signums, self.handler, self.previous = signums, handler, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {signum: signal.signal(signum, self.handler) for signum in self.signums}

    def __exit__(self, *exc):
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)
