"""The infrastructure templates: lint-clean, the right shapes, and deployable into moto.

moto's CloudFormation models only some resource types and, of the S3
bucket's properties, applies only encryption. So the checks are in two
parts: what moto creates is checked on moto through boto3; the rest
(bucket policies, public access block, CORS, lifecycle, notifications,
PITR/TTL, Cognito, SES, CloudFront, ACM, the alarm) is checked in the
template itself, and `NOT_PROVEN_ON_MOTO` names it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from chalicelib.adapters.dynamo import OPEN_VIDEOS_INDEX
from deploy.aws import Aws
from deploy.executor import Executor, Project, new_signing_key, public_key_fingerprint
from deploy.plan import MOTO_UNMODELLED_TYPES, Target
from deploy.stages import LOG_RETENTION_DAYS, load_stage
from deploy.template import INFRA_DIR, load_template, rename_resource, specialise, without_types

TEMPLATES = sorted(INFRA_DIR.glob("*.yaml"))
BUCKETS = ("UploadsBucket", "MediaBucket", "FrontendBucket", "ArtifactsBucket")
# Resources of our stack that moto cannot create, so nothing but the template proves them.
NOT_PROVEN_ON_MOTO = {
    "DeadLetterBacklogAlarm",
    "DeadLetterQueueAlarm",
    "FrontendBucketPolicy",
    "HealthFailingAlarm",
    "JobsQueuePolicy",
    "MediaBucketPolicy",
    "SenderEmailIdentity",
    "UploadsBucketPolicy",
    "UserPool",
    "UserPoolClient",
    "VideosFailingAlarm",
}
MOTO_PARAMETERS = {
    "Stage": "tmpl",
    "SenderIdentity": "no-reply@vidline.test",
    "EnableCdn": "false",
    "CdnCertificateArn": "",
    "ApiFunctionName": "vidline-api-tmpl",
    "WorkerFunctionName": "vidline-workers-tmpl-process_upload",
    "DeadLetterFunctionName": "vidline-workers-tmpl-fail_dead_upload",
    "AbandonedUploadsFunctionName": "vidline-workers-tmpl-abandoned-uploads",
    "StuckJobsFunctionName": "vidline-workers-tmpl-stuck-jobs",
    "RollupFunctionName": "vidline-workers-tmpl-rollup",
    "LogRetentionDays": "14",
}
# What every template needs to lint, and then to specialise, with a CDN.
AWS_PARAMETERS = {"Stage": "x", "SenderIdentity": "a@b.c", "CdnCertificateArn": ""}


def lint(template: dict[str, Any], tmp_path: Path, *ignore: str) -> None:
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template))
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    flags = [f"--ignore-checks={check}" for check in ignore]
    result = subprocess.run([str(cfn_lint), *flags, str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_template_is_lint_clean() -> None:
    assert len(TEMPLATES) >= 2
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run(
        [str(cfn_lint), *map(str, TEMPLATES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_bucket_is_private_encrypted_and_owner_enforced(stack_template: dict[str, Any]) -> None:
    resources = stack_template["Resources"]
    for name in BUCKETS:
        properties = resources[name]["Properties"]
        assert set(properties["PublicAccessBlockConfiguration"].values()) == {True}, name
        assert properties["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
        (rule,) = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        lifecycle = {r["Id"]: r for r in properties["LifecycleConfiguration"]["Rules"]}
        # Uploads: past the longest multipart window a client may be given (36 h).
        days = 2 if name == "UploadsBucket" else 1
        assert lifecycle["abort-incomplete-multipart-uploads"]["AbortIncompleteMultipartUpload"] == {
            "DaysAfterInitiation": days
        }


def test_uploads_bucket_takes_browser_posts_from_the_cdn_and_queues_each_upload(
    stack_template: dict[str, Any],
) -> None:
    uploads = stack_template["Resources"]["UploadsBucket"]
    (cors,) = uploads["Properties"]["CorsConfiguration"]["CorsRules"]
    # POST for a presigned POST, PUT for the parts of a multipart upload, whose ETags the page reads.
    assert cors["AllowedMethods"] == ["POST", "PUT"]
    assert "ETag" in cors["ExposedHeaders"]
    cdn = specialise(stack_template, {**AWS_PARAMETERS, "CdnDomainName": "app.x.com"})
    origins = cdn["Resources"]["UploadsBucket"]["Properties"]["CorsConfiguration"]["CorsRules"][0]
    assert origins["AllowedOrigins"] == [
        {"Fn::Sub": "https://${CdnDomainName}"},
        {"Fn::Sub": "https://${Distribution.DomainName}"},
    ]
    expire = {r["Id"]: r for r in uploads["Properties"]["LifecycleConfiguration"]["Rules"]}
    assert expire["expire-abandoned-uploads"]["Prefix"] == "uploads/"
    (notification,) = uploads["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert notification["Queue"] == {"Fn::GetAtt": ["JobsQueue", "Arn"]}
    assert notification["Event"] == "s3:ObjectCreated:*"
    assert uploads["DependsOn"] == "JobsQueuePolicy"
    (allow,) = stack_template["Resources"]["JobsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert allow["Principal"] == {"Service": "s3.amazonaws.com"} and allow["Action"] == "sqs:SendMessage"
    assert "aws:SourceArn" in allow["Condition"]["ArnEquals"]


def test_cdn_serves_private_buckets_over_https_with_signed_media(stack_template: dict[str, Any]) -> None:
    resources = stack_template["Resources"]
    config = resources["Distribution"]["Properties"]["DistributionConfig"]
    assert all("OriginAccessControlId" in origin for origin in config["Origins"])
    behaviors = [config["DefaultCacheBehavior"], *config["CacheBehaviors"]]
    assert {b["ViewerProtocolPolicy"] for b in behaviors} == {"redirect-to-https"}
    (media,) = config["CacheBehaviors"]
    assert media["PathPattern"] == "media/*" and media["TargetOriginId"] == "media"
    assert media["TrustedKeyGroups"] == [{"Ref": "CdnKeyGroup"}]
    assert "TrustedKeyGroups" not in config["DefaultCacheBehavior"]
    for policy in ("MediaBucketPolicy", "FrontendBucketPolicy"):
        statements = resources[policy]["Properties"]["PolicyDocument"]["Statement"]
        grants = [s["Fn::If"][1] for s in statements if "Fn::If" in s]
        assert [g["Principal"] for g in grants] == [{"Service": "cloudfront.amazonaws.com"}]
        assert "AWS:SourceArn" in grants[0]["Condition"]["StringEquals"]


def _evaluate(value: Any, parameters: dict[str, str]) -> Any:
    """Fn::Split / Fn::Join / Fn::Sub / Ref of parameters, as CloudFormation evaluates them."""
    if isinstance(value, list):
        return [_evaluate(item, parameters) for item in value]
    if isinstance(value, dict):
        ((function, argument),) = value.items()
        if function == "Ref":
            return parameters[argument]
        if function == "Fn::Sub":
            return re.sub(r"\$\{(\w+)\}", lambda m: parameters[m.group(1)], argument)
        if function == "Fn::Join":
            return argument[0].join(_evaluate(argument[1], parameters))
        if function == "Fn::Split":
            return _evaluate(argument[1], parameters).split(argument[0])
        raise ValueError(function)
    return value


def test_media_honours_its_cache_control_and_shares_one_copy_per_object(
    stack_template: dict[str, Any],
) -> None:
    resources = stack_template["Resources"]
    config = resources["Distribution"]["Properties"]["DistributionConfig"]
    (media,) = config["CacheBehaviors"]
    assert media["CachePolicyId"] == {"Ref": "MediaCachePolicy"}
    policy = resources["MediaCachePolicy"]["Properties"]["CachePolicyConfig"]
    # A playlist that still grows says no-cache; a minimum TTL above 0 would
    # cache it anyway (CachingOptimized's is 1 s). Immutable objects stay a year.
    assert policy["MinTTL"] == 0 and policy["MaxTTL"] >= 31536000
    key = policy["ParametersInCacheKeyAndForwardedToOrigin"]
    # Neither the signed query nor the signed cookies are in the cache key.
    assert key["QueryStringsConfig"] == {"QueryStringBehavior": "none"}
    assert key["CookiesConfig"] == {"CookieBehavior": "none"}
    assert key["HeadersConfig"] == {"HeaderBehavior": "none"}
    # Every media request is signed (URL or cookies) by the key group; preflights reach S3, uncached.
    assert media["TrustedKeyGroups"] == [{"Ref": "CdnKeyGroup"}]
    assert media["AllowedMethods"] == ["GET", "HEAD", "OPTIONS"] and media["CachedMethods"] == ["GET", "HEAD"]
    assert media["OriginRequestPolicyId"] == "88a5eaf4-2fd4-4709-b370-b4c650ea3fcf"  # Managed-CORS-S3Origin


@pytest.mark.parametrize(
    ("extra", "origins"),
    [
        ({}, None),
        ({"CdnDomainName": "app.x.com"}, ["https://app.x.com"]),
        (
            {"CdnDomainName": "app.x.com", "MediaCorsOrigins": "https://a.example,http://localhost:5173"},
            ["https://app.x.com", "https://a.example", "http://localhost:5173"],
        ),
        ({"MediaCorsOrigins": "https://a.example"}, ["https://a.example"]),
    ],
)
def test_media_answers_cors_only_for_the_front_ends_origins(
    stack_template: dict[str, Any], tmp_path: Path, extra: dict[str, str], origins: list[str] | None
) -> None:
    parameters = {**AWS_PARAMETERS, "HostedZoneId": "Z1", **extra}
    template = specialise(stack_template, parameters)
    resources = template["Resources"]
    (media,) = resources["Distribution"]["Properties"]["DistributionConfig"]["CacheBehaviors"]
    bucket = resources["MediaBucket"]["Properties"]
    values = {name: str(spec.get("Default", "")) for name, spec in stack_template["Parameters"].items()}
    values.update(parameters)
    if origins is None:
        # The site and its media share the distribution's domain: same-origin, no CORS.
        assert "MediaResponseHeadersPolicy" not in resources and "CorsConfiguration" not in bucket
        assert media["ResponseHeadersPolicyId"] == "67f7725c-6f97-4210-82d7-5512b31e9d03"
    else:
        assert media["ResponseHeadersPolicyId"] == {"Ref": "MediaResponseHeadersPolicy"}
        config = resources["MediaResponseHeadersPolicy"]["Properties"]["ResponseHeadersPolicyConfig"]
        cors = config["CorsConfig"]
        assert _evaluate(cors["AccessControlAllowOrigins"]["Items"], values) == origins
        assert cors["AccessControlAllowHeaders"]["Items"] == ["Range"]
        assert cors["AccessControlAllowMethods"]["Items"] == ["GET", "HEAD"]
        assert cors["AccessControlExposeHeaders"]["Items"] == ["Content-Length", "Content-Range"]
        assert cors["AccessControlAllowCredentials"] is False  # signatures, not credentials
        assert config["SecurityHeadersConfig"]["FrameOptions"]["FrameOption"] == "SAMEORIGIN"
        (rule,) = bucket["CorsConfiguration"]["CorsRules"]  # S3 answers the preflights
        assert _evaluate(rule["AllowedOrigins"], values) == origins
        assert rule["AllowedMethods"] == ["GET", "HEAD"] and rule["AllowedHeaders"] == ["Range"]
    lint(template, tmp_path, "W2001")


def test_the_media_cors_origins_parameter_takes_only_origins(stack_template: dict[str, Any]) -> None:
    pattern = stack_template["Parameters"]["MediaCorsOrigins"]["AllowedPattern"]
    for good in ("", "https://a.example", "https://a.example,http://127.0.0.1:5173", "*"):
        assert re.fullmatch(pattern, good), good
    for bad in ("a.example", "https://a.example/", "https://a.example, https://b", "https://a.example,"):
        assert not re.fullmatch(pattern, bad), bad


def test_queues_tables_and_user_pool_have_the_settings_the_apps_rely_on(
    stack_template: dict[str, Any],
) -> None:
    resources, parameters = stack_template["Resources"], stack_template["Parameters"]
    # Six times the worker's 900 s timeout, enforced by the parameter.
    assert parameters["JobVisibilityTimeoutSeconds"]["MinValue"] >= 6 * 900
    dlq = resources["JobsDeadLetterQueue"]["Properties"]
    assert dlq["VisibilityTimeout"] == {"Ref": "DeadLetterVisibilityTimeoutSeconds"}
    for table in ("VideosTable", "IdempotencyTable"):
        properties = resources[table]["Properties"]
        assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert resources["IdempotencyTable"]["Properties"]["TimeToLiveSpecification"] == {
        "AttributeName": "expiration",
        "Enabled": True,
    }
    # The scheduled jobs' sparse index of open videos, as chalicelib/adapters/dynamo.py declares it.
    (index,) = resources["VideosTable"]["Properties"]["GlobalSecondaryIndexes"]
    assert index == {
        "IndexName": OPEN_VIDEOS_INDEX,
        "KeySchema": [
            {"AttributeName": "open_status", "KeyType": "HASH"},
            {"AttributeName": "updated_at", "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "ALL"},
    }
    assert resources["UserPool"]["Properties"]["UsernameAttributes"] == ["email"]
    client = resources["UserPoolClient"]["Properties"]
    assert client["ExplicitAuthFlows"] == ["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"]
    assert client["GenerateSecret"] is False
    # Sign-in, confirm and resend do not tell who has an account (chalicelib/adapters/cognito.py).
    assert client["PreventUserExistenceErrors"] == "ENABLED"


def test_a_dead_job_alarms_though_its_handler_empties_the_dead_letter_queue(
    stack_template: dict[str, Any],
) -> None:
    resources = stack_template["Resources"]
    dlq = {"Fn::GetAtt": ["JobsDeadLetterQueue", "QueueName"]}
    died = resources["DeadLetterQueueAlarm"]["Properties"]
    # Each receive of a dead letter (by fail_dead_upload) is a job that died;
    # the queue's depth stays at 0 because the handler deletes them at once.
    assert (died["Namespace"], died["MetricName"], died["Statistic"]) == (
        "AWS/SQS",
        "NumberOfMessagesReceived",
        "Sum",
    )
    assert died["Threshold"] == 1 and died["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    backlog = resources["DeadLetterBacklogAlarm"]["Properties"]
    # Dead letters nobody takes (no trigger, or a failing handler) still show as depth.
    assert (backlog["MetricName"], backlog["Statistic"]) == ("ApproximateNumberOfMessagesVisible", "Minimum")
    for alarm in (died, backlog):
        assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": dlq}]
        assert alarm["TreatMissingData"] == "notBreaching"
        assert alarm["AlarmActions"] == {
            "Fn::If": ["HasAlarmEmail", [{"Ref": "AlarmTopic"}], {"Ref": "AWS::NoValue"}]
        }


def _chalice_timeout(workers_dir: Path, stage: str, handler: str) -> int:
    """The timeout Chalice itself deploys the handler's function with."""
    from chalice.config import Config

    config = json.loads((workers_dir / ".chalice" / "config.json").read_text())
    chalice = Config(chalice_stage=stage, function_name=handler, config_from_disk=config)
    return int(chalice.lambda_timeout)


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_each_queue_hides_a_message_longer_than_its_consumer_may_run(
    stack_template: dict[str, Any], stage: str
) -> None:
    """Lambda refuses a trigger otherwise, and it is what makes idempotency locks safe.

    Powertools expires a job's in-progress lock when the invocation's time is
    up, so a message that comes back only after its visibility timeout (at
    least the function's timeout) always finds the lock of a run that died
    expired, never IdempotencyAlreadyInProgressError.
    """
    from deploy import chalice_config

    project = Project()
    executor = Executor(load_stage(stage), Target.aws("us-east-1"), Aws("us-east-1"), project)
    executor.outcome.public_key_pem = new_signing_key()[1]
    parameters = executor.stack_parameters()
    resources, outputs = stack_template["Resources"], stack_template["Outputs"]
    for handler, spec in chalice_config.WORKER_HANDLERS.items():
        timeout = _chalice_timeout(project.workers_dir, stage, handler)
        assert chalice_config.worker_timeout_s(project.workers_dir, stage, handler) == timeout
        # The queue whose ARN triggers the handler, and the parameter of its visibility timeout.
        (queue, _) = outputs[spec.queue_arn]["Value"]["Fn::GetAtt"]
        visibility = resources[queue]["Properties"]["VisibilityTimeout"]["Ref"]
        assert int(parameters[visibility]) >= 6 * timeout, (handler, visibility)
        # Even a stack deployed by hand cannot go below it.
        assert stack_template["Parameters"][visibility]["MinValue"] >= timeout, (handler, visibility)


