"""server.py - what every private server of the kit (Redis, spamd, rspamd)
does alike: stop its process by PID (SIGTERM, then SIGKILL after a bound),
remove its own temporary directory at close, and work as a context manager.

A subclass sets self.proc (the Popen, or None), self.dir and self._own_dir
(True when it made the directory itself), and defines start(); stop_timeout
is how long SIGTERM may take before SIGKILL."""

import shutil
import signal
import subprocess


class PrivateServer:
    stop_timeout = 5.0

    def stop(self):
        p, self.proc = self.proc, None
        if p is None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(self.stop_timeout)
        self.stopped()

    def stopped(self):
        """After the process is gone (close its log files, say)."""

    def close(self):
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
