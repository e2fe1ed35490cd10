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