def test_moto_list_of_unmodelled_types_matches_moto() -> None:
    from moto.cloudformation.parsing import get_model_map

    used = {body["Type"] for path in TEMPLATES for body in load_template(path)["Resources"].values()}
    modelled = set(get_model_map())
    assert used - modelled == set(MOTO_UNMODELLED_TYPES)


def test_conditions_and_reduction_drop_only_what_they_must(stack_template: dict[str, Any]) -> None:
    reduced = without_types(specialise(stack_template, MOTO_PARAMETERS), MOTO_UNMODELLED_TYPES)
    assert "Distribution" not in reduced.template["Resources"]  # EnableCdn=false
    assert "ApiDomain" not in reduced.template["Resources"]  # no ApiDomainName
    assert set(reduced.removed_resources) == NOT_PROVEN_ON_MOTO
    assert sorted(reduced.removed_outputs) == ["UserPoolArn", "UserPoolClientId", "UserPoolId"]
    with pytest.raises(ValueError, match="JobsQueue"):
        without_types(specialise(stack_template, MOTO_PARAMETERS), frozenset({"AWS::SQS::Queue"}))


def test_stack_deploys_into_moto_with_buckets_queues_and_tables(
    stack_template: dict[str, Any], moto_env: str
) -> None:
    moto_endpoint = moto_env
    reduced = without_types(specialise(stack_template, MOTO_PARAMETERS), MOTO_UNMODELLED_TYPES)
    parameters = {k: v for k, v in MOTO_PARAMETERS.items() if k in reduced.template["Parameters"]}
    aws = Aws("us-east-1", moto_endpoint)
    outputs = aws.deploy_stack("vidline-tmpl", reduced.template, parameters)
    try:

        def client(service: str) -> Any:
            return boto3.client(service, endpoint_url=moto_endpoint, region_name="us-east-1")

        s3, sqs, dynamodb = client("s3"), client("sqs"), client("dynamodb")
        for key in ("UploadsBucketName", "MediaBucketName", "FrontendBucketName", "ArtifactsBucketName"):
            encryption = s3.get_bucket_encryption(Bucket=outputs[key])["ServerSideEncryptionConfiguration"]
            assert encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        assert outputs["UploadsBucketName"] == "vidline-tmpl-uploads-123456789012"

        jobs_url = sqs.get_queue_url(QueueName=outputs["JobsQueueName"])["QueueUrl"]
        jobs = sqs.get_queue_attributes(QueueUrl=jobs_url, AttributeNames=["All"])["Attributes"]
        assert jobs["VisibilityTimeout"] == "5400"
        assert jobs["QueueArn"] == outputs["JobsQueueArn"]
        redrive = json.loads(jobs["RedrivePolicy"])
        dlq_url = sqs.get_queue_url(QueueName=outputs["JobsDeadLetterQueueName"])["QueueUrl"]
        dlq = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["All"])["Attributes"]
        assert redrive == {"deadLetterTargetArn": dlq["QueueArn"], "maxReceiveCount": 3}
        assert dlq["MessageRetentionPeriod"] == str(14 * 24 * 3600)
        assert dlq["VisibilityTimeout"] == "360"  # six times fail_dead_upload's 60 s
        assert dlq["QueueArn"] == outputs["JobsDeadLetterQueueArn"]

        videos = dynamodb.describe_table(TableName=outputs["VideosTableName"])["Table"]
        assert [(k["AttributeName"], k["KeyType"]) for k in videos["KeySchema"]] == [
            ("owner_id", "HASH"),
            ("video_id", "RANGE"),
        ]
        assert videos["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        assert [index["IndexName"] for index in videos["GlobalSecondaryIndexes"]] == [OPEN_VIDEOS_INDEX]
        idempotency = dynamodb.describe_table(TableName=outputs["IdempotencyTableName"])["Table"]
        assert idempotency["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
        assert outputs["SenderIdentityArn"].endswith(":identity/no-reply@vidline.test")
        groups = client("logs").describe_log_groups(logGroupNamePrefix="/aws/lambda/vidline-")["logGroups"]
        assert {(g["logGroupName"], g.get("retentionInDays")) for g in groups} == {
            ("/aws/lambda/vidline-api-tmpl", 14),
            ("/aws/lambda/vidline-workers-tmpl-process_upload", 14),
            ("/aws/lambda/vidline-workers-tmpl-fail_dead_upload", 14),
            ("/aws/lambda/vidline-workers-tmpl-abandoned-uploads", 14),
            ("/aws/lambda/vidline-workers-tmpl-stuck-jobs", 14),
            ("/aws/lambda/vidline-workers-tmpl-rollup", 14),
        }
    finally:
        assert aws.delete_stack("vidline-tmpl")
    assert "vidline-tmpl-videos" not in client("dynamodb").list_tables()["TableNames"]


def test_an_existing_ses_identity_is_used_not_created(stack_template: dict[str, Any], tmp_path: Path) -> None:
    existing = specialise(stack_template, {**AWS_PARAMETERS, "CreateSesIdentity": "false"})
    assert "SenderEmailIdentity" not in existing["Resources"]
    assert existing["Outputs"]["SenderIdentityArn"] == stack_template["Outputs"]["SenderIdentityArn"]
    # Resolving the conditions leaves parameters that only they used (W2001).
    lint(existing, tmp_path, "W2001")
    created = specialise(stack_template, AWS_PARAMETERS)  # the default: create it
    assert created["Resources"]["SenderEmailIdentity"]["Properties"] == {
        "EmailIdentity": {"Ref": "SenderIdentity"}
    }


def test_the_lambdas_log_groups_are_the_stacks_with_a_retention(stack_template: dict[str, Any]) -> None:
    resources = stack_template["Resources"]
    groups = {
        r["Properties"]["LogGroupName"]["Fn::Sub"]
        for r in resources.values()
        if r["Type"] == "AWS::Logs::LogGroup"
    }
    assert groups == {
        "/aws/lambda/${ApiFunctionName}",
        "/aws/lambda/${WorkerFunctionName}",
        "/aws/lambda/${DeadLetterFunctionName}",
        "/aws/lambda/${AbandonedUploadsFunctionName}",
        "/aws/lambda/${StuckJobsFunctionName}",
        "/aws/lambda/${RollupFunctionName}",
    }
    for name in (
        "ApiLogGroup",
        "WorkerLogGroup",
        "DeadLetterLogGroup",
        "AbandonedUploadsLogGroup",
        "StuckJobsLogGroup",
        "RollupLogGroup",
    ):
        assert resources[name]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        assert "Condition" not in resources[name]
    assert stack_template["Parameters"]["LogRetentionDays"]["AllowedValues"] == list(LOG_RETENTION_DAYS)


def test_a_new_signing_key_is_a_new_cloudfront_public_key(
    stack_template: dict[str, Any], tmp_path: Path
) -> None:
    """CloudFront cannot change a public key's EncodedKey: a new key needs a new resource and name."""
    project = Project()
    templates = {}
    for _ in range(2):
        _, public = new_signing_key()
        fingerprint = public_key_fingerprint(public)
        executor = Executor(load_stage("dev"), Target.aws("us-east-1"), Aws("us-east-1"), project)
        executor.outcome.public_key_pem = public
        parameters = executor.stack_parameters()
        assert parameters["CdnPublicKeyFingerprint"] == fingerprint
        template = executor.stack_template(parameters)
        templates[fingerprint] = template
        key_id = f"CdnPublicKey{fingerprint}"
        assert "CdnPublicKey" not in template["Resources"]
        config = template["Resources"][key_id]["Properties"]["PublicKeyConfig"]
        assert "${CdnPublicKeyFingerprint}" in config["Name"]["Fn::Sub"]
        assert "${CdnPublicKeyFingerprint}" in config["CallerReference"]["Fn::Sub"]
        assert template["Resources"]["CdnKeyGroup"]["Properties"]["KeyGroupConfig"]["Items"] == [
            {"Ref": key_id}
        ]
        assert template["Outputs"]["CdnKeyPairId"]["Value"] == {"Ref": key_id}
        lint(template, tmp_path)
    assert len(templates) == 2
    # The same key gives the same template, so a redeploy changes nothing.
    assert public_key_fingerprint(public + "\n") == fingerprint


def test_rename_resource_follows_every_kind_of_reference() -> None:
    template = {
        "Resources": {
            "A": {"Type": "T"},
            "B": {
                "Type": "T",
                "DependsOn": ["A"],
                "Properties": {
                    "R": {"Ref": "A"},
                    "G": {"Fn::GetAtt": ["A", "Arn"]},
                    "S": {"Fn::Sub": "${A}/${A.Arn}/${AB}"},
                    "L": {"Fn::Sub": ["${X}", {"X": {"Ref": "A"}}]},
                },
            },
        },
        "Outputs": {"O": {"Value": {"Ref": "A"}}},
    }
    renamed = rename_resource(template, "A", "A2")
    assert set(renamed["Resources"]) == {"A2", "B"}
    b = renamed["Resources"]["B"]
    assert b["DependsOn"] == ["A2"]
    assert b["Properties"] == {
        "R": {"Ref": "A2"},
        "G": {"Fn::GetAtt": ["A2", "Arn"]},
        "S": {"Fn::Sub": "${A2}/${A2.Arn}/${AB}"},
        "L": {"Fn::Sub": ["${X}", {"X": {"Ref": "A2"}}]},
    }
    assert renamed["Outputs"]["O"]["Value"] == {"Ref": "A2"}
    assert rename_resource(template, "Missing", "M") == template
