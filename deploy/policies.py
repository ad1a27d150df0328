"""Each Lambda's IAM policy: the exact actions on the exact resources its code uses.

Chalice's policy generator cannot see calls made through the composition
root, so `autogen_policy` is off and the deploy writes these documents to
each app's ``.chalice/policy-<stage>.json`` from the stack's outputs.
Every statement says which code needs it. `STAR_RESOURCE_ACTIONS` lists
the actions AWS offers no resource-level permission for; only they get
``"Resource": "*"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chalicelib.adapters.dynamo import OPEN_VIDEOS_INDEX

# Actions that AWS authorizes only on "*" (no resource types in the service
# authorization reference).
STAR_RESOURCE_ACTIONS = frozenset({"ses:GetSendQuota", "xray:PutTelemetryRecords", "xray:PutTraceSegments"})


@dataclass(frozen=True)
class PolicyTargets:
    """The names and ARNs the policies are about, from the stack's outputs."""

    partition: str
    region: str
    account_id: str
    videos_table_arn: str
    idempotency_table_arn: str
    cache_table_arn: str
    usage_table_arn: str
    uploads_bucket: str
    media_bucket: str
    jobs_queue_arn: str
    jobs_dlq_arn: str
    user_pool_arn: str
    sender_identity_arn: str
    cdn_private_key_parameter: str
    # In the SES sandbox a recipient must be a verified identity too, and
    # SendEmail is then authorized on the recipients' identities as well.
    sandbox_recipient_identity_arns: tuple[str, ...] = field(default=())

    def bucket_arn(self, bucket: str) -> str:
        return f"arn:{self.partition}:s3:::{bucket}"

    def objects_arn(self, bucket: str, prefix: str) -> str:
        return f"arn:{self.partition}:s3:::{bucket}/{prefix}*"

    def log_group_arn(self, function_name: str) -> str:
        return (
            f"arn:{self.partition}:logs:{self.region}:{self.account_id}:log-group:/aws/lambda/{function_name}"
        )

    def videos_index_arn(self, index: str) -> str:
        return f"{self.videos_table_arn}/index/{index}"

    def parameter_arn(self, name: str) -> str:
        return f"arn:{self.partition}:ssm:{self.region}:{self.account_id}:parameter/{name.lstrip('/')}"


def _statement(sid: str, actions: list[str], resources: list[str]) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": resources}


def _logs(t: PolicyTargets, function_names: list[str]) -> list[dict[str, Any]]:
    # The infrastructure stack makes each function's log group (with its
    # retention) before the function exists, so no logs:CreateLogGroup.
    groups = [t.log_group_arn(name) for name in function_names]
    return [
        _statement(
            "OwnLogStreams",
            ["logs:CreateLogStream", "logs:PutLogEvents"],
            [f"{group}:log-stream:*" for group in groups],
        ),
    ]


def _cache(t: PolicyTargets) -> list[dict[str, Any]]:
    # chalicelib/adapters/cache/dynamodb.py: read and check (GetItem), write and
    # take a lease (PutItem, conditional), invalidate and give a lease back (DeleteItem).
    return [
        _statement(
            "CacheTable",
            ["dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem"],
            [t.cache_table_arn],
        )
    ]


def _usage(t: PolicyTargets, actions: list[str]) -> list[dict[str, Any]]:
    # chalicelib/adapters/usage_dynamo.py. Counted writes are TransactWriteItems,
    # which IAM authorizes per item: UpdateItem (ADD) on the counters,
    # ConditionCheckItem for the monthly minutes quota at a create.
    return [_statement("UsageTable", actions, [t.usage_table_arn])]


def _tracing() -> list[dict[str, Any]]:
    # Powertools Tracer (chalicelib/telemetry.py, VIDLINE_TRACING): the X-Ray SDK
    # sends segments; X-Ray has no resource-level permissions for these.
    return [_statement("Tracing", ["xray:PutTelemetryRecords", "xray:PutTraceSegments"], ["*"])]


