"""Carry out a plan (deploy/plan.py) against a target, reporting each step.

Every AWS call goes through `deploy.aws.Aws`; Chalice runs as a subprocess.
Steps marked skipped in the plan are printed with their reason and not
run. What one step learns (stack outputs, the layer ARN, the API's id)
goes into `Outcome`, which later steps read and the end of the run prints.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from deploy import chalice_config, policies
from deploy.aws import Aws, DeployError
from deploy.merge import gateway_responses
from deploy.plan import API_GATEWAY_STAGE, BASE_PATH, SITE_INVALIDATION_PATHS, Action, Step, Target
from deploy.stages import StageConfig
from deploy.template import INFRA_DIR, load_template, rename_resource, specialise, without_types

ROOT = Path(__file__).resolve().parent.parent
# The CloudFront public key's logical id in infra/stack.yaml; deployed as
# this plus the key's fingerprint (see public_key_fingerprint).
CDN_PUBLIC_KEY = "CdnPublicKey"
# Where the site's config.json says it is deployed rather than run locally.
NEEDS_CONFIRMATION = True

LayerBuilder = Callable[[Path], Path]
SiteBuilder = Callable[[dict[str, Any], Path], Sequence[Any]]
Output = Callable[[str], None]


@dataclass
class Outcome:
    """What the run has learnt and done so far."""

    stack_outputs: dict[str, str] = field(default_factory=dict)
    removed_outputs: list[str] = field(default_factory=list)
    public_key_pem: str = ""
    certificate_arn: str = ""
    layer_arn: str = ""
    rest_api_id: str = ""
    api_url: str = ""
    uploaded_keys: list[str] = field(default_factory=list)
    invalidation_id: str = ""
    skipped: list[str] = field(default_factory=list)


@dataclass
class Project:
    """The two Chalice apps: the API at `root`, the workers in `root/workers`."""

    root: Path = ROOT

    @property
    def api_dir(self) -> Path:
        return self.root

    @property
    def workers_dir(self) -> Path:
        return self.root / "workers"


def new_signing_key() -> tuple[str, str]:
    """A fresh RSA key pair for CloudFront signed URLs: (private PEM, public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return private, public_pem(private)


def public_key_fingerprint(public_pem_text: str) -> str:
    """16 hex digits of the public key's SHA-256: a new key gets a new CloudFront public key.

    CloudFront cannot change an existing public key's EncodedKey, and
    CloudFormation would try to (no property of AWS::CloudFront::PublicKey
    forces a replacement). So the key's name and the resource's logical id
    carry this: a regenerated key (the SSM parameter was lost) is created as
    a new public key and the old one is deleted.
    """
    return hashlib.sha256(public_pem_text.strip().encode()).hexdigest()[:16]


def public_pem(private_pem: str) -> str:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


class Executor:
    """Runs the steps of a plan in order; stops at the first failure."""

    def __init__(
        self,
        stage: StageConfig,
        target: Target,
        aws: Aws,
        project: Project | None = None,
        *,
        layer_builder: LayerBuilder | None = None,
        site_builder: SiteBuilder | None = None,
        output: Output = print,
        work_dir: Path | None = None,
    ):
        self.stage = stage
        self.target = target
        self.aws = aws
        self.project = project or Project()
        self._layer_builder = layer_builder
        self._site_builder = site_builder
        self._out = output
        self._work_dir = work_dir or Path(tempfile.mkdtemp(prefix=f"vidline-{stage.name}-"))
        self.outcome = Outcome()

    def run(self, steps: Sequence[Step]) -> Outcome:
        handlers: dict[Action, Callable[[], None]] = {
            Action.ENSURE_SIGNING_KEY: self._ensure_signing_key,
            Action.DEPLOY_CERTIFICATE_STACK: self._deploy_certificate_stack,
            Action.DEPLOY_STACK: self._deploy_stack,
            Action.PUBLISH_LAYER: self._publish_layer,
            Action.WRITE_APP_CONFIG: self._write_app_config,
            Action.CHALICE_DEPLOY_API: self._chalice_deploy_api,
            Action.CONFIGURE_API: self._configure_api,
            Action.CHALICE_DEPLOY_WORKERS: self._chalice_deploy_workers,
            Action.CONFIGURE_WORKERS: self._configure_workers,
            Action.UPLOAD_SITE: self._upload_site,
            Action.INVALIDATE_CDN: self._invalidate,
            Action.CHALICE_DELETE_WORKERS: lambda: self._chalice_delete(self.project.workers_dir),
            Action.CHALICE_DELETE_API: lambda: self._chalice_delete(self.project.api_dir),
            Action.EMPTY_BUCKETS: self._empty_buckets,
            Action.DELETE_BASE_PATH_MAPPING: self._delete_base_path_mapping,
            Action.DELETE_STACK: self._delete_stack,
            Action.DELETE_CERTIFICATE_STACK: self._delete_certificate_stack,
            Action.DELETE_SIGNING_KEY: self._delete_signing_key,
            Action.DELETE_LAYER: self._delete_layer,
        }
        for number, step in enumerate(steps, 1):
            if step.skipped:
                self._out(f"[{number}/{len(steps)}] skipped: {step.action.value} ({step.skipped})")
                self.outcome.skipped.append(f"{step.action.value}: {step.skipped}")
                continue
            self._out(f"[{number}/{len(steps)}] {step.action.value}")
            handlers[step.action]()
        return self.outcome

    # ------------------------------------------------------------ deploy
    def _ensure_signing_key(self) -> None:
        name = self.stage.signing_key_parameter
        private = self.aws.secure_parameter(name)
        if private is None:
            private, public = new_signing_key()
            self.aws.put_secure_parameter(
                name, private, f"Vidline {self.stage.name}: signs CloudFront media URLs"
            )
            self._out(f"    generated a new key pair; private key stored in {name}")
        else:
            public = public_pem(private)
            self._out(f"    reusing the key in {name}")
        self.outcome.public_key_pem = public

    def _deploy_certificate_stack(self) -> None:
        template = load_template(INFRA_DIR / "cdn-certificate.yaml")
        outputs = self.aws.deploy_stack(
            self.stage.certificate_stack_name,
            template,
            {
                "Stage": self.stage.name,
                "CdnDomainName": self.stage.cdn_domain,
                "HostedZoneId": self.stage.hosted_zone_id,
            },
            region="us-east-1",
        )
        self.outcome.certificate_arn = outputs["CertificateArn"]
        self._out(f"    certificate {self.outcome.certificate_arn}")

    def stack_parameters(self) -> dict[str, str]:
        """The main stack's parameters for this stage and target."""
        settings = chalice_config.default_settings()
        cdn = self.target.can("cloudfront")
        workers_dir = self.project.workers_dir
        api_function, worker_functions = self.function_names()
        # Each worker function's name, for its log group in the stack.
        function_parameters = {
            chalice_config.WORKER_HANDLERS[handler].function_name_parameter: name
            for handler, name in worker_functions.items()
        }
        function_parameters |= {
            chalice_config.SCHEDULED_HANDLERS[handler]: name
            for handler, name in chalice_config.scheduled_function_names(workers_dir, self.stage.name).items()
        }
        # A queue's visibility timeout must be at least its consumer's function
        # timeout (Lambda refuses the trigger otherwise); AWS advises six times.
        # It also keeps a job's idempotency lock, which Powertools expires at the
        # function's timeout, from outliving a receive: a redelivery finds it gone.
        stage = self.stage.name
        jobs_timeout = chalice_config.worker_timeout_s(workers_dir, stage, "process_upload")
        dead_letter_timeout = chalice_config.worker_timeout_s(workers_dir, stage, "fail_dead_upload")
        return {
            "Stage": self.stage.name,
            "SenderIdentity": self.stage.identity,
            "CreateSesIdentity": "true" if self.stage.create_ses_identity else "false",
            "ApiFunctionName": api_function,
            **function_parameters,
            "LogRetentionDays": str(self.stage.log_retention_days),
            "JobMaxReceives": str(settings.job_max_receives),
            "JobVisibilityTimeoutSeconds": str(max(6 * jobs_timeout, 5400)),
            "DeadLetterVisibilityTimeoutSeconds": str(6 * dead_letter_timeout),
            "UploadRetentionDays": str(self.stage.upload_retention_days),
            "AlarmEmail": self.stage.alarm_email,
            "EnableCdn": "true" if cdn else "false",
            "AppOriginWithoutCdn": settings.app_url,
            "CdnPublicKeyPem": self.outcome.public_key_pem,
            "CdnPublicKeyFingerprint": public_key_fingerprint(self.outcome.public_key_pem),
            "CdnPriceClass": self.stage.cdn_price_class,
            "HostedZoneId": self.stage.hosted_zone_id,
            "CdnDomainName": self.stage.cdn_domain if cdn else "",
            "CdnCertificateArn": self.outcome.certificate_arn,
            "ApiDomainName": self.stage.api_domain if self.target.can("rest_api") else "",
            "CognitoEmailViaSes": "true" if self.stage.cognito_email_via_ses else "false",
            "CognitoFromAddress": self.stage.mail_sender if self.stage.cognito_email_via_ses else "",
        }

    def stack_template(self, parameters: dict[str, str]) -> dict[str, Any]:
        """infra/stack.yaml with the CDN public key's logical id carrying its fingerprint."""
        template = load_template(INFRA_DIR / "stack.yaml")
        fingerprint = parameters["CdnPublicKeyFingerprint"]
        return rename_resource(template, CDN_PUBLIC_KEY, f"{CDN_PUBLIC_KEY}{fingerprint}")

    def _deploy_stack(self) -> None:
        parameters = self.stack_parameters()
        template = self.stack_template(parameters)
        if self.target.unmodelled_types:
            reduced = without_types(specialise(template, parameters), self.target.unmodelled_types)
            template = reduced.template
            used = set(template.get("Parameters", {}))
            parameters = {key: value for key, value in parameters.items() if key in used}
            for logical_id, kind in sorted(reduced.removed_resources.items()):
                reason = f"stack resource {logical_id} ({kind}): the target cannot create it"
                self.outcome.skipped.append(reason)
                self._out(f"    skipped: {reason}")
            self.outcome.removed_outputs = reduced.removed_outputs
        self.outcome.stack_outputs = self.aws.deploy_stack(self.stage.stack_name, template, parameters)
        self._out(f"    stack {self.stage.stack_name}: {len(self.outcome.stack_outputs)} outputs")

    def _publish_layer(self) -> None:
        builder = self._layer_builder
        if builder is None:
            from deploy.packaging import build_ffmpeg_layer

            builder = build_ffmpeg_layer
        zip_path = builder(self._work_dir / "layer")
        digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
        description = f"ffmpeg for Vidline workers, zip sha256 {digest[:16]}"
        existing = self.aws.layer_version_with_description(self.stage.layer_name, description)
        if existing:
            self.outcome.layer_arn = existing
            self._out(f"    unchanged: {existing}")
            return
        bucket = self.outcome.stack_outputs["ArtifactsBucketName"]
        key = f"layers/ffmpeg-{digest}.zip"
        if not self.aws.object_exists(bucket, key):
            self.aws.upload_file(bucket, key, zip_path, "application/zip", "no-store")
        self.outcome.layer_arn = self.aws.publish_layer(self.stage.layer_name, bucket, key, description)
        self._out(f"    published {self.outcome.layer_arn}")

    def policy_targets(self) -> policies.PolicyTargets:
        outputs, region = self.outcome.stack_outputs, self.target.region
        account, partition = self.aws.account_id(), self.aws.partition()
        return policies.PolicyTargets(
            partition=partition,
            region=region,
            account_id=account,
            videos_table_arn=outputs["VideosTableArn"],
            idempotency_table_arn=outputs["IdempotencyTableArn"],
            cache_table_arn=outputs["CacheTableArn"],
            usage_table_arn=outputs["UsageTableArn"],
            uploads_bucket=outputs["UploadsBucketName"],
            media_bucket=outputs["MediaBucketName"],
            jobs_queue_arn=outputs["JobsQueueArn"],
            jobs_dlq_arn=outputs["JobsDeadLetterQueueArn"],
            user_pool_arn=outputs.get("UserPoolArn", ""),
            sender_identity_arn=outputs["SenderIdentityArn"],
            cdn_private_key_parameter=self.stage.signing_key_parameter,
            sandbox_recipient_identity_arns=tuple(
                f"arn:{partition}:ses:{region}:{account}:identity/{recipient}"
                for recipient in self.stage.ses_sandbox_recipients
            ),
        )

    def _write_app_config(self) -> None:
        project, stage = self.project, self.stage
        for name in self.outcome.removed_outputs:
            self._out(f"    not set: output {name} (the target did not create its resource)")
        values = chalice_config.StackValues.from_outputs(self.outcome.stack_outputs)
        targets = self.policy_targets()
        api_function, workers = self.function_names()
        # The workers app's role is every one of its functions': the scheduled ones log too.
        scheduled = chalice_config.scheduled_function_names(project.workers_dir, stage.name)
        worker_functions = list(workers.values()) + list(scheduled.values())
        chalice_config.update_stage(
            project.api_dir / ".chalice" / "config.json",
            stage.name,
            chalice_config.api_environment(stage, values),
            # xray: active tracing on the function and the API Gateway stage.
            extra={
                "api_gateway_stage": API_GATEWAY_STAGE,
                "api_gateway_endpoint_type": "REGIONAL",
                "xray": True,
            },
        )
        chalice_config.update_stage(
            project.workers_dir / ".chalice" / "config.json",
            stage.name,
            chalice_config.workers_environment(
                stage, values, chalice_config.default_settings().job_max_receives
            ),
            extra={"xray": True, **({"layers": [self.outcome.layer_arn]} if self.outcome.layer_arn else {})},
        )
        for path in (
            chalice_config.write_policy(
                project.api_dir, stage.name, policies.api_policy(targets, api_function)
            ),
            chalice_config.write_policy(
                project.workers_dir, stage.name, policies.workers_policy(targets, worker_functions)
            ),
        ):
            self._out(f"    wrote {path}")

    def _chalice(self, app_dir: Path, command: str) -> str:
        """Run `chalice <command> --stage` for the app in `app_dir`; its output."""
        from deploy import packaging

        env = dict(os.environ, AWS_DEFAULT_REGION=self.target.region, AWS_REGION=self.target.region)
        if command == "deploy":
            try:
                packaging.prepare_chalice_deploy(app_dir, self.stage.name)
            except RuntimeError as error:
                raise DeployError(f"could not build {app_dir.name}'s deployment package: {error}") from error
            env = packaging.chalice_deploy_env(env)
        chalice = Path(sys.executable).with_name("chalice")
        args = [str(chalice), "--project-dir", str(app_dir), command, "--stage", self.stage.name]
        result = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
        output = result.stdout + result.stderr
        for line in output.splitlines():
            self._out(f"    chalice | {line}")
        if result.returncode != 0:
            raise DeployError(f"{' '.join(args)} failed with exit code {result.returncode}")
        if command == "deploy":
            try:
                packaging.check_reused(output)
            except RuntimeError as error:
                raise DeployError(
                    f"{error}.\nThe functions are deployed and work, but cold-start slower. Deploy "
                    "again without changing files in between (an editor or a test run writing "
                    "chalicelib/__pycache__ counts) and Chalice reuses the zip with bytecode."
                ) from error
        return output

    def function_names(self) -> tuple[str, dict[str, str]]:
        """The API's Lambda name and each worker handler's, as Chalice names them."""
        return (
            chalice_config.api_function_name(self.project.api_dir, self.stage.name),
            chalice_config.worker_function_names(self.project.workers_dir, self.stage.name),
        )

    def _chalice_delete(self, app_dir: Path) -> None:
        self._chalice(app_dir, "delete")

    def _chalice_deploy_api(self) -> None:
        self._chalice(self.project.api_dir, "deploy")
        deployed = self.project.api_dir / ".chalice" / "deployed" / f"{self.stage.name}.json"
        for resource in json.loads(deployed.read_text(encoding="utf-8"))["resources"]:
            if resource.get("resource_type") == "rest_api":
                self.outcome.rest_api_id = resource["rest_api_id"]
                self.outcome.api_url = str(resource["rest_api_url"]).rstrip("/")
        if not self.outcome.rest_api_id:
            raise DeployError(f"{deployed} names no REST API")

    def _configure_api(self) -> None:
        api_id, origin = self.outcome.rest_api_id, self.outcome.stack_outputs["AppUrl"]
        self.aws.put_gateway_responses(api_id, gateway_responses(origin))
        # Gateway responses take effect with a deployment; chalice deploy's
        # next put_rest_api drops them, so each deploy sets them again.
        self.aws.redeploy_stage(api_id, API_GATEWAY_STAGE, "vidline: gateway responses")
        self.aws.set_stage_throttling(
            api_id, API_GATEWAY_STAGE, self.stage.api_throttle_rate, self.stage.api_throttle_burst
        )
        if self.stage.api_domain:
            self.aws.ensure_base_path_mapping(self.stage.api_domain, api_id, API_GATEWAY_STAGE)
            self.outcome.api_url = f"https://{self.stage.api_domain}"

    def _chalice_deploy_workers(self) -> None:
        self._chalice(self.project.workers_dir, "deploy")

    def _configure_workers(self) -> None:
        # Ephemeral storage and ReportBatchItemFailures: Chalice can set neither.
        # Both as in the CI/CD template (deploy/merge.py), so both paths deploy
        # the same triggers; with one message per batch a raised error retries
        # just that message. Only the encoder needs the big /tmp.
        storage = self.stage.worker_ephemeral_storage_mb
        for handler, name in self.function_names()[1].items():
            self.aws.report_batch_item_failures(name)
            if chalice_config.WORKER_HANDLERS[handler].encodes:
                self.aws.set_ephemeral_storage(name, storage)
                self._out(f"    {name}: /tmp is {storage} MB; the SQS trigger reports batch item failures")
            else:
                self._out(f"    {name}: the SQS trigger reports batch item failures")

    def site_config(self) -> dict[str, Any]:
        """The front end's config.json for this deploy."""
        from deploy.frontend import frontend_config

        settings = chalice_config.default_settings()
        return frontend_config(
            self.outcome.api_url,
            self.stage.name,
            needs_confirmation=NEEDS_CONFIRMATION,
            max_upload_bytes=settings.max_upload_bytes,
            allowed_content_types=settings.allowed_content_types,
        )

    def _upload_site(self) -> None:
        builder = self._site_builder
        if builder is None:
            from deploy.frontend import build_site

            builder = build_site
        if not self.outcome.api_url:
            self._out("    note: the API was not deployed, so config.json has no apiUrl")
        bucket = self.outcome.stack_outputs["FrontendBucketName"]
        for site_file in builder(self.site_config(), self._work_dir / "site"):
            self.aws.upload_file(
                bucket, site_file.key, site_file.path, site_file.content_type, site_file.cache_control
            )
            self.outcome.uploaded_keys.append(site_file.key)
        self._out(f"    {len(self.outcome.uploaded_keys)} files to s3://{bucket}/")

    def _invalidate(self) -> None:
        distribution = self.outcome.stack_outputs["DistributionId"]
        self.outcome.invalidation_id = self.aws.invalidate(distribution, list(SITE_INVALIDATION_PATHS))
        self._out(f"    invalidation {self.outcome.invalidation_id} on {distribution}")

    # ----------------------------------------------------------- destroy
    def _delete_base_path_mapping(self) -> None:
        # Made with boto3 by CONFIGURE_API, outside CloudFormation; API Gateway
        # refuses to delete a REST API that a mapping still points at.
        domain = self.stage.api_domain
        deleted = self.aws.delete_base_path_mapping(domain, BASE_PATH)
        self._out(f"    {'deleted' if deleted else 'no'} base path mapping {domain}/{BASE_PATH}")

    def _empty_buckets(self) -> None:
        if self.aws.stack_status(self.stage.stack_name) is None:
            self._out(f"    no stack {self.stage.stack_name}")
            return
        outputs = self.aws.stack_outputs(self.stage.stack_name)
        for key in ("UploadsBucketName", "MediaBucketName", "FrontendBucketName", "ArtifactsBucketName"):
            if key in outputs:
                count = self.aws.empty_bucket(outputs[key])
                self._out(f"    {outputs[key]}: {count} objects deleted")

    def _delete_stack(self) -> None:
        deleted = self.aws.delete_stack(self.stage.stack_name)
        self._out(f"    {'deleted' if deleted else 'no stack'} {self.stage.stack_name}")

    def _delete_certificate_stack(self) -> None:
        deleted = self.aws.delete_stack(self.stage.certificate_stack_name, region="us-east-1")
        self._out(f"    {'deleted' if deleted else 'no stack'} {self.stage.certificate_stack_name}")

    def _delete_signing_key(self) -> None:
        deleted = self.aws.delete_parameter(self.stage.signing_key_parameter)
        self._out(f"    {'deleted' if deleted else 'no parameter'} {self.stage.signing_key_parameter}")

    def _delete_layer(self) -> None:
        count = self.aws.delete_layer_versions(self.stage.layer_name)
        self._out(f"    {count} versions of {self.stage.layer_name} deleted")


def summary(stage: StageConfig, outcome: Outcome) -> list[str]:
    """The closing lines of a deploy: where things are, and what was not done."""
    outputs = outcome.stack_outputs
    lines = [f"Vidline {stage.name} is deployed."]
    lines.append(f"  app:    {outputs.get('AppUrl', '-')}")
    lines.append(f"  api:    {outcome.api_url or '- (not deployed)'}")
    lines.append(f"  media:  {outputs.get('AppUrl', '-')}/media/... (signed URLs)")
    if outcome.skipped:
        lines.append(f"Not done on this target ({len(outcome.skipped)}):")
        lines += [f"  - {item}" for item in outcome.skipped]
    return lines
