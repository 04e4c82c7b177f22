"""Stop signals for `herald run` and `herald callback-server`: the first one stops, once.

A terminal's Ctrl-C reaches every process of its foreground group and a supervisor then
sends SIGTERM too; people press Ctrl-C twice; process managers send SIGTERM, then SIGINT.
kopf and aiohttp each resolve their stop on the first signal and are not ready for a
second: kopf's `Future.set_result` raises InvalidStateError from the loop (an ERROR and a
Traceback in the log), and a signal that arrives once their loop has closed meets
Python's default handlers, which kill the process (exit -2 or -15 instead of 0).

`StopSignals` takes SIGINT and SIGTERM over for the whole life of the process's loop: the
first resolves `received` (the caller logs one INFO line and stops, in its usual order),
later ones are only logged at DEBUG. When the loop is done, `ignore_from_now_on()` turns
both signals off until the process exits, so nothing interrupts the last of the shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

log = logging.getLogger("herald.stopping")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """SIGINT/SIGTERM handlers on the running loop; `received` resolves with the first."""

    def __init__(self, ultimate_timeout: float | None = None) -> None:
        # kopf SIGKILLs a process still exiting this long after a signal; a stop flag (how
        # Herald hands signals to kopf) turns that off, so the same safety net is kept here.
        self.ultimate_timeout = ultimate_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._received: asyncio.Future[signal.Signals] | None = None

    @property
    def received(self) -> asyncio.Future[signal.Signals]:
        if self._received is None:
            raise RuntimeError("StopSignals.install() was not called")
        return self._received

    def install(self) -> asyncio.Future[signal.Signals]:
        """(Re-)install the handlers on the running loop, replacing any others (kopf's)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._received = loop.create_future()
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        return self.received

    def _on_signal(self, sig: signal.Signals) -> None:
        received = self.received
        if received.done():
            log.debug("%s received while stopping: already stopping", sig.name)
            return
        received.set_result(sig)
        if self.ultimate_timeout is not None and self._loop is not None:
            self._loop.call_later(self.ultimate_timeout, os.kill, os.getpid(), signal.SIGKILL)

    def ignore_from_now_on(self) -> None:
        """Take the handlers off the loop and ignore both signals until the process exits."""
        if self._loop is not None and not self._loop.is_closed():
            for sig in SIGNALS:
                self._loop.remove_signal_handler(sig)
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