def api_policy(t: PolicyTargets, function_name: str) -> dict[str, Any]:
    """The API Lambda's policy (chalicelib.services through the adapters)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            *_logs(t, [function_name]),
            # DynamoVideoRepository: add (PutItem), get (GetItem), list_for_owner
            # (Query), delete (DeleteItem); update is the worker's, but the
            # repository's conditional writes are UpdateItem too. check: DescribeTable.
            _statement(
                "VideosTable",
                [
                    "dynamodb:DeleteItem",
                    "dynamodb:DescribeTable",
                    "dynamodb:GetItem",
                    "dynamodb:PutItem",
                    "dynamodb:Query",
                    "dynamodb:UpdateItem",
                ],
                [t.videos_table_arn],
            ),
            *_cache(t),
            # Counted create and delete (UpdateItem, ConditionCheckItem); /stats reads
            # (Query, and BatchGetItem / GetItem for the quotas and the roll-up marker).
            *_usage(
                t,
                [
                    "dynamodb:BatchGetItem",
                    "dynamodb:ConditionCheckItem",
                    "dynamodb:GetItem",
                    "dynamodb:Query",
                    "dynamodb:UpdateItem",
                ],
            ),
            # presign_upload signs a POST with these credentials, so the
            # browser's upload is authorized as s3:PutObject by this role.
            # delete_prefix: DeleteObjects is authorized per key as DeleteObject.
            # Multipart uploads (chalicelib.uploads): Create, the presigned
            # UploadPart PUTs and Complete are s3:PutObject; list_parts is
            # ListMultipartUploadParts; deleting a video aborts its upload.
            _statement(
                "UploadObjects",
                [
                    "s3:AbortMultipartUpload",
                    "s3:DeleteObject",
                    "s3:ListMultipartUploadParts",
                    "s3:PutObject",
                ],
                [t.objects_arn(t.uploads_bucket, "uploads/")],
            ),
            # abort_multipart_uploads finds a video's open uploads by prefix.
            _statement(
                "UploadsInProgress",
                ["s3:ListBucketMultipartUploads"],
                [t.bucket_arn(t.uploads_bucket)],
            ),
            _statement("MediaObjects", ["s3:DeleteObject"], [t.objects_arn(t.media_bucket, "media/")]),
            # delete_prefix lists; check() is HeadBucket, authorized as ListBucket.
            _statement(
                "ListBuckets",
                ["s3:ListBucket"],
                [t.bucket_arn(t.uploads_bucket), t.bucket_arn(t.media_bucket)],
            ),
            # Sign-up, confirm and login are Cognito's public (unsigned) calls;
            # only the health check's DescribeUserPool needs IAM.
            # (Absent only on a target without Cognito, where nothing runs the API.)
            *(
                [_statement("UserPool", ["cognito-idp:DescribeUserPool"], [t.user_pool_arn])]
                if t.user_pool_arn
                else []
            ),
            # SignedCdnUrls reads the private key; the aws/ssm key decrypts for SSM.
            _statement(
                "CdnSigningKey",
                ["ssm:GetParameter"],
                [t.parameter_arn(t.cdn_private_key_parameter)],
            ),
            # SesMailer.check (health): GetSendQuota has no resource-level permission.
            _statement("MailHealth", ["ses:GetSendQuota"], ["*"]),
            # SqsJobQueue.check and dead_letter_depth (health): find both queues
            # and read their attributes; the API sends, receives and deletes nothing.
            _statement(
                "QueueHealth",
                ["sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
                [t.jobs_queue_arn, t.jobs_dlq_arn],
            ),
            *_tracing(),
        ],
    }


def workers_policy(t: PolicyTargets, function_names: list[str]) -> dict[str, Any]:
    """The worker Lambdas' policy (workers/app.py → chalicelib.processing)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            *_logs(t, function_names),
            # The SQS event source mappings poll with the functions' role:
            # process_upload's the jobs queue, fail_dead_upload's the dead-letter
            # queue. These three are what Lambda's pollers call (as in AWS's
            # AWSLambdaSQSQueueExecutionRole); no code of ours calls SQS on AWS,
            # so no ChangeMessageVisibility or SendMessage.
            _statement(
                "JobQueues",
                ["sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"],
                [t.jobs_queue_arn, t.jobs_dlq_arn],
            ),
            # UploadProcessor: get, update, claim/release_notification (UpdateItem).
            _statement("VideosTable", ["dynamodb:GetItem", "dynamodb:UpdateItem"], [t.videos_table_arn]),
            # The scheduled jobs (chalicelib/housekeeping.py) find idle open videos
            # with list_idle: a Query of the sparse open-videos index only.
            _statement("OpenVideosIndex", ["dynamodb:Query"], [t.videos_index_arn(OPEN_VIDEOS_INDEX)]),
            # stuck-jobs puts a stuck upload's job back on the jobs queue
            # (SqsJobQueue.requeue_upload finds the queue by name, then sends).
            _statement("RequeueJobs", ["sqs:GetQueueUrl", "sqs:SendMessage"], [t.jobs_queue_arn]),
            # abandoned-uploads aborts the unfinished multipart uploads of an
            # abandoned video (S3BlobStore.abort_multipart_uploads lists, then aborts).
            _statement(
                "AbandonedMultipartUploads",
                ["s3:AbortMultipartUpload"],
                [t.objects_arn(t.uploads_bucket, "uploads/")],
            ),
            _statement(
                "ListMultipartUploads", ["s3:ListBucketMultipartUploads"], [t.bucket_arn(t.uploads_bucket)]
            ),
            # Powertools DynamoDBPersistenceLayer: put, get, update, delete records.
            _statement(
                "IdempotencyTable",
                ["dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
                [t.idempotency_table_arn],
            ),
            *_cache(t),
            # Counted ready/failed/measured updates (UpdateItem); the rollup job reads
            # the shards (Query), its marker (GetItem) and stores days (BatchWriteItem, PutItem).
            *_usage(
                t,
                [
                    "dynamodb:BatchWriteItem",
                    "dynamodb:GetItem",
                    "dynamodb:PutItem",
                    "dynamodb:Query",
                    "dynamodb:UpdateItem",
                ],
            ),
            # head + download the source (HeadObject is GetObject); delete_prefix
            # of an orphaned upload.
            _statement(
                "UploadObjects",
                ["s3:DeleteObject", "s3:GetObject"],
                [t.objects_arn(t.uploads_bucket, "uploads/")],
            ),
            # upload_file (multipart for big files, aborted on failure);
            # delete_prefix when the video was deleted mid-encode.
            _statement(
                "MediaObjects",
                ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:PutObject"],
                [t.objects_arn(t.media_bucket, "media/")],
            ),
            # delete_prefix lists; without ListBucket a missing source is a 403, not a 404.
            _statement(
                "ListBuckets",
                ["s3:ListBucket"],
                [t.bucket_arn(t.uploads_bucket), t.bucket_arn(t.media_bucket)],
            ),
            _statement(
                "SendMail",
                ["ses:SendEmail"],
                [t.sender_identity_arn, *t.sandbox_recipient_identity_arns],
            ),
            *_tracing(),
        ],
    }


def wildcard_grants(policy: dict[str, Any]) -> list[str]:
    """What in `policy` grants every action or every resource where AWS does not require it."""
    problems = []
    for statement in policy["Statement"]:
        actions = _as_list(statement.get("Action", []))
        resources = _as_list(statement.get("Resource", []))
        sid = statement.get("Sid", "?")
        if "NotAction" in statement or "NotResource" in statement:
            problems.append(f"{sid}: NotAction/NotResource grant everything else")
        for action in actions:
            if action == "*" or "*" in action.partition(":")[2]:
                problems.append(f"{sid}: action {action!r} is a wildcard")
        if "*" in resources and not set(actions) <= STAR_RESOURCE_ACTIONS:
            problems.append(f"{sid}: resource '*' for {sorted(set(actions) - STAR_RESOURCE_ACTIONS)}")
        for resource in resources:
            parts = resource.split(":", 5)
            if resource != "*" and (len(parts) < 6 or parts[5] in {"", "*"} or "*" in parts[2]):
                problems.append(f"{sid}: resource {resource!r} names no particular resource")
    return problems


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)
