"""What each app needs beyond what Chalice sets, as data shared by both deploy paths.

`make deploy` applies these settings with API calls after ``chalice deploy``
(deploy/executor.py); the CI/CD path gets them from the merge templates
built here, which ``chalice package --merge-template`` deep-merges into its
SAM template (deploy/packaging.py). The templates are made per stage, from
the stage's settings (infra/stages.toml) and the app's Chalice config, so
the function names they set are the ones ``chalice deploy`` uses and the
generated IAM policies and the stack's log groups name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chalice.utils import to_cfn_resource_name

from deploy import chalice_config
from deploy.packaging import FFMPEG_PATH_ENV, LAYER_FFMPEG_PATH
from deploy.stages import StageConfig

# Chalice's logical ids in the SAM template of the API.
API_RESOURCE = "RestAPI"
API_HANDLER_RESOURCE = "APIHandler"


def gateway_responses(cors_origin: str) -> dict[str, dict[str, Any]]:
    """API Gateway's own errors (authorizer, throttling, unknown routes) in our error shape.

    Each value is both the arguments of ``PutGatewayResponse`` and an entry
    of the OpenAPI extension ``x-amazon-apigateway-gateway-responses``.
    """
    headers = {
        "gatewayresponse.header.Access-Control-Allow-Origin": f"'{cors_origin}'",
        "gatewayresponse.header.Access-Control-Allow-Headers": "'Authorization,Content-Type'",
    }

    def response(code: str, message: str, status: str | None = None) -> dict[str, Any]:
        body = json.dumps({"error": {"code": code, "message": "MESSAGE"}}, separators=(",", ":"))
        spec: dict[str, Any] = {
            "responseParameters": headers,
            "responseTemplates": {"application/json": body.replace('"MESSAGE"', message)},
        }
        if status:
            spec["statusCode"] = status
        return spec

    return {
        "UNAUTHORIZED": response(
            "unauthorized", '"Sign in first: send your IdToken as Authorization: Bearer <token>."', "401"
        ),
        "ACCESS_DENIED": response("forbidden", '"This token may not do that: sign in again."', "403"),
        "THROTTLED": response("rate_limited", '"Too many requests: wait a moment and try again."', "429"),
        # $context.error.messageString is API Gateway's message as a quoted JSON string.
        "DEFAULT_4XX": response("invalid_request", "$context.error.messageString"),
        "DEFAULT_5XX": response("internal_error", "$context.error.messageString"),
    }


def api_merge_template(stage: StageConfig, function_name: str, cors_origin: str) -> dict[str, Any]:
    """The API's merge template: what `make deploy` sets after ``chalice deploy`` (CONFIGURE_API)."""
    # In the API definition, so every deployment of it carries them.
    responses = {"x-amazon-apigateway-gateway-responses": gateway_responses(cors_origin)}
    return {
        "Description": f"Vidline API, stage {stage.name}: chalice package + deploy/merge.py "
        "api_merge_template.",
        "Resources": {
            API_RESOURCE: {
                "Properties": {
                    "EndpointConfiguration": "REGIONAL",
                    "MethodSettings": [
                        {
                            "ResourcePath": "/*",
                            "HttpMethod": "*",
                            "ThrottlingRateLimit": stage.api_throttle_rate,
                            "ThrottlingBurstLimit": stage.api_throttle_burst,
                        }
                    ],
                    "DefinitionBody": responses,
                }
            },
            # The name `chalice deploy` gives it, which the policy's log grants and
            # the stack's log group use.
            API_HANDLER_RESOURCE: {"Properties": {"FunctionName": function_name}},
        },
    }


def workers_merge_template(
    stage: StageConfig, function_names: dict[str, str], scheduled: dict[str, str] | None = None
) -> dict[str, Any]:
    """The workers' merge template: what ``chalice deploy`` cannot set (and CONFIGURE_WORKERS does).

    Each handler's SQS trigger points at its queue's resource (the jobs
    queue, or the dead-letter queue for ``fail_dead_upload``) and reports
    batch item failures; the encoder also gets the big /tmp.
    """
    resources: dict[str, Any] = {}
    for handler, function_name in function_names.items():
        spec = chalice_config.WORKER_HANDLERS[handler]
        logical_id = to_cfn_resource_name(handler)
        properties: dict[str, Any] = {
            "FunctionName": function_name,
            "Layers": [{"Ref": "FfmpegLayerArn"}],
            "Environment": {"Variables": {FFMPEG_PATH_ENV: LAYER_FFMPEG_PATH}},
            "Events": {
                f"{logical_id}SqsEventSource": {
                    "Properties": {
                        # Chalice writes the queue as an Fn::Sub of its name, and the merge is deep.
                        "Queue": {"Fn::Sub": "${" + spec.queue_arn + "}"},
                        "FunctionResponseTypes": ["ReportBatchItemFailures"],
                    }
                }
            },
        }
        if spec.encodes:
            properties["EphemeralStorage"] = {"Size": stage.worker_ephemeral_storage_mb}
        resources[logical_id] = {"Properties": properties}
    # The scheduled jobs' functions (`scheduled`: handler → name) get the names
    # chalice deploy gives them, which their log groups and log grants use.
    for handler, function_name in (scheduled or {}).items():
        resources[to_cfn_resource_name(handler)] = {"Properties": {"FunctionName": function_name}}
    queues = sorted({chalice_config.WORKER_HANDLERS[handler].queue_arn for handler in function_names})
    return {
        "Description": f"Vidline workers, stage {stage.name}: chalice package + deploy/merge.py "
        "workers_merge_template.",
        "Parameters": {
            **{
                queue: {
                    "Type": "String",
                    "Description": f"A queue that triggers a worker (the infra stack's output {queue}).",
                }
                for queue in queues
            },
            "FfmpegLayerArn": {
                "Type": "String",
                "Description": "A version ARN of the layer holding bin/ffmpeg (deploy/packaging.py).",
            },
        },
        "Resources": resources,
    }


def merge_template(app: str, project_dir: Path, stage: StageConfig) -> dict[str, Any]:
    """The merge template of `app` ("api" or "workers", whose Chalice app is at `project_dir`)."""
    if app == "api":
        origin = chalice_config.stage_environment(project_dir, stage.name).get("VIDLINE_CORS_ORIGIN", "")
        if not origin:
            raise ValueError(
                f"{project_dir}/.chalice/config.json: stage {stage.name} has no VIDLINE_CORS_ORIGIN "
                f"(`make deploy STAGE={stage.name}` writes it)"
            )
        return api_merge_template(stage, chalice_config.api_function_name(project_dir, stage.name), origin)
    if app == "workers":
        return workers_merge_template(
            stage,
            chalice_config.worker_function_names(project_dir, stage.name),
            chalice_config.scheduled_function_names(project_dir, stage.name),
        )
    raise ValueError(f"unknown app {app!r}")
