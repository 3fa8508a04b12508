"""The subset of CloudWatch Logs that SageMaker's tools read job logs with: the log groups
``/aws/sagemaker/TrainingJobs`` and ``/aws/sagemaker/ProcessingJobs``, one stream per job
(``JOB/algo-1-EPOCH``, as SageMaker names the first host's), DescribeLogStreams, GetLogEvents
and FilterLogEvents, so the SDK's ``logs=True`` and ``aws logs tail`` follow a local job.

Each line of a job's log is an event; its timestamp is the job's start plus its line number in
milliseconds (the log file keeps no per-line times), which keeps events in order.
"""
import os
from typing import List, Optional

from pipeline.local.errors import ServiceError
from pipeline.local.paging import index_of
from pipeline.local.resources import ACCOUNT, ProcessingJob, TrainingJob

GROUPS = {"/aws/sagemaker/TrainingJobs": TrainingJob,
          "/aws/sagemaker/ProcessingJobs": ProcessingJob}
PAGE = 10000  # GetLogEvents' largest page, as CloudWatch's


class LogsBackend:
    def __init__(self, store, home, region):
        self.store, self.home, self.region = store, home, region

    def _resource(self, group):
        if group not in GROUPS:
            raise ServiceError("ResourceNotFoundException",
                               "The specified log group does not exist.")
        return GROUPS[group]

    def _streams(self, group) -> List[dict]:
        resource = self._resource(group)
        streams = []
        for job in self.store.list(resource.kind):
            name, created = job[resource.name_field], job["CreationTime"]
            path = self.home.job_log(name)
            size = os.path.getsize(path) if os.path.exists(path) else 0
            streams.append({
                "logStreamName": f"{name}/algo-1-{int(created)}",
                "creationTime": int(created * 1000), "storedBytes": size,
                "firstEventTimestamp": int(created * 1000),
                "lastEventTimestamp": int(created * 1000) + max(len(self._lines(name)) - 1, 0),
                "lastIngestionTime": int(job.get("LastModifiedTime", created) * 1000),
                "arn": f"arn:aws:logs:{self.region}:{ACCOUNT}:log-group:{group}:log-stream:"
                       f"{name}/algo-1-{int(created)}"})
        return streams

    def _lines(self, job) -> List[str]:
        path = self.home.job_log(job)
        if not os.path.exists(path):
            return []
        with open(path, errors="replace") as handle:
            return handle.read().splitlines()

    def _stream(self, group, stream) -> dict:
        found = next((s for s in self._streams(group) if s["logStreamName"] == stream), None)
        if found is None:
            raise ServiceError("ResourceNotFoundException",
                               "The specified log stream does not exist.")
        return found

    def _events(self, stream: dict) -> List[dict]:
        job = stream["logStreamName"].split("/")[0]
        start = stream["firstEventTimestamp"]
        return [{"timestamp": start + i, "message": line, "ingestionTime": start + i}
                for i, line in enumerate(self._lines(job))]

    # --- operations ---
    def describe_log_groups(self, log_group_name_prefix="", **_):
        return {"logGroups": [
            {"logGroupName": g, "creationTime": 0, "storedBytes": 0,
             "arn": f"arn:aws:logs:{self.region}:{ACCOUNT}:log-group:{g}:*"}
            for g in GROUPS if g.startswith(log_group_name_prefix or "")]}

    def describe_log_streams(self, log_group_name=None, log_stream_name_prefix="",
                             order_by="LogStreamName", descending=False, next_token=None,
                             limit=50, **_):
        streams = [s for s in self._streams(log_group_name)
                   if s["logStreamName"].startswith(log_stream_name_prefix or "")]
        key = "logStreamName" if order_by == "LogStreamName" else "lastEventTimestamp"
        streams.sort(key=lambda s: s[key], reverse=bool(descending))
        start = _offset(next_token)
        page = streams[start:start + (limit or 50)]
        answer = {"logStreams": page}
        if start + len(page) < len(streams):
            answer["nextToken"] = str(start + len(page))
        return answer

    def get_log_events(self, log_group_name=None, log_stream_name=None, start_time=None,
                       end_time=None, next_token=None, limit=None, start_from_head=False, **_):
        events = [e for e in self._events(self._stream(log_group_name, log_stream_name))
                  if (start_time is None or e["timestamp"] >= start_time)
                  and (end_time is None or e["timestamp"] < end_time)]
        limit = min(limit or PAGE, PAGE)
        if next_token:  # f/N: from event N onwards; b/N: the page before event N
            direction, _, text = next_token.partition("/")
            index = index_of(text)
            if direction not in ("f", "b") or index is None:
                raise ServiceError("InvalidParameterException", "The specified nextToken is "
                                   "invalid.")
            first = index if direction == "f" else max(index - limit, 0)
            end = first + limit if direction == "f" else min(index, len(events))
        else:
            first = 0 if start_from_head else max(len(events) - limit, 0)
            end = first + limit
        page = events[first:end]  # a backward page ends where the later one began
        return {"events": page, "nextForwardToken": f"f/{first + len(page)}",
                "nextBackwardToken": f"b/{first}"}

    def filter_log_events(self, log_group_name=None, log_stream_names=None,
                          log_stream_name_prefix="", start_time=None, end_time=None,
                          filter_pattern="", next_token=None, limit=None, **_):
        streams = [s for s in self._streams(log_group_name)
                   if (not log_stream_names or s["logStreamName"] in log_stream_names)
                   and s["logStreamName"].startswith(log_stream_name_prefix or "")]
        terms = [t.strip('"') for t in (filter_pattern or "").split()]
        events = [dict(e, logStreamName=s["logStreamName"], eventId=f"{s['logStreamName']}/{i}")
                  for s in streams for i, e in enumerate(self._events(s))
                  if (start_time is None or e["timestamp"] >= start_time)
                  and (end_time is None or e["timestamp"] < end_time)
                  and all(t in e["message"] for t in terms)]
        events.sort(key=lambda e: e["timestamp"])
        start, limit = _offset(next_token), min(limit or PAGE, PAGE)
        page = events[start:start + limit]
        answer = {"events": page, "searchedLogStreams": [
            {"logStreamName": s["logStreamName"], "searchedCompletely": True} for s in streams]}
        if start + len(page) < len(events):
            answer["nextToken"] = str(start + len(page))
        return answer


def _offset(token: Optional[str]) -> int:
    if not token:
        return 0
    index = index_of(token)
    if index is None:
        raise ServiceError("InvalidParameterException", "The specified nextToken is invalid.")
    return index
