"""Least privilege: each Lambda's policy names exact actions on exact resources."""

from __future__ import annotations

import re
from typing import Any

import pytest

from deploy.policies import PolicyTargets, api_policy, wildcard_grants, workers_policy
from devstack.client import ROOT
from tests.deploy.examples import TARGETS

API = api_policy(TARGETS, "vidline-api-prod")
WORKERS = workers_policy(TARGETS, ["vidline-workers-prod-process_upload"])

# Every boto3 call the adapters make, and the IAM action that authorizes it.
IAM_ACTION_OF_CALL = {
    "generate_presigned_post": "s3:PutObject",
    "head_object": "s3:GetObject",
    "download_file": "s3:GetObject",
    "upload_file": "s3:PutObject",
    "delete_objects": "s3:DeleteObject",
    "get_paginator": "s3:ListBucket",  # list_objects_v2
    "head_bucket": "s3:ListBucket",
    "send_email": "ses:SendEmail",
    "get_send_quota": "ses:GetSendQuota",
    "describe_user_pool": "cognito-idp:DescribeUserPool",
    "get_parameter": "ssm:GetParameter",
    # Cognito's public, unsigned calls: no IAM.
    "sign_up": None,
    "confirm_sign_up": None,
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
    assert grants["sqs:ReceiveMessage"] == {TARGETS.jobs_queue_arn}
    assert grants["dynamodb:PutItem"] == {TARGETS.idempotency_table_arn}
    assert "dynamodb:DeleteItem" not in {a for a, r in grants.items() if TARGETS.videos_table_arn in r}
    assert grants["logs:PutLogEvents"] == {
        "arn:aws:logs:eu-west-1:111122223333:log-group:/aws/lambda/vidline-workers-prod-process_upload"
        ":log-stream:*"
    }


def test_api_signs_uploads_but_cannot_read_sources_or_write_media() -> None:
    grants = granted(API)
    assert grants["s3:PutObject"] == {"arn:aws:s3:::vidline-prod-uploads-111122223333/uploads/*"}
    assert "s3:GetObject" not in grants
    assert not any(action.startswith(("sqs:", "ses:Send")) for action in grants)
    assert grants["ssm:GetParameter"] == {
        "arn:aws:ssm:eu-west-1:111122223333:parameter/vidline/prod/cdn-private-key"
    }
    assert grants["cognito-idp:DescribeUserPool"] == {TARGETS.user_pool_arn}


def test_sandbox_recipients_are_added_to_send_email() -> None:
    recipient = "arn:aws:ses:eu-west-1:111122223333:identity/tester@example.com"
    targets = PolicyTargets(**{**TARGETS.__dict__, "sandbox_recipient_identity_arns": (recipient,)})
    sends_to = granted(workers_policy(targets, ["f"]))["ses:SendEmail"]
    assert sends_to == {TARGETS.sender_identity_arn, recipient}


def test_every_call_the_adapters_make_is_authorized_by_a_policy() -> None:
    """A new boto3 call in an adapter fails this test until its IAM action is granted."""
    source = "\n".join(path.read_text() for path in (ROOT / "chalicelib" / "adapters").glob("*.py"))
    calls = set(re.findall(r"self\._(?:s3|ses|idp)\.(\w+)\(", source))
    calls |= set(re.findall(r"\bssm\.(\w+)\(", source))
    assert calls, "found no boto3 calls: the pattern is stale"
    unknown = calls - set(IAM_ACTION_OF_CALL)
    assert not unknown, f"map these calls to IAM actions: {sorted(unknown)}"
    everything = set(granted(API)) | set(granted(WORKERS))
    needed = {IAM_ACTION_OF_CALL[call] for call in calls} - {None}
    assert needed <= everything, needed - everything


def test_workers_handler_names_match_the_worker_app() -> None:
    from deploy.executor import WORKER_HANDLERS

    source = (ROOT / "workers" / "app.py").read_text()
    assert set(re.findall(r'on_sqs_message\([^)]*name="(\w+)"', source)) == set(WORKER_HANDLERS)
