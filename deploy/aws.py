"""The one place the deploy command talks to AWS (or a stand-in at an endpoint URL)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError, WaiterError

# Stack states an update cannot start from, and what the user can do about each.
_NOT_UPDATABLE = {
    "ROLLBACK_FAILED": "it can only be deleted: run the destroy, or delete it in the CloudFormation "
    "console (keep resources it cannot delete), then deploy again",
    "DELETE_FAILED": "delete it again in the CloudFormation console (keep what it cannot delete), "
    "then deploy again",
    "UPDATE_ROLLBACK_FAILED": "in the CloudFormation console choose Stack actions → Continue update "
    "rollback (skip the resources that failed), then deploy again",
    "CREATE_FAILED": "delete it in the CloudFormation console, then deploy again",
}


class DeployError(RuntimeError):
    """A deploy step failed in a way the user has to look at."""


class Aws:
    """Typed wrappers over the boto3 calls the deploy makes."""

    def __init__(self, region: str, endpoint_url: str | None = None, session: boto3.Session | None = None):
        self.region = region
        self.endpoint_url = endpoint_url
        self._session = session or boto3.Session()
        self._clients: dict[tuple[str, str], Any] = {}
        # A stand-in answers at once; AWS takes minutes (CloudFront: 5-15).
        self._poll_s = 1 if endpoint_url else 10

    def client(self, service: str, region: str | None = None) -> Any:
        key = (service, region or self.region)
        if key not in self._clients:
            self._clients[key] = self._session.client(
                service, region_name=key[1], endpoint_url=self.endpoint_url
            )
        return self._clients[key]

    # ----------------------------------------------------------- identity
    def account_id(self) -> str:
        return str(self.client("sts").get_caller_identity()["Account"])

    def partition(self) -> str:
        return str(self._session.get_partition_for_region(self.region))

    # ------------------------------------------------------ CloudFormation
    def stack_status(self, name: str, region: str | None = None) -> str | None:
        """The stack's status, or None if there is no such stack."""
        try:
            stacks = self.client("cloudformation", region).describe_stacks(StackName=name)["Stacks"]
        except ClientError as error:
            if "does not exist" in str(error):
                return None
            raise
        return str(stacks[0]["StackStatus"]) if stacks else None

    def deploy_stack(
        self, name: str, template: dict[str, Any], parameters: dict[str, str], region: str | None = None
    ) -> dict[str, str]:
        """Create or update the stack and wait; returns its outputs."""
        cfn = self.client("cloudformation", region)
        arguments = {
            "StackName": name,
            "TemplateBody": json.dumps(template, separators=(",", ":")),
            "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            "Tags": [{"Key": "vidline:stack", "Value": name}],
        }
        status = self.stack_status(name, region)
        if status == "ROLLBACK_COMPLETE":  # a failed first create: it can only be deleted
            self.delete_stack(name, region)
            status = None
        if status is not None and status.endswith("_IN_PROGRESS"):
            raise DeployError(
                f"stack {name} is {status}: another deploy or destroy is running on it (or was "
                "interrupted and CloudFormation is finishing). Wait until it is done, then deploy again"
            )
        if status in _NOT_UPDATABLE:
            raise DeployError(f"stack {name} is {status}: {_NOT_UPDATABLE[status]}")
        try:
            if status is None:
                cfn.create_stack(**arguments, OnFailure="ROLLBACK")
                self._wait(cfn, "stack_create_complete", name)
            else:
                try:
                    cfn.update_stack(**arguments)
                except ClientError as error:
                    if "No updates are to be performed" not in str(error):
                        raise
                else:
                    self._wait(cfn, "stack_update_complete", name)
        except ClientError as error:
            message = error.response.get("Error", {}).get("Message", str(error))
            state = status or "new"
            raise DeployError(f"stack {name} ({state}): CloudFormation refused: {message}") from error
        return self.stack_outputs(name, region)

    def stack_outputs(self, name: str, region: str | None = None) -> dict[str, str]:
        stack = self.client("cloudformation", region).describe_stacks(StackName=name)["Stacks"][0]
        return {o["OutputKey"]: str(o["OutputValue"]) for o in stack.get("Outputs", [])}

    def delete_stack(self, name: str, region: str | None = None) -> bool:
        """Delete the stack and wait; False if there was none."""
        if self.stack_status(name, region) is None:
            return False
        cfn = self.client("cloudformation", region)
        cfn.delete_stack(StackName=name)
        self._wait(cfn, "stack_delete_complete", name)
        return True

    def _wait(self, cfn: Any, waiter: str, name: str) -> None:
        try:
            cfn.get_waiter(waiter).wait(
                StackName=name, WaiterConfig={"Delay": self._poll_s, "MaxAttempts": 3600 // self._poll_s}
            )
        except WaiterError as error:
            raise DeployError(f"stack {name}: {waiter} failed:\n{self._failure_events(cfn, name)}") from error

    @staticmethod
    def _failure_events(cfn: Any, name: str) -> str:
        try:
            events = cfn.describe_stack_events(StackName=name)["StackEvents"]
        except ClientError:
            return "(no events)"
        failed = [e for e in events if str(e.get("ResourceStatus", "")).endswith("FAILED")]
        return "\n".join(
            f"  {e['LogicalResourceId']}: {e.get('ResourceStatusReason', e['ResourceStatus'])}"
            for e in failed
        )

    # ------------------------------------------------------------- SSM
    def secure_parameter(self, name: str) -> str | None:
        try:
            return str(self.client("ssm").get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])
        except ClientError as error:
            if error.response["Error"]["Code"] == "ParameterNotFound":
                return None
            raise

    def put_secure_parameter(self, name: str, value: str, description: str) -> None:
        self.client("ssm").put_parameter(
            Name=name, Value=value, Type="SecureString", Description=description, Overwrite=False
        )

    def delete_parameter(self, name: str) -> bool:
        try:
            self.client("ssm").delete_parameter(Name=name)
        except ClientError as error:
            if error.response["Error"]["Code"] == "ParameterNotFound":
                return False
            raise
        return True

    # -------------------------------------------------------------- S3
    def upload_file(self, bucket: str, key: str, path: Path, content_type: str, cache_control: str) -> None:
        self.client("s3").upload_file(
            str(path), bucket, key, ExtraArgs={"ContentType": content_type, "CacheControl": cache_control}
        )

    def object_exists(self, bucket: str, key: str) -> bool:
        try:
            self.client("s3").head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if error.response["Error"]["Code"] in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True

    def empty_bucket(self, bucket: str) -> int:
        """Delete every object (and version) in `bucket`; returns how many. 0 if it is gone."""
        s3, deleted = self.client("s3"), 0
        try:
            pages = list(s3.get_paginator("list_object_versions").paginate(Bucket=bucket))
        except ClientError as error:
            if error.response["Error"]["Code"] == "NoSuchBucket":
                return 0
            raise
        for page in pages:
            keys = [
                {"Key": item["Key"], "VersionId": item["VersionId"]}
                for item in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
            for start in range(0, len(keys), 1000):
                s3.delete_objects(
                    Bucket=bucket, Delete={"Objects": keys[start : start + 1000], "Quiet": True}
                )
            deleted += len(keys)
        return deleted

    # ---------------------------------------------------------- Lambda
    def publish_layer(self, name: str, bucket: str, key: str, description: str) -> str:
        """Publish the zip at s3://bucket/key as a new version of layer `name`; its version ARN."""
        response = self.client("lambda").publish_layer_version(
            LayerName=name,
            Description=description,
            Content={"S3Bucket": bucket, "S3Key": key},
            CompatibleRuntimes=["python3.12"],
            CompatibleArchitectures=["x86_64"],
        )
        return str(response["LayerVersionArn"])

    def layer_version_with_description(self, name: str, description: str) -> str | None:
        """The ARN of the newest version of layer `name` published with `description`."""
        try:
            pages = self.client("lambda").get_paginator("list_layer_versions").paginate(LayerName=name)
            for page in pages:
                for version in page.get("LayerVersions", []):
                    if version.get("Description") == description:
                        return str(version["LayerVersionArn"])
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
        return None

    def delete_layer_versions(self, name: str) -> int:
        lam, deleted = self.client("lambda"), 0
        try:
            for page in lam.get_paginator("list_layer_versions").paginate(LayerName=name):
                for version in page.get("LayerVersions", []):
                    lam.delete_layer_version(LayerName=name, VersionNumber=version["Version"])
                    deleted += 1
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
        return deleted

    def report_batch_item_failures(self, function_name: str) -> None:
        """Turn on ReportBatchItemFailures for the function's SQS triggers (Chalice has no setting)."""
        lam = self.client("lambda")
        wanted = ["ReportBatchItemFailures"]
        for page in lam.get_paginator("list_event_source_mappings").paginate(FunctionName=function_name):
            for mapping in page["EventSourceMappings"]:
                if (
                    ":sqs:" in mapping.get("EventSourceArn", "")
                    and mapping.get("FunctionResponseTypes") != wanted
                ):
                    lam.update_event_source_mapping(UUID=mapping["UUID"], FunctionResponseTypes=wanted)

    def set_ephemeral_storage(self, function_name: str, size_mb: int) -> None:
        lam = self.client("lambda")
        current = lam.get_function_configuration(FunctionName=function_name)
        if current.get("EphemeralStorage", {}).get("Size") == size_mb:
            return
        lam.update_function_configuration(FunctionName=function_name, EphemeralStorage={"Size": size_mb})
        lam.get_waiter("function_updated_v2").wait(FunctionName=function_name)

    # ----------------------------------------------------- API Gateway
    def put_gateway_responses(self, rest_api_id: str, responses: dict[str, dict[str, Any]]) -> None:
        apigw = self.client("apigateway")
        for response_type, spec in responses.items():
            apigw.put_gateway_response(restApiId=rest_api_id, responseType=response_type, **spec)

    def redeploy_stage(self, rest_api_id: str, stage: str, description: str) -> None:
        self.client("apigateway").create_deployment(
            restApiId=rest_api_id, stageName=stage, description=description
        )

    def set_stage_throttling(self, rest_api_id: str, stage: str, rate: float, burst: int) -> None:
        self.client("apigateway").update_stage(
            restApiId=rest_api_id,
            stageName=stage,
            patchOperations=[
                {"op": "replace", "path": "/*/*/throttling/rateLimit", "value": str(rate)},
                {"op": "replace", "path": "/*/*/throttling/burstLimit", "value": str(burst)},
            ],
        )

    def ensure_base_path_mapping(self, domain: str, rest_api_id: str, stage: str) -> None:
        apigw = self.client("apigateway")
        mappings = apigw.get_base_path_mappings(domainName=domain).get("items", [])
        for mapping in mappings:
            if mapping.get("basePath") in {"(none)", ""}:
                if mapping.get("restApiId") == rest_api_id and mapping.get("stage") == stage:
                    return
                apigw.delete_base_path_mapping(domainName=domain, basePath="(none)")
        apigw.create_base_path_mapping(domainName=domain, restApiId=rest_api_id, stage=stage)

    def delete_base_path_mapping(self, domain: str, base_path: str) -> bool:
        """Delete the mapping of `base_path` on `domain`; False if it (or the domain) is not there."""
        try:
            self.client("apigateway").delete_base_path_mapping(domainName=domain, basePath=base_path)
        except ClientError as error:
            if error.response["Error"]["Code"] in {"NotFoundException", "404"}:
                return False
            raise
        return True

    # ------------------------------------------------------- CloudFront
    def invalidate(self, distribution_id: str, paths: list[str]) -> str:
        response = self.client("cloudfront").create_invalidation(
            DistributionId=distribution_id,
            InvalidationBatch={
                "Paths": {"Quantity": len(paths), "Items": paths},
                "CallerReference": f"vidline-{time.time_ns()}",
            },
        )
        return str(response["Invalidation"]["Id"])
