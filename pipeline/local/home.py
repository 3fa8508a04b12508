"""The local service's folder: every path in it is named here once.

Paths built from names (job, endpoint, endpoint config) are confined to the home: a name that
would point elsewhere is refused before anything touches the disk.
"""
import os


def log_tail(path: str, lines: int = 3) -> str:
    """A log's last non-empty lines, on one line ("" when there is no log): what a failure
    message quotes."""
    try:
        with open(path, errors="replace") as handle:
            return " | ".join([line.strip() for line in handle if line.strip()][-lines:])
    except OSError:
        return ""


class ServiceHome:
    def __init__(self, root: str):
        self.root = os.path.abspath(root)

    @property
    def state_db(self) -> str:
        return os.path.join(self.root, "state.db")

    @property
    def s3_root(self) -> str:
        return os.path.join(self.root, "s3")

    @property
    def logs_dir(self) -> str:
        return os.path.join(self.root, "logs")

    @property
    def endpoints_dir(self) -> str:
        return os.path.join(self.root, "endpoints")

    @property
    def running_jobs_dir(self) -> str:
        """One file per running job process, named by its pid: what a restarted service
        stops if a crash left it running."""
        return os.path.join(self.root, "running-jobs")

    @property
    def service_file(self) -> str:
        """Where a running service records its URL and pid."""
        return os.path.join(self.root, "service.json")

    @property
    def region_file(self) -> str:
        """The region whose ARNs this home's resources carry, fixed at its first start."""
        return os.path.join(self.root, "region")

    @property
    def service_log(self) -> str:
        return os.path.join(self.root, "service.log")

    def job_log(self, job_name: str) -> str:
        return self.confine(self.logs_dir, f"{job_name}.log")

    def endpoint_log(self, endpoint: str, config_name: str) -> str:
        return self.confine(self.logs_dir, f"endpoint-{endpoint}-{config_name}.log")

    def job_dir(self, job_name: str) -> str:
        """The job's stand-in for /opt/ml."""
        return self.confine(self.root, "jobs", job_name)

    def model_dir(self, endpoint: str, config_name: str) -> str:
        return self.confine(self.endpoints_dir, endpoint, config_name)

    def confine(self, base: str, *names: str) -> str:
        """``base/names...``, refused unless it stays strictly inside ``base``."""
        for name in names:
            if not name or name in (".", "..") or "/" in name or "\0" in name:
                raise ValueError(f"{name!r} cannot be used as a file name")
        path = os.path.realpath(os.path.join(base, *names))
        if not path.startswith(os.path.realpath(base) + os.sep):
            raise ValueError(f"{os.path.join(*names)!r} leaves the service's home")
        return path
