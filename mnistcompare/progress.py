"""The status line of long work (rounds of evaluate, trials of tune): done/total, elapsed, time left."""
import sys
import time


class Progress:
    """One status line across rounds or trials (done/total, elapsed, time left), rewritten in place on
    stderr; silent when stderr is not a terminal or when asked (`--quiet`)."""

    def __init__(self, total, what="rounds", enabled=True, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.what, self.start = total, what, time.monotonic()
        self.enabled = enabled and total > 0 and self.stream.isatty()

    def update(self, done):
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        left = f", about {_duration(elapsed / done * (self.total - done))} left" if 0 < done < self.total else ""
        self.stream.write(f"\r\033[K[{done}/{self.total} {self.what}, {_duration(elapsed)} elapsed{left}]")
        self.stream.flush()

    def clear(self):
        """Before printing a line of its own, and at the end."""
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _duration(seconds):
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
