"""How long the local service takes to check a pipeline definition before CreatePipeline
answers, by number of steps (a chain, the worst case for ordering): it must grow linearly."""
import os
import sys
import time

sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                os.path.dirname(os.path.abspath(__file__))]

from common import machine  # noqa: E402
from pipeline.local.workflow.graph import check_definition  # noqa: E402


def chain(count):
    return {"Version": "2020-12-01", "Steps": [
        {"Name": f"S{i}", "Type": "Fail", "Arguments": {"ErrorMessage": "x"},
         **({"DependsOn": [f"S{i - 1}"]} if i else {})} for i in range(count)]}


def main():
    print(f"machine: {machine()}\n")
    print("| steps  | check s | per step us |")
    print("|--------|---------|-------------|")
    for count in (1000, 2000, 4000, 8000, 16000):
        definition = chain(count)
        started = time.perf_counter()
        check_definition(definition)
        took = time.perf_counter() - started
        print(f"| {count:>6} | {took:>7.3f} | {took / count * 1e6:>11.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
