"""Least privilege: each Lambda's policy names exact actions on exact resources."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any

import pytest

from deploy.policies import PolicyTargets, api_policy, wildcard_grants, workers_policy
from devstack.client import ROOT
from tests.deploy.examples import TARGETS

API = api_policy(TARGETS, "vidline-api-prod")
WORKER_FUNCTIONS = ["vidline-workers-prod-process_upload", "vidline-workers-prod-fail_dead_upload"]
WORKERS = workers_policy(TARGETS, WORKER_FUNCTIONS)

# Every boto3 call the adapters make, and the IAM action that authorizes it.
IAM_ACTION_OF_CALL = {
    "generate_presigned_post": "s3:PutObject",
    "head_object": "s3:GetObject",
    # A presigned GET (ffmpeg reads the upload) is authorized by the signer's s3:GetObject.
    "generate_presigned_url": "s3:GetObject",
    "upload_file": "s3:PutObject",
    "put_object": "s3:PutObject",  # small files (HLS segments, playlists)
    "delete_objects": "s3:DeleteObject",
    "get_paginator:list_objects_v2": "s3:ListBucket",
    "get_paginator:list_multipart_uploads": "s3:ListBucketMultipartUploads",
    # Multipart uploads; UploadPart is a presigned PUT, s3:PutObject as well.
    "create_multipart_upload": "s3:PutObject",
    "complete_multipart_upload": "s3:PutObject",
    "list_parts": "s3:ListMultipartUploadParts",
    "abort_multipart_upload": "s3:AbortMultipartUpload",
    "get_queue_url": "sqs:GetQueueUrl",
    "send_message": "sqs:SendMessage",
    "get_queue_attributes": "sqs:GetQueueAttributes",
    "head_bucket": "s3:ListBucket",
    "send_email": "ses:SendEmail",
    "get_send_quota": "ses:GetSendQuota",
    "describe_user_pool": "cognito-idp:DescribeUserPool",
    "get_parameter": "ssm:GetParameter",
    # Cognito's public, unsigned calls: no IAM.
    "sign_up": None,
    "confirm_sign_up": None,
    "resend_confirmation_code": None,
    "initiate_auth": None,
    "admin_confirm_sign_up": None,  # local mode only (auto_confirm_signups)
}


def granted(policy: dict[str, Any]) -> dict[str, set[str]]:
    """action -> resources it is granted on."""
    grants: dict[str, set[str]] = {}
    for statement in policy["Statement"]:
        for action in statement["Action"]:
            grants.setdefault(action, set()).update(statement["Resource"])
    return grants


@pytest.mark.parametrize("policy", [API, WORKERS], ids=["api", "workers"])
def test_policy_grants_no_wildcard_action_or_resource(policy: dict[str, Any]) -> None:
    assert wildcard_grants(policy) == []


def test_the_check_catches_wildcards() -> None:
    def policy(action: str, resource: str) -> dict[str, Any]:
        return {"Statement": [{"Sid": "X", "Effect": "Allow", "Action": [action], "Resource": [resource]}]}

    assert wildcard_grants(policy("s3:*", "arn:aws:s3:::b/*"))
    assert wildcard_grants(policy("*", "arn:aws:s3:::b"))
    assert wildcard_grants(policy("s3:GetObject", "*"))
    assert wildcard_grants(policy("s3:GetObject", "arn:aws:s3:::*"))
    assert wildcard_grants(policy("ses:GetSendQuota", "*")) == []  # AWS offers nothing narrower


def test_worker_reads_uploads_writes_media_and_mails_only_as_the_sender() -> None:
    grants = granted(WORKERS)
    uploads = "arn:aws:s3:::vidline-prod-uploads-111122223333/uploads/*"
    media = "arn:aws:s3:::vidline-prod-media-111122223333/media/*"
    assert grants["s3:GetObject"] == {uploads}
    assert grants["s3:PutObject"] == {media}
    assert grants["ses:SendEmail"] == {TARGETS.sender_identity_arn}
    # The usage table's PutItem is the rollup job's marker (chalicelib/adapters/usage_dynamo.py).
    assert grants["dynamodb:PutItem"] == {
        TARGETS.idempotency_table_arn,
        TARGETS.cache_table_arn,
        TARGETS.usage_table_arn,
    }
    assert "dynamodb:DeleteItem" not in {a for a, r in grants.items() if TARGETS.videos_table_arn in r}
    assert grants["logs:PutLogEvents"] == {
        f"arn:aws:logs:eu-west-1:111122223333:log-group:/aws/lambda/{name}:log-stream:*"
        for name in WORKER_FUNCTIONS
    }


def test_workers_consume_the_jobs_queue_and_the_dead_letter_queue_and_nothing_more() -> None:
    """What Lambda's SQS pollers call, with the functions' role, on each trigger's queue;
    and stuck-jobs requeues onto the jobs queue (GetQueueUrl, SendMessage)."""
    grants = granted(WORKERS)
    queues = {TARGETS.jobs_queue_arn, TARGETS.jobs_dlq_arn}
    sqs = {action: resources for action, resources in grants.items() if action.startswith("sqs:")}
    assert sqs == {
        "sqs:GetQueueUrl": {TARGETS.jobs_queue_arn},
        "sqs:SendMessage": {TARGETS.jobs_queue_arn},
        "sqs:ReceiveMessage": queues,
        "sqs:DeleteMessage": queues,
        "sqs:GetQueueAttributes": queues,
    }
    # The API only looks at both queues, for its health check.
    api_sqs = {action: resources for action, resources in granted(API).items() if action.startswith("sqs:")}
    assert api_sqs == {"sqs:GetQueueAttributes": queues, "sqs:GetQueueUrl": queues}


def test_api_signs_uploads_but_cannot_read_sources_or_write_media() -> None:
    grants = granted(API)
    assert grants["s3:PutObject"] == {"arn:aws:s3:::vidline-prod-uploads-111122223333/uploads/*"}
    assert "s3:GetObject" not in grants
    assert not any(
        action.startswith(("sqs:Send", "sqs:Receive", "sqs:Delete", "ses:Send")) for action in grants
    )
    assert grants["ssm:GetParameter"] == {
        "arn:aws:ssm:eu-west-1:111122223333:parameter/vidline/prod/cdn-private-key"
    }
    assert grants["cognito-idp:DescribeUserPool"] == {TARGETS.user_pool_arn}


def test_sandbox_recipients_are_added_to_send_email() -> None:
    recipient = "arn:aws:ses:eu-west-1:111122223333:identity/tester@example.com"
    targets = PolicyTargets(**{**TARGETS.__dict__, "sandbox_recipient_identity_arns": (recipient,)})
    sends_to = granted(workers_policy(targets, ["f"]))["ses:SendEmail"]
    assert sends_to == {TARGETS.sender_identity_arn, recipient}


@dataclass(frozen=True)
class Use:
    """One app uses `methods` of adapter `adapter`, on `resource` (a table or a bucket's keys)."""

    adapter: str
    methods: frozenset[str]
    resources: tuple[str, ...]


def _objects(bucket: str, prefix: str) -> tuple[str, ...]:
    return (f"arn:aws:s3:::{bucket}/{prefix}*", f"arn:aws:s3:::{bucket}")


UPLOADS = _objects(TARGETS.uploads_bucket, "uploads/")
MEDIA = _objects(TARGETS.media_bucket, "media/")

# What each app calls, adapter method by adapter method (chalicelib/services.py
# for the API, chalicelib/processing.py for the worker, wired in chalicelib/bootstrap.py).
API_USES = (
    Use(
        "S3BlobStore",
        frozenset(
            {
                "presign_upload",
                "delete_prefix",
                "check",
                "start_multipart_upload",
                "list_parts",
                "complete_multipart_upload",
                "abort_multipart_uploads",
            }
        ),
        UPLOADS,
    ),
    Use("S3BlobStore", frozenset({"delete_prefix", "check"}), MEDIA),
    Use(
        "CognitoIdentity",
        frozenset({"sign_up", "confirm", "resend_code", "log_in", "check"}),
        (TARGETS.user_pool_arn,),
    ),
    Use("SesMailer", frozenset({"check"}), ("*",)),
    Use("ssm_secret", frozenset({"read"}), (TARGETS.parameter_arn(TARGETS.cdn_private_key_parameter),)),
)
WORKER_USES = (
    Use(
        "S3BlobStore",
        frozenset({"head", "presign_download", "delete_prefix", "abort_multipart_uploads"}),
        UPLOADS,
    ),
    # stuck-jobs (chalicelib/housekeeping.py); _queue_url finds the queue.
    Use("SqsJobQueue", frozenset({"requeue_upload", "_queue_url"}), (TARGETS.jobs_queue_arn,)),
    Use("S3BlobStore", frozenset({"upload", "delete_prefix"}), MEDIA),
    Use("SesMailer", frozenset({"send"}), (TARGETS.sender_identity_arn,)),
)
# pynamodb and Powertools make these calls; DynamoVideoRepository's methods by app.
API_DYNAMO = {
    TARGETS.videos_table_arn: {
        "dynamodb:PutItem",  # add
        "dynamodb:GetItem",  # get
        "dynamodb:Query",  # list_for_owner
        "dynamodb:DeleteItem",  # delete
        "dynamodb:DescribeTable",  # check
    },
    TARGETS.cache_table_arn: {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"},
    # DynamoUsageRepository: counted add/delete (UpdateItem, ConditionCheckItem in the
    # transaction), quota_usage (BatchGetItem), stats (Query, GetItem).
    TARGETS.usage_table_arn: {
        "dynamodb:BatchGetItem",
        "dynamodb:ConditionCheckItem",
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:UpdateItem",
    },
}
WORKER_DYNAMO = {
    # get; update, claim_notification, release_notification
    TARGETS.videos_table_arn: {"dynamodb:GetItem", "dynamodb:UpdateItem"},
    # list_idle (the scheduled jobs): the open-videos index, never the table itself.
    TARGETS.videos_index_arn("open-videos"): {"dynamodb:Query"},
    # Powertools DynamoDBPersistenceLayer: save_inprogress, get, update, delete_record
    TARGETS.idempotency_table_arn: {
        "dynamodb:PutItem",
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    },
    TARGETS.cache_table_arn: {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"},
    # Counted updates (UpdateItem in the transaction); the rollup job: shards (Query),
    # marker (GetItem, PutItem), folded days (BatchWriteItem).
    TARGETS.usage_table_arn: {
        "dynamodb:BatchWriteItem",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:Query",
        "dynamodb:UpdateItem",
    },
}


def adapter_calls() -> dict[tuple[str, str], set[str]]:
    """(class or function, method) -> the boto3 client calls it makes, read from the adapters' source."""
    calls: dict[tuple[str, str], set[str]] = {}
    for path in (ROOT / "chalicelib" / "adapters").glob("*.py"):
        tree = ast.parse(path.read_text())
        owners: list[tuple[str, ast.AST]] = []
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                owners += [(node.name, item) for item in node.body if isinstance(item, ast.FunctionDef)]
            elif isinstance(node, ast.FunctionDef):
                # A factory such as ssm_secret: its inner functions are its methods.
                owners += [(node.name, item) for item in ast.walk(node) if isinstance(item, ast.FunctionDef)]
        for owner, function in owners:
            assert isinstance(function, ast.FunctionDef)
            for node in ast.walk(function):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                client = node.func.value
                name = client.attr if isinstance(client, ast.Attribute) else getattr(client, "id", "")
                if name in {"_s3", "_presigner", "_ses", "_idp", "_sqs", "ssm"}:
                    call = node.func.attr
                    if call == "get_paginator" and node.args and isinstance(node.args[0], ast.Constant):
                        call += f":{node.args[0].value}"  # what it lists decides the action
                    calls.setdefault((owner, function.name), set()).add(call)
    return calls


def test_the_adapter_call_map_is_current() -> None:
    """A new boto3 call in an adapter fails this test until its IAM action is mapped."""
    calls = adapter_calls()
    assert calls, "found no boto3 calls: the pattern is stale"
    made = set().union(*calls.values())
    assert not made - set(IAM_ACTION_OF_CALL), (
        f"map these calls to IAM actions: {sorted(made - set(IAM_ACTION_OF_CALL))}"
    )
    used = {(use.adapter, method) for use in API_USES + WORKER_USES for method in use.methods}
    assert not used - set(calls) - {("CognitoIdentity", "verify")}, sorted(used - set(calls))


def required(uses: tuple[Use, ...], dynamo: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(IAM action, resource) pairs the app's calls need."""
    calls = adapter_calls()
    needed: set[tuple[str, str]] = set()
    for use in uses:
        for method in use.methods:
            for call in calls.get((use.adapter, method), set()):
                action = IAM_ACTION_OF_CALL[call]
                if action is None:
                    continue
                objects, *bucket = use.resources
                on_bucket = action in {"s3:ListBucket", "s3:ListBucketMultipartUploads"}
                resource = bucket[0] if on_bucket and bucket else objects
                needed.add((action, resource))
    needed |= {(action, table) for table, actions in dynamo.items() for action in actions}
    return needed


@pytest.mark.parametrize(
    ("policy", "uses", "dynamo"),
    [(API, API_USES, API_DYNAMO), (WORKERS, WORKER_USES, WORKER_DYNAMO)],
    ids=["api", "workers"],
)
def test_each_app_is_granted_every_call_its_own_code_makes(
    policy: dict[str, Any], uses: tuple[Use, ...], dynamo: dict[str, set[str]]
) -> None:
    grants = granted(policy)
    missing = {(a, r) for a, r in required(uses, dynamo) if r not in grants.get(a, set())}
    assert not missing, sorted(missing)


def test_neither_app_is_granted_the_others_calls() -> None:
    api, workers = granted(API), granted(WORKERS)
    assert "ses:SendEmail" not in api and "ssm:GetParameter" not in workers
    assert not any(TARGETS.idempotency_table_arn in resources for resources in api.values())
    assert MEDIA[0] not in workers.get("s3:GetObject", set()) | api.get("s3:PutObject", set())


def test_log_groups_are_the_stacks_so_no_policy_creates_one() -> None:
    for policy in (API, WORKERS):
        assert "logs:CreateLogGroup" not in granted(policy)
    assert granted(API)["logs:CreateLogStream"] == {
        "arn:aws:logs:eu-west-1:111122223333:log-group:/aws/lambda/vidline-api-prod:log-stream:*"
    }


def test_workers_handler_names_match_the_worker_app() -> None:
    from deploy.chalice_config import WORKER_HANDLERS

    source = (ROOT / "workers" / "app.py").read_text()
    assert set(re.findall(r'on_sqs_message\([^)]*name="(\w+)"', source)) == set(WORKER_HANDLERS)


def test_both_apps_may_make_exactly_the_calls_of_the_caches_dynamodb_store() -> None:
    """chalicelib/adapters/cache/dynamodb.py: every client call it makes is granted on the
    cache table, and nothing more, to both apps (both cache reads)."""
    source = (ROOT / "chalicelib" / "adapters" / "cache" / "dynamodb.py").read_text()
    calls = set(re.findall(r"self\._client\.(\w+)\(", source))
    assert calls == {"get_item", "put_item", "delete_item"}
    actions = {"dynamodb:" + "".join(word.title() for word in call.split("_")) for call in calls}
    for policy in (API, WORKERS):
        on_the_table = {
            action for action, resources in granted(policy).items() if TARGETS.cache_table_arn in resources
        }
        assert on_the_table == actions


def test_scheduled_handler_names_match_the_worker_app() -> None:
    from deploy.chalice_config import SCHEDULED_HANDLERS

    source = (ROOT / "workers" / "app.py").read_text()
    assert set(re.findall(r'@app\.schedule\([^@]*?name="([\w-]+)"', source)) == set(SCHEDULED_HANDLERS)


def test_the_workers_may_query_only_the_open_videos_index_and_send_only_to_the_jobs_queue() -> None:
    grants = granted(WORKERS)
    queried = grants["dynamodb:Query"]
    assert f"{TARGETS.videos_table_arn}/index/open-videos" in queried
    assert TARGETS.videos_table_arn not in queried  # the table itself: no scan, no other query
    assert grants["sqs:SendMessage"] == {TARGETS.jobs_queue_arn}
    assert grants["s3:ListBucketMultipartUploads"] == {f"arn:aws:s3:::{TARGETS.uploads_bucket}"}
    assert grants["s3:AbortMultipartUpload"] == {
        f"arn:aws:s3:::{TARGETS.uploads_bucket}/uploads/*",
        f"arn:aws:s3:::{TARGETS.media_bucket}/media/*",
    }


def test_both_apps_may_send_traces_which_x_ray_grants_only_on_every_resource() -> None:
    """Powertools Tracer (VIDLINE_TRACING, chalicelib/telemetry.py) sends segments as the functions' role."""
    for policy in (API, WORKERS):
        grants = granted(policy)
        assert grants["xray:PutTraceSegments"] == grants["xray:PutTelemetryRecords"] == {"*"}


def test_the_api_may_run_multipart_uploads_on_upload_keys_only() -> None:
    grants = granted(API)
    for action in ("s3:PutObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload"):
        assert grants[action] == {UPLOADS[0]}, action
    # abort_multipart_uploads lists a prefix's open uploads: a bucket-level action.
    assert grants["s3:ListBucketMultipartUploads"] == {UPLOADS[1]}
