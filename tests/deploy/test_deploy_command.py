"""`python -m deploy`: the plan without AWS, and deploy + destroy end to end against moto.

What moto cannot do is skipped and reported by the command itself (the
REST API import, CloudFront, ACM, Cognito/SES/alarm/policy resources in
CloudFormation, Lambda functions); these tests check that it says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3

from deploy.executor import Project
from deploy.policies import wildcard_grants
from devstack.client import ROOT


def run_deploy(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_plan_lists_every_step_without_credentials(tmp_path: Path) -> None:
    stages = tmp_path / "stages.toml"
    stages.write_text(
        '[prod]\nregion = "eu-west-1"\nmail_sender = "Vidline <no-reply@example.org>"\n'
        'hosted_zone_id = "Z123"\ncdn_domain = "app.example.org"\napi_domain = "api.example.org"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}

    result = run_deploy("plan", "--stage", "prod", "--stages-file", str(stages), env=env)

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "nothing is changed" in out
    for expected in (
        "deploy the CDN certificate stack (us-east-1)",
        "ACM certificate for app.example.org",
        "stack vidline-prod in eu-west-1",
        "chalice deploy --stage prod",
        "base path mapping api.example.org",
        "ephemeral storage 10240 MB",
        "invalidate the CDN",
    ):
        assert expected in out
    assert "skipped" not in out


def test_plan_against_a_stand_in_names_what_it_will_skip() -> None:
    result = run_deploy("plan", "--stage", "dev", "--endpoint-url", "http://127.0.0.1:1")
    assert result.returncode == 0, result.stderr
    assert "chalice deploy the API  [skipped: moto cannot import the Swagger 2.0 REST API" in result.stdout
    assert "invalidate the CDN  [skipped: moto has no CloudFront" in result.stdout


def attributes_arn(sqs: Any, queue_url: str) -> str:
    arn: str = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return arn


def _env() -> dict[str, str]:
    return {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}


def test_deploy_then_destroy_a_stage_on_moto(
    moto_env: str, project: Project, layer_zip: Path, tmp_path: Path
) -> None:
    stages = tmp_path / "stages.toml"
    stages.write_text('[e2e]\nregion = "us-east-1"\nmail_sender = "Vidline <no-reply@vidline.test>"\n')
    common = ["--stage", "e2e", "--endpoint-url", moto_env, "--stages-file", str(stages)]
    common += ["--project-dir", str(project.root)]

    def client(service: str) -> Any:
        return boto3.client(service, endpoint_url=moto_env, region_name="us-east-1")

    deployed = run_deploy("deploy", *common, "--layer-zip", str(layer_zip), env=_env())

    out = deployed.stdout
    assert deployed.returncode == 0, out + deployed.stderr
    assert "Vidline e2e is deployed." in out
    assert "skipped: chalice deploy the API (moto cannot import the Swagger 2.0 REST API" in out
    assert "skipped: invalidate the CDN" in out
    assert "skipped: stack resource UserPool (AWS::Cognito::UserPool)" in out
    # The stack's resources exist and the apps are configured with them.
    api = json.loads((project.api_dir / ".chalice/config.json").read_text())["stages"]["e2e"]
    workers = json.loads((project.workers_dir / ".chalice/config.json").read_text())["stages"]["e2e"]
    assert api["autogen_policy"] is False and api["iam_policy_file"] == "policy-e2e.json"
    uploads = api["environment_variables"]["VIDLINE_UPLOADS_BUCKET"]
    assert uploads == "vidline-e2e-uploads-123456789012"
    client("s3").head_bucket(Bucket=uploads)
    queue = workers["environment_variables"]["VIDLINE_JOBS_QUEUE"]
    queue_url = client("sqs").get_queue_url(QueueName=queue)["QueueUrl"]
    attributes = client("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])
    assert json.loads(attributes["Attributes"]["RedrivePolicy"])["maxReceiveCount"] == 3
    dlq_url = client("sqs").get_queue_url(QueueName=workers["environment_variables"]["VIDLINE_JOBS_DLQ"])
    dlq = client("sqs").get_queue_attributes(QueueUrl=dlq_url["QueueUrl"], AttributeNames=["All"])
    assert dlq["Attributes"]["VisibilityTimeout"] == "360"  # six times fail_dead_upload's timeout
    workers_policy = json.loads((project.workers_dir / ".chalice/policy-e2e.json").read_text())
    (queues,) = [s["Resource"] for s in workers_policy["Statement"] if s["Sid"] == "JobQueues"]
    assert queues == [attributes_arn(client("sqs"), queue_url), dlq["Attributes"]["QueueArn"]]
    assert workers["environment_variables"]["VIDLINE_FFMPEG_PATH"] == "/opt/bin/ffmpeg"
    (layer_arn,) = workers["layers"]
    assert ":layer:vidline-e2e-ffmpeg:" in layer_arn
    for app_dir in (project.api_dir, project.workers_dir):
        policy = json.loads((app_dir / ".chalice/policy-e2e.json").read_text())
        assert wildcard_grants(policy) == []
    # The signing key is a SecureString; the site went up with its caching headers.
    key = client("ssm").get_parameter(Name="/vidline/e2e/cdn-private-key", WithDecryption=True)
    assert key["Parameter"]["Type"] == "SecureString"
    assert key["Parameter"]["Value"].startswith("-----BEGIN PRIVATE KEY-----")
    site = "vidline-e2e-frontend-123456789012"
    index = client("s3").head_object(Bucket=site, Key="index.html")
    assert index["CacheControl"] == "no-cache" and index["ContentType"].startswith("text/html")
    assets = client("s3").list_objects_v2(Bucket=site, Prefix="assets/")["Contents"]
    asset = client("s3").head_object(Bucket=site, Key=assets[0]["Key"])
    assert "immutable" in asset["CacheControl"]

    again = run_deploy("deploy", *common, "--layer-zip", str(layer_zip), env=_env())

    assert again.returncode == 0, again.stdout + again.stderr
    assert "reusing the key in /vidline/e2e/cdn-private-key" in again.stdout
    assert f"unchanged: {layer_arn}" in again.stdout

    destroyed = run_deploy("destroy", *common, "--yes", env=_env())

    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert "Stage e2e is gone." in destroyed.stdout
    stacks = client("cloudformation").list_stacks()["StackSummaries"]
    assert {s["StackStatus"] for s in stacks if s["StackName"] == "vidline-e2e"} <= {"DELETE_COMPLETE"}
    assert site not in {b["Name"] for b in client("s3").list_buckets()["Buckets"]}
    names = client("ssm").describe_parameters()["Parameters"]
    assert "/vidline/e2e/cdn-private-key" not in {p["Name"] for p in names}
