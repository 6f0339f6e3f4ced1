"""A long-lived botocore workload: gets credentials through IMDS, goes
quiet for a while, then needs them again. Credentials of STS's shortest
session are always inside botocore's 15-minute refresh window, so the
second use refreshes them through IMDS, as an SDK does when its copy nears
expiry.

Usage: botocore_refresh.py ENDPOINT_URL QUIET_SECONDS

Prints one JSON line: {"first", "second", "refresh_ms", "error"}."""

import json
import os
import sys
import time

import botocore.session


def main():
    endpoint, quiet = sys.argv[1], float(sys.argv[2])
    os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = endpoint
    session = botocore.session.get_session()
    session.set_config_variable("metadata_service_timeout", 1)
    session.set_config_variable("metadata_service_num_attempts", 1)
    report = {"first": None, "second": None, "refresh_ms": None, "error": None}
    try:
        creds = session.get_credentials()
        report["first"] = creds.get_frozen_credentials().access_key
        time.sleep(quiet)
        began = time.monotonic()
        # What botocore does inside its mandatory refresh window: ask IMDS
        # again, and raise if that fails.
        creds._protected_refresh(is_mandatory=True)
        report["refresh_ms"] = round((time.monotonic() - began) * 1000, 1)
        report["second"] = creds.get_frozen_credentials().access_key
    except Exception as e:  # noqa: BLE001 - the report says what failed
        report["error"] = repr(e)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
