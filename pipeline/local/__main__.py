"""``python -m pipeline.local serve --home DIR [--port N]``: run the local SageMaker service."""
import argparse

from pipeline.local.server import serve


def main():
    parser = argparse.ArgumentParser(prog="python -m pipeline.local", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the service in the foreground")
    p.add_argument("--home", required=True, help="state, S3 objects, jobs and logs live here")
    p.add_argument("--port", type=int, default=0, help="0 picks a free loopback port")
    p.add_argument("--job-python", help="python of the job environment (MXNet)")
    p.add_argument("--region", help="the region it serves and its ARNs name (default: the "
                   "home's, fixed at its first start; us-east-1 for a new home)")
    args = parser.parse_args()
    serve(args.home, args.port, args.job_python, args.region)


if __name__ == "__main__":
    main()
