"""The plan as data, and the executor's and Aws's handling of what goes wrong, without a full deploy."""

from __future__ import annotations

import io
import subprocess
import uuid
import zipfile
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from deploy.aws import Aws, DeployError
from deploy.executor import Executor, Project
from deploy.plan import BASE_PATH, Action, Target, plan_deploy, plan_destroy
from deploy.stages import StageConfig

DOMAINS = {"hosted_zone_id": "Z123", "api_domain": "api.example.org", "cdn_domain": "app.example.org"}


def actions(steps: list[Any]) -> list[Action]:
    return [step.action for step in steps]


def test_destroy_unmaps_the_api_domain_before_deleting_the_api() -> None:
    steps = plan_destroy(StageConfig(name="prod", **DOMAINS), Target.aws("us-east-1"))

    order = actions(steps)
    assert order.index(Action.DELETE_BASE_PATH_MAPPING) < order.index(Action.CHALICE_DELETE_API)
    (unmap,) = [s for s in steps if s.action is Action.DELETE_BASE_PATH_MAPPING]
    assert unmap.skipped is None
    assert unmap.details == (f"api.example.org base path {BASE_PATH} (none there: nothing to do)",)


def test_destroy_without_an_api_domain_has_no_mapping_to_delete() -> None:
    steps = plan_destroy(StageConfig(name="dev"), Target.aws("us-east-1"))
    assert Action.DELETE_BASE_PATH_MAPPING not in actions(steps)


def test_a_stand_in_without_the_rest_api_skips_the_unmapping() -> None:
    steps = plan_destroy(StageConfig(name="prod", **DOMAINS), Target.moto("us-east-1", "http://127.0.0.1:1"))
    (unmap,) = [s for s in steps if s.action is Action.DELETE_BASE_PATH_MAPPING]
    assert unmap.skipped and "Swagger" in unmap.skipped


def test_deleting_the_mapping_is_done_when_it_or_the_domain_is_gone(moto_env: str) -> None:
    apigw = boto3.client("apigateway", endpoint_url=moto_env, region_name="us-east-1")
    api_id = apigw.create_rest_api(name="vidline-unmap")["id"]
    root = apigw.get_resources(restApiId=api_id)["items"][0]["id"]
    apigw.put_method(restApiId=api_id, resourceId=root, httpMethod="GET", authorizationType="NONE")
    apigw.put_integration(restApiId=api_id, resourceId=root, httpMethod="GET", type="MOCK")
    apigw.create_deployment(restApiId=api_id, stageName="api")
    apigw.create_domain_name(domainName="api.unmap.test", regionalCertificateArn="arn:aws:acm:x")
    # As CONFIGURE_API makes it (moto cannot list the mappings of a domain, so not through it).
    apigw.create_base_path_mapping(domainName="api.unmap.test", restApiId=api_id, stage="api")
    assert apigw.get_base_path_mapping(domainName="api.unmap.test", basePath=BASE_PATH)["restApiId"] == api_id
    aws = Aws("us-east-1", moto_env)

    assert aws.delete_base_path_mapping("api.unmap.test", BASE_PATH) is True
    assert aws.delete_base_path_mapping("api.unmap.test", BASE_PATH) is False
    assert aws.delete_base_path_mapping("gone.unmap.test", BASE_PATH) is False


def test_an_existing_ses_identity_is_not_created(project: Project) -> None:
    stage = StageConfig(name="dev", create_ses_identity=False)
    (stack,) = [s for s in plan_deploy(stage, Target.aws("us-east-1")) if s.action is Action.DEPLOY_STACK]
    assert "no SES identity (no-reply@example.com exists: create_ses_identity = false)" in stack.details[1]
    executor = Executor(stage, Target.aws("us-east-1"), Aws("us-east-1"), project)
    parameters = executor.stack_parameters()
    assert parameters["CreateSesIdentity"] == "false"
    assert parameters["ApiFunctionName"] == "vidline-api-dev"
    assert parameters["WorkerFunctionName"] == "vidline-workers-dev-process_upload"
    assert parameters["DeadLetterFunctionName"] == "vidline-workers-dev-fail_dead_upload"
    assert parameters["StuckJobsFunctionName"] == "vidline-workers-dev-stuck-jobs"
    assert parameters["AbandonedUploadsFunctionName"] == "vidline-workers-dev-abandoned-uploads"
    assert parameters["RollupFunctionName"] == "vidline-workers-dev-rollup"
    assert parameters["LogRetentionDays"] == "30"


class RecordingAws(Aws):
    """Records the Lambda settings the executor asks for, and calls nothing."""

    def __init__(self) -> None:
        super().__init__("us-east-1")
        self.calls: list[tuple[str, ...]] = []

    def report_batch_item_failures(self, function_name: str) -> None:
        self.calls.append(("report_batch_item_failures", function_name))

    def set_ephemeral_storage(self, function_name: str, size_mb: int) -> None:
        self.calls.append(("set_ephemeral_storage", function_name, str(size_mb)))


