"""A stage's deploy settings, read from ``infra/stages.toml``."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, fields
from email.utils import parseaddr
from pathlib import Path
from typing import Any

STAGES_FILE = Path(__file__).resolve().parent.parent / "infra" / "stages.toml"
# The values CloudWatch Logs accepts for a log group's retention.
LOG_RETENTION_DAYS = (
    *(1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365),
    *(400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653),
)


@dataclass(frozen=True)
class StageConfig:
    """What a deploy of one stage needs beyond the code and the templates."""

    name: str
    region: str = "us-east-1"
    mail_sender: str = "Vidline <no-reply@example.com>"
    # The SES identity to create and send from: the sender's address by
    # default, or its domain.
    ses_identity: str = ""
    # False when the identity already exists in SES (verified by hand or by
    # another stack): the stack then only uses it and does not create it.
    create_ses_identity: bool = True
    ses_sandbox_recipients: tuple[str, ...] = ()
    # Cognito sends its confirmation codes through SES once the identity is verified.
    cognito_email_via_ses: bool = False
    alarm_email: str = ""
    api_throttle_rate: float = 50.0
    api_throttle_burst: int = 100
    hosted_zone_id: str = ""
    cdn_domain: str = ""
    api_domain: str = ""
    cdn_price_class: str = "PriceClass_100"
    upload_retention_days: int = 14
    # Uploads up to 2 GiB plus the encoded outputs need more than /tmp's 512 MB.
    worker_ephemeral_storage_mb: int = 10240
    # Days the Lambdas' CloudWatch log groups keep their events.
    log_retention_days: int = 30

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,19}", self.name):
            raise ValueError(f"stage name {self.name!r}: use 1-20 lower-case letters, digits and dashes")
        if not parseaddr(self.mail_sender)[1]:
            raise ValueError(f"stage {self.name}: mail_sender has no address: {self.mail_sender!r}")
        if (self.cdn_domain or self.api_domain) and not self.hosted_zone_id:
            raise ValueError(f"stage {self.name}: cdn_domain and api_domain need hosted_zone_id")
        if not self.api_throttle_rate > 0 or not self.api_throttle_burst > 0:
            raise ValueError(f"stage {self.name}: API throttling must be positive")
        if not 512 <= self.worker_ephemeral_storage_mb <= 10240:
            raise ValueError(f"stage {self.name}: worker_ephemeral_storage_mb must be 512-10240")
        if self.log_retention_days not in LOG_RETENTION_DAYS:
            raise ValueError(f"stage {self.name}: log_retention_days must be one of {LOG_RETENTION_DAYS}")

    @property
    def sender_address(self) -> str:
        return parseaddr(self.mail_sender)[1]

    @property
    def identity(self) -> str:
        return self.ses_identity or self.sender_address

    @property
    def stack_name(self) -> str:
        return f"vidline-{self.name}"

    @property
    def certificate_stack_name(self) -> str:
        return f"vidline-{self.name}-cdn-certificate"

    @property
    def signing_key_parameter(self) -> str:
        return f"/vidline/{self.name}/cdn-private-key"

    @property
    def layer_name(self) -> str:
        return f"vidline-{self.name}-ffmpeg"


def load_stage(name: str, path: Path = STAGES_FILE, **overrides: Any) -> StageConfig:
    """The stage `name` from `path` (defaults if it is not listed), with `overrides` applied."""
    data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    values = dict(data.get(name, {}))
    known = {f.name for f in fields(StageConfig)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"{path}: stage {name} has unknown keys {sorted(unknown)}")
    values.update({key: value for key, value in overrides.items() if value is not None})
    if "ses_sandbox_recipients" in values:
        values["ses_sandbox_recipients"] = tuple(values["ses_sandbox_recipients"])
    values["name"] = name
    return StageConfig(**values)
