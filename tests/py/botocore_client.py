"""A real botocore client of the agent: fetches credentials and the region
through IMDS exactly as botocore does on EC2, and prints what it got as
JSON. Usage: botocore_client.py ENDPOINT_URL [STS_URL]

With STS_URL, it also calls sts:GetCallerIdentity there with the
credentials it got, and reports the ARN STS saw.

The agent's endpoint is given as botocore is told on a real host, through
AWS_EC2_METADATA_SERVICE_ENDPOINT. Every other credential source is
disabled by the caller (no env keys, /dev/null config files)."""

import json
import os
import sys

import botocore.session
from botocore.utils import InstanceMetadataRegionFetcher


def main():
    endpoint = sys.argv[1]
    os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = endpoint
    session = botocore.session.get_session()
    # What a test of a long wait (an MFA prompt) tells botocore; 1 s, as
    # botocore's own default, otherwise.
    timeout = int(os.environ.get("IMDS_TEST_METADATA_TIMEOUT", "1"))
    session.set_config_variable("metadata_service_timeout", timeout)
    session.set_config_variable("metadata_service_num_attempts", 1)
    creds = session.get_credentials()
    report = {"method": None}
    if creds is not None:
        frozen = creds.get_frozen_credentials()
        report = {
            "method": creds.method,
            "access_key": frozen.access_key,
            "secret_key": frozen.secret_key,
            "token": frozen.token,
        }
    fetcher = InstanceMetadataRegionFetcher(
        timeout=1,
        num_attempts=1,
        config={"ec2_metadata_service_endpoint": endpoint},
    )
    try:
        report["region"] = fetcher.retrieve_region()
    except Exception as e:  # noqa: BLE001 - the report says what failed
        report["region_error"] = repr(e)
    if len(sys.argv) > 2 and creds is not None:
        sts = session.create_client(
            "sts", region_name=report.get("region") or "us-east-1", endpoint_url=sys.argv[2]
        )
        report["caller_arn"] = sts.get_caller_identity()["Arn"]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
