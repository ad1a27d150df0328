"""boto3 clients and credentials for the local AWS stand-in (moto)."""

from __future__ import annotations

import boto3
from botocore.client import BaseClient
from botocore.config import Config

# moto accepts any credentials; fixed dummy ones keep a developer's real
# credentials (and profiles) out of local mode entirely.
LOCAL_CREDENTIALS: dict[str, str] = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
}


def local_client(service: str, endpoint_url: str, region: str) -> BaseClient:
    """A boto3 client for `service` on the stand-in at `endpoint_url`."""
    return boto3.session.Session().client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=LOCAL_CREDENTIALS["AWS_SESSION_TOKEN"],
        config=Config(retries={"max_attempts": 2, "mode": "standard"}),
    )
