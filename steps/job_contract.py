"""The container contract as the job scripts meet it, in one place: where a job explains its
failure (SageMaker reads the file into the job's FailureReason), and how it says so.

Shipped beside every step script (the steps' code folder) and in the training source archive,
so each job imports it from its own folder.
"""
import os
import sys

_OUTPUT = os.environ.get("SM_OUTPUT_DIR", "/opt/ml/output")
PROCESSING_FAILURE_FILE = os.path.join(_OUTPUT, "message")  # /opt/ml/output/message
TRAINING_FAILURE_FILE = os.path.join(_OUTPUT, "failure")  # /opt/ml/output/failure


def fail(message: str, failure_file: str) -> int:
    """Say why the job failed, on stderr and in the failure file, and give the exit code (1).
    A failure file that cannot be written (a full disk) never hides the message."""
    print(message, file=sys.stderr, flush=True)
    try:
        os.makedirs(os.path.dirname(failure_file), exist_ok=True)
        with open(failure_file, "w") as handle:
            handle.write(message)
    except OSError:
        pass
    return 1
