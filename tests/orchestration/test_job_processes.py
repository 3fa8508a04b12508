"""Job processes: each in a session of its own, ended with the service, and ended by a
restarted service when a crash left them running."""
import os
import subprocess
import sys
import time

from pipeline.local.home import ServiceHome
from pipeline.local.jobs import JobRunner
from pipeline.local.s3 import LocalS3

SLEEP = "import time; time.sleep(60)"


def runner(tmp_path, python=sys.executable):
    home = ServiceHome(str(tmp_path / "home"))
    os.makedirs(home.root, exist_ok=True)
    return JobRunner(home, LocalS3(home.s3_root), python, {})


def ended(proc, timeout=10.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return True
        time.sleep(0.02)
    return False


def test_a_job_process_has_its_own_session_and_ends_when_the_service_closes(tmp_path):
    jobs = runner(tmp_path)
    with open(tmp_path / "log", "wb") as log:
        proc = jobs._spawn("job-1", "owner", ["python", "-c", SLEEP], dict(os.environ),
                           str(tmp_path), log)
    assert os.getsid(proc.pid) == proc.pid != os.getsid(0)
    assert os.listdir(jobs.home.running_jobs_dir) == [str(proc.pid)]
    jobs.stop_all()
    assert ended(proc)
    jobs._wait(["job-1"])
    assert os.listdir(jobs.home.running_jobs_dir) == []


def test_a_restarted_service_ends_the_jobs_a_crash_left_and_nothing_else(tmp_path):
    first = runner(tmp_path)
    orphan = subprocess.Popen([sys.executable, "-c", SLEEP], start_new_session=True)
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)  # not a job's Python
    try:
        for proc in (orphan, stranger):
            with open(os.path.join(first.home.running_jobs_dir, str(proc.pid)), "w") as handle:
                handle.write("job")
        runner(tmp_path).stop_leftovers()
        assert ended(orphan)
        assert stranger.poll() is None
        assert os.listdir(first.home.running_jobs_dir) == []
    finally:
        stranger.kill()
        orphan.kill()


def test_stopping_an_owner_ends_what_it_starts_later_too(tmp_path):
    jobs = runner(tmp_path)
    jobs.stop_owner("execution-1")
    with open(tmp_path / "log", "wb") as log:
        proc = jobs._spawn("late", "execution-1", ["python", "-c", SLEEP], dict(os.environ),
                           str(tmp_path), log)
    assert ended(proc)
    jobs.resume_owner("execution-1")
    with open(tmp_path / "log", "wb") as log:
        proc = jobs._spawn("again", "execution-1", ["python", "-c", SLEEP], dict(os.environ),
                           str(tmp_path), log)
    assert not ended(proc, timeout=0.3)
    assert jobs.stop_owner("execution-1")
    assert ended(proc)


def test_the_service_ends_leftovers_when_it_starts_and_its_jobs_when_it_closes(tmp_path):
    from pipeline.local.server import DEFAULT_JOB_PYTHON, LocalSageMaker

    job_python = os.environ.get("MNIST_JOB_PYTHON", DEFAULT_JOB_PYTHON)
    home = ServiceHome(str(tmp_path / "home"))
    os.makedirs(home.running_jobs_dir)
    orphan = subprocess.Popen([job_python, "-c", SLEEP], start_new_session=True)
    try:
        with open(os.path.join(home.running_jobs_dir, str(orphan.pid)), "w") as handle:
            handle.write("a job of a service that crashed")
        service = LocalSageMaker(home.root)
        assert ended(orphan)
        with open(tmp_path / "log", "wb") as log:
            proc = service.jobs._spawn("job-2", "owner", ["python", "-c", SLEEP],
                                       dict(os.environ), str(tmp_path), log)
        service.close()
        assert ended(proc)
    finally:
        orphan.kill()
