"""Deploying Vidline to AWS: the front-end build, Lambda packaging, infrastructure and the deploy command."""
