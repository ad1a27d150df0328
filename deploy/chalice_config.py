"""Each Chalice app's stage settings, written from the stack's outputs.

The deploy owns the deployed stages' entries in ``.chalice/config.json``
and ``workers/.chalice/config.json``: their environment variables (the
VIDLINE_* settings), the policy file, the layer. Other keys and other
stages are left as they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalicelib.settings import Settings
from deploy.packaging import FFMPEG_PATH_ENV, LAYER_FFMPEG_PATH
from deploy.stages import StageConfig

POLICY_FILE = "policy-{stage}.json"


@dataclass(frozen=True)
class WorkerHandler:
    """How one of the worker app's Lambda handlers is deployed.

    `queue_arn` names both the stack output with the ARN of the queue that
    triggers it and the workers' merge-template parameter that carries it;
    `function_name_parameter` is infra/stack.yaml's parameter naming the
    function, for its log group. `encodes`: it runs ffmpeg, so it needs the
    big /tmp (the layer and VIDLINE_FFMPEG_PATH are app-wide, as
    ``chalice deploy`` applies a stage's ``layers`` to every function).
    """

    queue_arn: str
    function_name_parameter: str
    encodes: bool


# The worker app's Lambda handlers (workers/app.py), each an on_sqs_message
# handler with batch size 1. A test checks the names against the app.
WORKER_HANDLERS = {
    "process_upload": WorkerHandler(
        queue_arn="JobsQueueArn", function_name_parameter="WorkerFunctionName", encodes=True
    ),
    # Marks the video of a job that used up its receives failed and emails its owner.
    "fail_dead_upload": WorkerHandler(
        queue_arn="JobsDeadLetterQueueArn", function_name_parameter="DeadLetterFunctionName", encodes=False
    ),
}


# The worker app's scheduled handlers (workers/app.py `@app.schedule`): Chalice
# makes each a function with an EventBridge rule. Each name maps to
# infra/stack.yaml's parameter naming the function, for its log group. They
# never encode (chalicelib/housekeeping.py, chalicelib/usage.py), so they need
# neither the big /tmp nor ffmpeg. A test checks the names against the app.
SCHEDULED_HANDLERS = {
    "abandoned-uploads": "AbandonedUploadsFunctionName",
    "stuck-jobs": "StuckJobsFunctionName",
    "rollup": "RollupFunctionName",
}


@dataclass(frozen=True)
class StackValues:
    """The stack outputs the apps read, under names that say what they are.

    An empty string means the target did not create it (e.g. no Cognito on moto).
    """

    videos_table: str
    idempotency_table: str
    cache_table: str
    usage_table: str
    uploads_bucket: str
    media_bucket: str
    jobs_queue: str
    jobs_dlq: str
    user_pool_id: str
    user_pool_client_id: str
    user_pool_arn: str
    app_url: str
    cdn_key_pair_id: str

    @classmethod
    def from_outputs(cls, outputs: dict[str, str]) -> StackValues:
        return cls(
            videos_table=outputs["VideosTableName"],
            idempotency_table=outputs["IdempotencyTableName"],
            cache_table=outputs["CacheTableName"],
            usage_table=outputs["UsageTableName"],
            uploads_bucket=outputs["UploadsBucketName"],
            media_bucket=outputs["MediaBucketName"],
            jobs_queue=outputs["JobsQueueName"],
            jobs_dlq=outputs["JobsDeadLetterQueueName"],
            user_pool_id=outputs.get("UserPoolId", ""),
            user_pool_client_id=outputs.get("UserPoolClientId", ""),
            user_pool_arn=outputs.get("UserPoolArn", ""),
            app_url=outputs["AppUrl"],
            cdn_key_pair_id=outputs.get("CdnKeyPairId", ""),
        )


def api_environment(stage: StageConfig, stack: StackValues) -> dict[str, str]:
    """The API Lambda's VIDLINE_* variables."""
    return {
        "VIDLINE_STAGE": stage.name,
        "VIDLINE_AUTH_MODE": "apigateway",
        "VIDLINE_VIDEOS_TABLE": stack.videos_table,
        "VIDLINE_CACHE_TABLE": stack.cache_table,
        "VIDLINE_USAGE_TABLE": stack.usage_table,
        "VIDLINE_UPLOADS_BUCKET": stack.uploads_bucket,
        "VIDLINE_MEDIA_BUCKET": stack.media_bucket,
        "VIDLINE_USER_POOL_ID": stack.user_pool_id,
        "VIDLINE_USER_POOL_CLIENT_ID": stack.user_pool_client_id,
        "VIDLINE_USER_POOL_ARN": stack.user_pool_arn,
        "VIDLINE_CORS_ORIGIN": stack.app_url,
        # The CDN serves /media/* from the media bucket: a key's URL is base + "/" + key.
        "VIDLINE_MEDIA_BASE_URL": stack.app_url,
        "VIDLINE_CDN_KEY_PAIR_ID": stack.cdn_key_pair_id,
        "VIDLINE_CDN_PRIVATE_KEY_PARAMETER": stage.signing_key_parameter,
        "VIDLINE_MAIL_SENDER": stage.mail_sender,
        # GET /health reads both queues (their depth, the dead letters).
        "VIDLINE_JOBS_QUEUE": stack.jobs_queue,
        "VIDLINE_JOBS_DLQ": stack.jobs_dlq,
        # X-Ray traces of the handlers and AWS calls (the stage sets "xray": true).
        "VIDLINE_TRACING": "true",
    }


def workers_environment(stage: StageConfig, stack: StackValues, job_max_receives: int) -> dict[str, str]:
    """The worker Lambdas' VIDLINE_* variables."""
    return {
        "VIDLINE_STAGE": stage.name,
        "VIDLINE_VIDEOS_TABLE": stack.videos_table,
        "VIDLINE_IDEMPOTENCY_TABLE": stack.idempotency_table,
        "VIDLINE_CACHE_TABLE": stack.cache_table,
        "VIDLINE_USAGE_TABLE": stack.usage_table,
        "VIDLINE_UPLOADS_BUCKET": stack.uploads_bucket,
        "VIDLINE_MEDIA_BUCKET": stack.media_bucket,
        "VIDLINE_JOBS_QUEUE": stack.jobs_queue,
        "VIDLINE_JOBS_DLQ": stack.jobs_dlq,
        "VIDLINE_JOB_MAX_RECEIVES": str(job_max_receives),
        "VIDLINE_MAIL_SENDER": stage.mail_sender,
        "VIDLINE_APP_URL": stack.app_url,
        FFMPEG_PATH_ENV: LAYER_FFMPEG_PATH,
        "VIDLINE_TRACING": "true",
    }


def default_settings() -> Settings:
    """The settings' defaults, not this process's environment (a deploy must not pick up local values)."""
    return Settings.model_construct()


def update_stage(
    config_path: Path,
    stage: str,
    environment: dict[str, str],
    *,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Set `stage`'s environment, policy file and `extra` keys in the Chalice config at `config_path`.

    Returns the stage entry as written.
    """
    config = json.loads(config_path.read_text(encoding="utf-8"))
    entry = config.setdefault("stages", {}).setdefault(stage, {})
    entry["autogen_policy"] = False
    entry["iam_policy_file"] = POLICY_FILE.format(stage=stage)
    entry["environment_variables"] = {**entry.get("environment_variables", {}), **environment}
    entry.update(extra or {})
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return dict(entry)


def write_policy(app_dir: Path, stage: str, policy: dict[str, Any]) -> Path:
    """Write `policy` where Chalice reads the stage's `iam_policy_file`."""
    path = app_dir / ".chalice" / POLICY_FILE.format(stage=stage)
    path.write_text(json.dumps(policy, indent=2) + "\n", encoding="utf-8")
    return path


def app_name(app_dir: Path) -> str:
    """The Chalice app's name from its config."""
    return str(json.loads((app_dir / ".chalice" / "config.json").read_text(encoding="utf-8"))["app_name"])


def api_function_name(api_dir: Path, stage: str) -> str:
    """The API handler's Lambda name: Chalice names it "<app>-<stage>"."""
    return f"{app_name(api_dir)}-{stage}"


def worker_function_names(workers_dir: Path, stage: str) -> dict[str, str]:
    """Each worker handler's Lambda name: Chalice names them "<app>-<stage>-<handler>"."""
    app = app_name(workers_dir)
    return {handler: f"{app}-{stage}-{handler}" for handler in WORKER_HANDLERS}


def scheduled_function_names(workers_dir: Path, stage: str) -> dict[str, str]:
    """Each scheduled handler's Lambda name, "<app>-<stage>-<handler>" as for the others."""
    app = app_name(workers_dir)
    return {handler: f"{app}-{stage}-{handler}" for handler in SCHEDULED_HANDLERS}


def stage_environment(app_dir: Path, stage: str) -> dict[str, str]:
    """The app's environment variables for `stage` as Chalice merges them (app-wide, then stage)."""
    config = json.loads((app_dir / ".chalice" / "config.json").read_text(encoding="utf-8"))
    stage_entry = config.get("stages", {}).get(stage, {})
    return {**config.get("environment_variables", {}), **stage_entry.get("environment_variables", {})}


def worker_timeout_s(workers_dir: Path, stage: str, handler: str = "process_upload") -> int:
    """A worker handler's Lambda timeout for `stage`, looked up as Chalice does.

    The first of: the stage's ``lambda_functions.<handler>``, the stage, the
    app's ``lambda_functions.<handler>``, the app; else Chalice's 60 s.
    """
    config = json.loads((workers_dir / ".chalice" / "config.json").read_text(encoding="utf-8"))
    stage_entry = config.get("stages", {}).get(stage, {})
    for entry in (
        stage_entry.get("lambda_functions", {}).get(handler, {}),
        stage_entry,
        config.get("lambda_functions", {}).get(handler, {}),
        config,
    ):
        if entry.get("lambda_timeout") is not None:
            return int(entry["lambda_timeout"])
    return 60
