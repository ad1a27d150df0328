"""What a deploy or destroy of a stage will do, as plain data.

`plan_deploy` and `plan_destroy` look at nothing but the stage's settings
and the target's capabilities, so `make plan` needs no AWS account and the
plan is tested without one. The executor carries the steps out in order.

A target is AWS, or a stand-in at an endpoint URL (moto). The stand-in
cannot do everything; each step it cannot do stays in the plan, marked
skipped with the reason, and the deploy prints it: nothing is imitated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from deploy.chalice_config import WORKER_HANDLERS
from deploy.stages import StageConfig

# Resource types moto 5.2's CloudFormation does not model (it skips them with
# a warning, and a reference to one fails the stack). A test compares this
# with moto's own model map, so it follows moto upgrades.
MOTO_UNMODELLED_TYPES = frozenset(
    {
        "AWS::ApiGateway::DomainName",
        "AWS::CertificateManager::Certificate",
        "AWS::CloudFront::CachePolicy",
        "AWS::CloudFront::Distribution",
        "AWS::CloudFront::KeyGroup",
        "AWS::CloudFront::OriginAccessControl",
        "AWS::CloudFront::PublicKey",
        "AWS::CloudFront::ResponseHeadersPolicy",
        "AWS::CloudWatch::Alarm",
        "AWS::Cognito::UserPool",
        "AWS::Cognito::UserPoolClient",
        "AWS::S3::BucketPolicy",
        "AWS::SES::EmailIdentity",
        "AWS::SQS::QueuePolicy",
    }
)

API_GATEWAY_STAGE = "api"
# The custom domain maps its root to the API: API Gateway calls that base path "(none)".
BASE_PATH = "(none)"
# Invalidated after each upload of the site: the files that are not content-hashed.
SITE_INVALIDATION_PATHS = ("/", "/index.html", "/config.json")


@dataclass(frozen=True)
class Target:
    """Where the deploy goes and what that place can do."""

    region: str
    endpoint_url: str | None = None
    unmodelled_types: frozenset[str] = frozenset()
    # Why each capability is missing; absent key = the target has it.
    missing: dict[str, str] = field(default_factory=dict)

    @classmethod
    def aws(cls, region: str) -> Target:
        return cls(region=region)

    @classmethod
    def moto(cls, region: str, endpoint_url: str) -> Target:
        return cls(
            region=region,
            endpoint_url=endpoint_url,
            unmodelled_types=MOTO_UNMODELLED_TYPES,
            missing={
                "cloudfront": "moto has no CloudFront, so the stack is deployed without the CDN",
                "acm": "moto's CloudFormation has no ACM certificates",
                "rest_api": "moto cannot import the Swagger 2.0 REST API that chalice deploy uploads "
                "(it accepts OpenAPI 3 only)",
                "lambda": "the workers' chalice deploy would create a Lambda function that moto cannot run, "
                "and it breaks moto's state dump; the layer and policy it would use are still made",
            },
        )

    def can(self, capability: str) -> bool:
        return capability not in self.missing

    def why_not(self, capability: str) -> str:
        return self.missing[capability]


class Action(Enum):
    ENSURE_SIGNING_KEY = "ensure the CDN signing key"
    DEPLOY_CERTIFICATE_STACK = "deploy the CDN certificate stack (us-east-1)"
    DEPLOY_STACK = "deploy the infrastructure stack"
    PUBLISH_LAYER = "publish the ffmpeg layer"
    WRITE_APP_CONFIG = "write both apps' stage settings and IAM policies"
    CHALICE_DEPLOY_API = "chalice deploy the API"
    CONFIGURE_API = "configure the REST API"
    CHALICE_DEPLOY_WORKERS = "chalice deploy the workers"
    CONFIGURE_WORKERS = "configure the worker functions"
    UPLOAD_SITE = "build and upload the front end"
    INVALIDATE_CDN = "invalidate the CDN"
    # destroy
    CHALICE_DELETE_WORKERS = "chalice delete the workers"
    DELETE_BASE_PATH_MAPPING = "delete the API domain's base path mapping"
    CHALICE_DELETE_API = "chalice delete the API"
    EMPTY_BUCKETS = "empty the stage's buckets"
    DELETE_STACK = "delete the infrastructure stack"
    DELETE_CERTIFICATE_STACK = "delete the CDN certificate stack"
    DELETE_SIGNING_KEY = "delete the CDN signing key"
    DELETE_LAYER = "delete the ffmpeg layer's versions"


@dataclass(frozen=True)
class Step:
    """One thing to do, what exactly, and why it is skipped (None: it is not)."""

    action: Action
    details: tuple[str, ...] = ()
    skipped: str | None = None

    def describe(self) -> str:
        lines = [self.action.value + (f"  [skipped: {self.skipped}]" if self.skipped else "")]
        lines += [f"    {detail}" for detail in self.details]
        return "\n".join(lines)


def _step(action: Action, *details: str, skipped: str | None = None) -> Step:
    return Step(action=action, details=tuple(details), skipped=skipped)


def plan_deploy(stage: StageConfig, target: Target) -> list[Step]:
    """Every step of `make deploy STAGE=...`, in order."""
    cdn = target.can("cloudfront")
    custom_cdn = bool(stage.cdn_domain)
    steps = [
        _step(
            Action.ENSURE_SIGNING_KEY,
            "RSA key pair for signed media URLs (made on first deploy, then reused); private key in SSM "
            f"SecureString {stage.signing_key_parameter}",
        ),
    ]
    if custom_cdn:
        steps.append(
            _step(
                Action.DEPLOY_CERTIFICATE_STACK,
                f"stack {stage.certificate_stack_name}: ACM certificate for {stage.cdn_domain}, "
                f"DNS-validated in hosted zone {stage.hosted_zone_id}",
                skipped=None if target.can("acm") else target.why_not("acm"),
            )
        )
    domains = [f"custom domains: CDN {stage.cdn_domain or '-'}, API {stage.api_domain or '-'}"]
    steps += [
        _step(
            Action.DEPLOY_STACK,
            f"stack {stage.stack_name} in {target.region} from infra/stack.yaml",
            "buckets (uploads, media, front end, artifacts), jobs queue + DLQ + alarms, tables, "
            "user pool, "
            + (
                f"SES identity {stage.identity}"
                if stage.create_ses_identity
                else f"no SES identity ({stage.identity} exists: create_ses_identity = false)"
            )
            + (", CloudFront" if cdn else ""),
            f"the Lambdas' log groups, events kept {stage.log_retention_days} days",
            *domains,
            *(
                [f"without {', '.join(sorted(target.unmodelled_types))} (the target cannot create them)"]
                if target.unmodelled_types
                else []
            ),
            *([] if cdn else [f"EnableCdn=false: {target.why_not('cloudfront')}"]),
        ),
        _step(
            Action.PUBLISH_LAYER,
            "deploy.packaging.build_ffmpeg_layer → s3://<artifacts bucket>/layers/ → layer "
            f"{stage.layer_name} (a new version only when the zip changed)",
        ),
        _step(
            Action.WRITE_APP_CONFIG,
            ".chalice/config.json and workers/.chalice/config.json: stage "
            f"{stage.name}'s VIDLINE_* settings from the stack outputs, the layer, autogen_policy off",
            f".chalice/policy-{stage.name}.json, workers/.chalice/policy-{stage.name}.json: exact actions "
            "and ARNs (deploy/policies.py)",
        ),
        _step(
            Action.CHALICE_DEPLOY_API,
            f"chalice deploy --stage {stage.name} (zip with bytecode from deploy.packaging)",
            skipped=None if target.can("rest_api") else target.why_not("rest_api"),
        ),
        _step(
            Action.CONFIGURE_API,
            "gateway responses UNAUTHORIZED, ACCESS_DENIED, THROTTLED, DEFAULT_4XX, DEFAULT_5XX "
            "in the API's error shape",
            f"stage throttling: {stage.api_throttle_rate:g} requests/s, burst {stage.api_throttle_burst}",
            *([f"base path mapping {stage.api_domain} → the REST API"] if stage.api_domain else []),
            skipped=None if target.can("rest_api") else "needs the REST API that chalice deploy creates",
        ),
        _step(
            Action.CHALICE_DEPLOY_WORKERS,
            f"chalice --project-dir workers deploy --stage {stage.name}: "
            + ", ".join(f"{handler} on {spec.queue_arn}" for handler, spec in WORKER_HANDLERS.items()),
            skipped=None if target.can("lambda") else target.why_not("lambda"),
        ),
        _step(
            Action.CONFIGURE_WORKERS,
            f"ReportBatchItemFailures on the SQS triggers of {', '.join(WORKER_HANDLERS)}",
            f"ephemeral storage {stage.worker_ephemeral_storage_mb} MB for "
            + ", ".join(handler for handler, spec in WORKER_HANDLERS.items() if spec.encodes)
            + " (Chalice has no setting for either)",
            skipped=None if target.can("lambda") else "needs the functions chalice deploy creates",
        ),
        _step(
            Action.UPLOAD_SITE,
            "deploy.frontend.build_site → front-end bucket, each file with its Content-Type and "
            "Cache-Control",
        ),
        _step(
            Action.INVALIDATE_CDN,
            f"paths {', '.join(SITE_INVALIDATION_PATHS)} (assets are content-hashed)",
            skipped=None if cdn else target.why_not("cloudfront"),
        ),
    ]
    return steps


def plan_destroy(stage: StageConfig, target: Target) -> list[Step]:
    """Every step of `make destroy STAGE=...`, in order."""
    steps = [
        _step(
            Action.CHALICE_DELETE_WORKERS,
            f"chalice --project-dir workers delete --stage {stage.name}",
            skipped=None if target.can("lambda") else target.why_not("lambda"),
        ),
    ]
    if stage.api_domain:
        # Made by the deploy with boto3, outside the stack; while it exists
        # API Gateway refuses to delete the REST API.
        steps.append(
            _step(
                Action.DELETE_BASE_PATH_MAPPING,
                f"{stage.api_domain} base path {BASE_PATH} (none there: nothing to do)",
                skipped=None if target.can("rest_api") else target.why_not("rest_api"),
            )
        )
    steps += [
        _step(
            Action.CHALICE_DELETE_API,
            f"chalice delete --stage {stage.name}",
            skipped=None if target.can("rest_api") else target.why_not("rest_api"),
        ),
        _step(Action.EMPTY_BUCKETS, "uploads, media, front end, artifacts: every object is deleted"),
        _step(
            Action.DELETE_STACK,
            f"stack {stage.stack_name}: tables, queues, user pool (every account), CDN",
        ),
    ]
    if stage.cdn_domain:
        steps.append(
            _step(
                Action.DELETE_CERTIFICATE_STACK,
                f"stack {stage.certificate_stack_name}",
                skipped=None if target.can("acm") else target.why_not("acm"),
            )
        )
    steps += [
        _step(Action.DELETE_SIGNING_KEY, f"SSM parameter {stage.signing_key_parameter}"),
        _step(Action.DELETE_LAYER, f"layer {stage.layer_name}"),
    ]
    return steps
