"""Process groups the service starts (job processes, model servers), each in a session of its
own so that ending its group ends whatever it started; and those a crashed service left."""
import os
import signal


def end_group(pid: int, sig=signal.SIGTERM) -> bool:
    """Signal a process group; False if it is gone."""
    try:
        os.killpg(pid, sig)
        return True
    except ProcessLookupError:
        return False


def end_leftover(pid: int, marker: bytes) -> bool:
    """End the group of ``pid`` if that process still runs a command line holding ``marker``
    (a pid the system gave to another program since is left alone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            if marker not in handle.read():
                return False
    except OSError:
        return False
    return end_group(pid)