def test_make_deploy_configures_both_workers_triggers_and_the_encoders_tmp(project: Project) -> None:
    aws = RecordingAws()
    steps = [s for s in plan_deploy(StageConfig(name="dev"), Target.aws("us-east-1"))]
    (configure,) = [s for s in steps if s.action is Action.CONFIGURE_WORKERS]
    assert "process_upload, fail_dead_upload" in configure.details[0]
    executor = Executor(StageConfig(name="dev"), Target.aws("us-east-1"), aws, project, output=lambda _: None)

    executor.run([configure])

    assert sorted(aws.calls) == [
        ("report_batch_item_failures", "vidline-workers-dev-fail_dead_upload"),
        ("report_batch_item_failures", "vidline-workers-dev-process_upload"),
        ("set_ephemeral_storage", "vidline-workers-dev-process_upload", "10240"),
    ]


def test_log_retention_must_be_a_value_cloudwatch_takes() -> None:
    with pytest.raises(ValueError, match="log_retention_days"):
        StageConfig(name="dev", log_retention_days=31)


class FakeCloudFormation:
    """A CloudFormation client whose stack is in `status` and whose update_stack may refuse."""

    def __init__(self, status: str, refusal: str | None = None):
        self.status, self.refusal, self.updates = status, refusal, 0

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        return {"Stacks": [{"StackStatus": self.status, "Outputs": []}]}

    def update_stack(self, **_: Any) -> None:
        self.updates += 1
        if self.refusal:
            raise ClientError({"Error": {"Code": "ValidationError", "Message": self.refusal}}, "UpdateStack")


def aws_with(cfn: FakeCloudFormation) -> Aws:
    aws = Aws("us-east-1", "http://127.0.0.1:1")
    aws._clients[("cloudformation", "us-east-1")] = cfn
    return aws


@pytest.mark.parametrize(
    ("status", "advice"),
    [
        ("UPDATE_IN_PROGRESS", "Wait until it is done"),
        ("UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS", "Wait until it is done"),
        ("UPDATE_ROLLBACK_FAILED", "Continue update rollback"),
        ("ROLLBACK_FAILED", "it can only be deleted"),
    ],
)
def test_a_stack_that_cannot_be_updated_now_says_what_to_do(status: str, advice: str) -> None:
    cfn = FakeCloudFormation(status)
    with pytest.raises(DeployError, match=advice) as raised:
        aws_with(cfn).deploy_stack("vidline-dev", {"Resources": {}}, {})
    assert status in str(raised.value)
    assert cfn.updates == 0


def test_a_refused_update_is_a_deploy_error_not_a_traceback() -> None:
    cfn = FakeCloudFormation("UPDATE_COMPLETE", refusal="Template format error: Unresolved resource X")
    with pytest.raises(DeployError, match="CloudFormation refused: Template format error"):
        aws_with(cfn).deploy_stack("vidline-dev", {"Resources": {}}, {})


def test_a_chalice_deploy_that_built_its_own_zip_is_a_deploy_error(
    project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("deploy.packaging.prepare_chalice_deploy", lambda *_: tmp_path / "zip")

    def chalice(args: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(args, 0, "Creating deployment package.\n", "")

    monkeypatch.setattr("deploy.executor.subprocess.run", chalice)
    executor = Executor(
        StageConfig(name="dev"), Target.aws("us-east-1"), Aws("us-east-1"), project, output=lambda _: None
    )
    with pytest.raises(DeployError, match="Deploy again without changing files"):
        executor._chalice(project.api_dir, "deploy")


def test_the_workers_sqs_trigger_reports_batch_item_failures_like_the_cicd_template(moto_env: str) -> None:
    aws = Aws("us-east-1", moto_env)
    iam, lam, sqs = aws.client("iam"), aws.client("lambda"), aws.client("sqs")
    name = f"vidline-workers-test-{uuid.uuid4().hex[:8]}"
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as zf:
        zf.writestr("app.py", "def handler(event, context):\n    return None\n")
    lam.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role,
        Handler="app.handler",
        Code={"ZipFile": code.getvalue()},
    )
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    trigger = lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=name, BatchSize=1)["UUID"]
    try:
        aws.report_batch_item_failures(name)

        (mapping,) = lam.list_event_source_mappings(FunctionName=name)["EventSourceMappings"]
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    finally:  # no Lambda left in the shared stand-in
        lam.delete_event_source_mapping(UUID=trigger)
        lam.delete_function(FunctionName=name)
        sqs.delete_queue(QueueUrl=queue)
