"""What every benchmark prints first: the machine it ran on (standard library only, so the
benchmarks of both environments can use it)."""
import os
import platform


def machine(extra=""):
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}{extra}"
