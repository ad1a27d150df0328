"""Example stack outputs for the deploy tests: what a prod stage in eu-west-1 would have."""

from __future__ import annotations

from deploy.policies import PolicyTargets

TARGETS = PolicyTargets(
    partition="aws",
    region="eu-west-1",
    account_id="111122223333",
    videos_table_arn="arn:aws:dynamodb:eu-west-1:111122223333:table/vidline-prod-videos",
    idempotency_table_arn="arn:aws:dynamodb:eu-west-1:111122223333:table/vidline-prod-idempotency",
    cache_table_arn="arn:aws:dynamodb:eu-west-1:111122223333:table/vidline-prod-cache",
    usage_table_arn="arn:aws:dynamodb:eu-west-1:111122223333:table/vidline-prod-usage",
    uploads_bucket="vidline-prod-uploads-111122223333",
    media_bucket="vidline-prod-media-111122223333",
    jobs_queue_arn="arn:aws:sqs:eu-west-1:111122223333:vidline-prod-jobs",
    jobs_dlq_arn="arn:aws:sqs:eu-west-1:111122223333:vidline-prod-jobs-dlq",
    user_pool_arn="arn:aws:cognito-idp:eu-west-1:111122223333:userpool/eu-west-1_abc",
    sender_identity_arn="arn:aws:ses:eu-west-1:111122223333:identity/no-reply@example.com",
    cdn_private_key_parameter="/vidline/prod/cdn-private-key",
)
