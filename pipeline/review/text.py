"""How times, durations and accuracies read, the same on pages and in the CLI."""
import time

from pipeline.review.sources import epoch


def when(value) -> str:
    seconds = epoch(value)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else ""


def short_when(value) -> str:
    """A date for a list's cell: month, day and time, on one line."""
    seconds = epoch(value)
    return time.strftime("%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else ""


def took(seconds) -> str:
    if seconds is None:
        return ""
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def accuracy_text(value) -> str:
    return f"{value:.4f}" if value is not None else ""
