"""Create S3 buckets where missing, on the server AWS_ENDPOINT_URL names (`make buckets`).

    python scripts/create_buckets.py texprod-models texprod-outputs
"""

from __future__ import annotations

import sys

from texprod.errors import TexprodError
from texprod.storage import ensure_bucket, s3_endpoint


def main(names: list[str]) -> int:
    if not names:
        print("usage: create_buckets.py BUCKET [BUCKET ...]", file=sys.stderr)
        return 2
    try:
        for name in names:
            created = ensure_bucket(name)
            print(f"s3://{name}: {'created' if created else 'exists'} "
                  f"({s3_endpoint() or 'AWS'})")
    except TexprodError as e:
        print(f"create_buckets: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
