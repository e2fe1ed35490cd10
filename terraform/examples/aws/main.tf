# Example: a fleet on AWS. EC2 hosts use instance profiles, one on-prem host uses an
# access key, CI (GitHub Actions) publishes through OIDC, and the dashboard runs on
# Lambda behind an IAM-authenticated Function URL.

terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      # 6.29 added aws_lambda_permission's invoked_via_function_url.
      source  = "hashicorp/aws"
      version = ">= 6.29, < 7.0"
    }
  }
}

provider "aws" {
  region = "eu-west-1"
}

module "fleet" {
  source = "../../modules/aws-fleet"

  bucket = "example-fleet-prod"
  prefix = "prod"

  hosts = {
    web-1    = {}
    web-2    = {}
    kiosk-17 = { credentials = "access-key" }
  }

  publisher_oidc = {
    provider_arn = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
    subjects     = ["repo:example/infra:ref:refs/heads/main"]
  }

  # `nix build .#fleet-reporter-lambda` at the repository root puts the zip in
  # result/ (or scripts/lambda-zip.sh, in target/lambda/; see ../../README.md).
  dashboard_package                = "${path.root}/../../../result/fleet-reporter-lambda.zip"
  dashboard_trusted_publisher_keys = ["publisher-1:1gNt8HOHaiR6hFh4EO+f8kqYbHrgsr3VqnaSTY/M3RI="]
  dashboard_invoker_arns           = ["arn:aws:iam::123456789012:role/ops"]

  tags = { project = "fleet" }
}

output "store_url" {
  value = module.fleet.store_url
}

output "instance_profiles" {
  value = module.fleet.agent_instance_profiles
}

output "dashboard_url" {
  value = module.fleet.dashboard_url
}
