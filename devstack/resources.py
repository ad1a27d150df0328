"""Create every AWS resource the apps expect, idempotently, on the stand-in.

On AWS these come from infrastructure code; locally `ensure_resources` makes
the same shapes on moto. Each `ensure_*` function looks before it creates, so
running it against a stand-in that already has the resources changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any

from botocore.client import BaseClient
from botocore.exceptions import ClientError

from chalicelib.adapters.dynamo import OPEN_VIDEOS_INDEX
from chalicelib.settings import Settings
from devstack.aws import local_client

# The local pump extends a running job's visibility every third of this (10 s)
# and shortens it after a failure; a job a killed pump held is back within
# 30 s even if its successor cannot return it at once.
JOB_VISIBILITY_TIMEOUT_S = 30
DLQ_RETENTION_S = 14 * 24 * 3600
UPLOAD_EVENTS = ["s3:ObjectCreated:*"]
AUTH_FLOWS = ["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"]


def ensure_resources(settings: Settings, endpoint_url: str) -> dict[str, str]:
    """Create the buckets, tables, queues, notifications, SES sender, CDN key and user pool.

    Returns the ids the stand-in generated, as the environment variables the
    apps read them from (`VIDLINE_USER_POOL_ID`, `VIDLINE_USER_POOL_CLIENT_ID`).
    """

    def client(service: str) -> BaseClient:
        return local_client(service, endpoint_url, settings.region)

    s3, sqs = client("s3"), client("sqs")
    for bucket in (settings.uploads_bucket, settings.media_bucket):
        ensure_private_bucket(s3, bucket, settings.region)

    dynamodb = client("dynamodb")
    ensure_table(
        dynamodb,
        settings.videos_table,
        hash_key="owner_id",
        range_key="video_id",
        # The scheduled jobs' sparse index of open videos (chalicelib.adapters.dynamo).
        indexes=[SecondaryIndex(OPEN_VIDEOS_INDEX, hash_key="open_status", range_key="updated_at")],
    )
    # Powertools idempotency layout: key `id`, expiry in `expiration`.
    ensure_table(dynamodb, settings.idempotency_table, hash_key="id", ttl_attribute="expiration")
    # The cache's entries and leases (chalicelib/adapters/cache/dynamodb.py).
    ensure_table(dynamodb, settings.cache_table, hash_key="id", ttl_attribute="expires_at")
    # Usage counters, per user and site-wide per day (chalicelib/adapters/usage_dynamo.py).
    ensure_table(dynamodb, settings.usage_table, hash_key="pk", range_key="sk")

    dlq_url = ensure_queue(sqs, settings.jobs_dlq, {"MessageRetentionPeriod": str(DLQ_RETENTION_S)})
    redrive = {
        "deadLetterTargetArn": queue_arn(sqs, dlq_url),
        "maxReceiveCount": settings.job_max_receives,
    }
    jobs_url = ensure_queue(
        sqs,
        settings.jobs_queue,
        {
            "VisibilityTimeout": str(JOB_VISIBILITY_TIMEOUT_S),
            "RedrivePolicy": json.dumps(redrive),
        },
    )
    ensure_upload_notifications(s3, sqs, settings.uploads_bucket, jobs_url)

    ensure_verified_sender(client("ses"), sender_address(settings.mail_sender))

    ensure_signing_key(client("ssm"), settings.cdn_private_key_parameter)

    cognito = client("cognito-idp")
    pool_id = ensure_user_pool(cognito, f"vidline-{settings.stage}-users")
    client_id = ensure_user_pool_client(cognito, pool_id, f"vidline-{settings.stage}-web")
    return {"VIDLINE_USER_POOL_ID": pool_id, "VIDLINE_USER_POOL_CLIENT_ID": client_id}


def ensure_private_bucket(s3: BaseClient, name: str, region: str) -> None:
    """A bucket that blocks every form of public access."""
    try:
        s3.head_bucket(Bucket=name)
    except ClientError as error:
        if _error_code(error) not in {"404", "NoSuchBucket"}:
            raise
        if region == "us-east-1":  # the one region S3 refuses a constraint for
            s3.create_bucket(Bucket=name)
        else:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    s3.put_public_access_block(
        Bucket=name,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )


@dataclass(frozen=True)
class SecondaryIndex:
    """A global secondary index keyed by string attributes, projecting every attribute."""

    name: str
    hash_key: str
    range_key: str | None = None

    @property
    def keys(self) -> list[tuple[str, str]]:
        return [(self.hash_key, "HASH")] + ([(self.range_key, "RANGE")] if self.range_key else [])

    def definition(self) -> dict[str, Any]:
        return {
            "IndexName": self.name,
            "KeySchema": [{"AttributeName": key, "KeyType": kind} for key, kind in self.keys],
            "Projection": {"ProjectionType": "ALL"},
        }


def ensure_table(
    dynamodb: BaseClient,
    name: str,
    *,
    hash_key: str,
    range_key: str | None = None,
    ttl_attribute: str | None = None,
    indexes: Sequence[SecondaryIndex] = (),
) -> None:
    """An on-demand table keyed by string attributes, with TTL and global
    secondary indexes if asked; an index missing from an existing table is added."""
    keys = [(hash_key, "HASH")] + ([(range_key, "RANGE")] if range_key else [])
    attributes = {key: "S" for key, _ in keys} | {key: "S" for index in indexes for key, _ in index.keys}
    definitions = [{"AttributeName": key, "AttributeType": kind} for key, kind in attributes.items()]
    if name not in _table_names(dynamodb):
        dynamodb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": key, "KeyType": kind} for key, kind in keys],
            AttributeDefinitions=definitions,
            BillingMode="PAY_PER_REQUEST",
            **({"GlobalSecondaryIndexes": [index.definition() for index in indexes]} if indexes else {}),
        )
        dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1})
    else:
        table = dynamodb.describe_table(TableName=name)["Table"]
        present = {index["IndexName"] for index in table.get("GlobalSecondaryIndexes", [])}
        for index in indexes:
            if index.name not in present:
                dynamodb.update_table(
                    TableName=name,
                    AttributeDefinitions=definitions,
                    GlobalSecondaryIndexUpdates=[{"Create": index.definition()}],
                )
    if ttl_attribute:
        ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") not in {"ENABLED", "ENABLING"}:
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={
                    "Enabled": True,
                    "AttributeName": ttl_attribute,
                },
            )


def ensure_queue(sqs: BaseClient, name: str, attributes: dict[str, str]) -> str:
    """A standard queue with `attributes`; returns its URL.

    An existing queue gets the attributes set again, so a changed setting
    (say `job_max_receives`) takes effect without deleting anything.
    """
    try:
        url: str = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as error:
        if "NonExistentQueue" not in _error_code(error):
            raise
        return str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
    if attributes:
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url


def queue_arn(sqs: BaseClient, queue_url: str) -> str:
    """The ARN of the queue at `queue_url`."""
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]
    return str(attributes["QueueArn"])


def ensure_upload_notifications(s3: BaseClient, sqs: BaseClient, bucket: str, queue_url: str) -> None:
    """Send every new object in `bucket` to the queue as an S3 event.

    S3 posts an `s3:TestEvent` message whenever the configuration is set;
    it is removed here so the worker's first message is a real upload.
    (moto needs no queue policy for this; real SQS does.)
    """
    arn = queue_arn(sqs, queue_url)
    wanted = {"Id": "vidline-uploads-to-jobs", "QueueArn": arn, "Events": UPLOAD_EVENTS}
    current = s3.get_bucket_notification_configuration(Bucket=bucket).get("QueueConfigurations", [])
    if any(c.get("QueueArn") == arn and c.get("Events") == UPLOAD_EVENTS for c in current):
        return
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [wanted]}
    )
    _discard_s3_test_events(sqs, queue_url)


def _discard_s3_test_events(sqs: BaseClient, queue_url: str) -> None:
    # VisibilityTimeout=0 leaves any other message visible for the worker.
    response = sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=0,
        VisibilityTimeout=0,
    )
    for message in response.get("Messages", []):
        if _is_s3_test_event(message.get("Body", "")):
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def _is_s3_test_event(body: str) -> bool:
    try:
        return bool(json.loads(body).get("Event") == "s3:TestEvent")
    except (ValueError, AttributeError):
        return False


def sender_address(mail_sender: str) -> str:
    """The bare address in a sender like ``"Vidline <no-reply@example.com>"``."""
    address = parseaddr(mail_sender)[1]
    if "@" not in address:
        raise ValueError(f"VIDLINE_MAIL_SENDER has no email address in it: {mail_sender!r}")
    return address


def ensure_verified_sender(ses: BaseClient, address: str) -> None:
    """Verify `address` so SES (which rejects unverified senders) accepts mail from it."""
    if address not in ses.list_identities(IdentityType="EmailAddress")["Identities"]:
        ses.verify_email_identity(EmailAddress=address)


def ensure_user_pool(cognito: BaseClient, name: str) -> str:
    """A user pool that signs people in by email; returns its id."""
    for page in cognito.get_paginator("list_user_pools").paginate(MaxResults=60):
        for pool in page["UserPools"]:
            if pool["Name"] == name:
                return str(pool["Id"])
    created = cognito.create_user_pool(
        PoolName=name,
        UsernameAttributes=["email"],
        AutoVerifiedAttributes=["email"],
    )
    return str(created["UserPool"]["Id"])


def ensure_user_pool_client(cognito: BaseClient, pool_id: str, name: str) -> str:
    """A public app client (no secret) for password sign-in; returns its id."""
    paginator = cognito.get_paginator("list_user_pool_clients")
    for page in paginator.paginate(UserPoolId=pool_id, MaxResults=60):
        for app_client in page["UserPoolClients"]:
            if app_client["ClientName"] == name:
                return str(app_client["ClientId"])
    created = cognito.create_user_pool_client(
        UserPoolId=pool_id,
        ClientName=name,
        GenerateSecret=False,
        ExplicitAuthFlows=AUTH_FLOWS,
        # As infra/stack.yaml's client: sign-in and confirmation do not reveal who has an account.
        PreventUserExistenceErrors="ENABLED",
    )
    return str(created["UserPoolClient"]["ClientId"])


def ensure_signing_key(ssm: BaseClient, parameter: str) -> None:
    """An RSA key for signing CDN URLs, as a SecureString `parameter` (kept if there is one)."""
    try:
        ssm.get_parameter(Name=parameter, WithDecryption=True)
        return
    except ClientError as error:
        if _error_code(error) != "ParameterNotFound":
            raise
    from deploy.executor import new_signing_key  # the same kind of key a deploy makes

    private_pem, _ = new_signing_key()
    ssm.put_parameter(Name=parameter, Type="SecureString", Value=private_pem)


def _table_names(dynamodb: BaseClient) -> set[str]:
    names: set[str] = set()
    for page in dynamodb.get_paginator("list_tables").paginate():
        names.update(page["TableNames"])
    return names


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))
