# fleet-reporter as an AWS Lambda function behind a Function URL. The binary runs
# as `bootstrap` on the provided.al2023 runtime; with AWS_LAMBDA_RUNTIME_API set and
# no arguments it serves Lambda events (reporter/src/main.rs).

locals {
  dashboard      = var.dashboard_package != null
  dashboard_name = "${var.name_prefix}-dashboard"

  dashboard_environment = merge(
    { FLEET_BUCKET = local.store_url },
    # An empty list would reach the reporter as one empty key; leave it unset.
    length(var.dashboard_trusted_publisher_keys) == 0 ? {} : {
      FLEET_REPORTER_TRUSTED_KEYS = join(",", var.dashboard_trusted_publisher_keys)
    },
    var.dashboard_environment,
  )

  # Who may call the URL: the listed principals with AWS_IAM, everyone with NONE.
  dashboard_invokers = !local.dashboard ? [] : (
    var.dashboard_url_auth == "NONE" ? ["*"] : var.dashboard_invoker_arns
  )
}

resource "aws_cloudwatch_log_group" "dashboard" {
  count = local.dashboard ? 1 : 0

  name              = "/aws/lambda/${local.dashboard_name}"
  retention_in_days = var.dashboard_log_retention_days
  tags              = var.tags
}

# Logs only to its own group (instead of AWSLambdaBasicExecutionRole's logs:* on
# every group).
resource "aws_iam_role_policy" "reporter_logs" {
  count = local.dashboard ? 1 : 0

  name = "fleet-reporter-logs"
  role = aws_iam_role.reporter.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid      = "WriteOwnLogs"
      Effect   = "Allow"
      Action   = ["logs:CreateLogStream", "logs:PutLogEvents"]
      Resource = "${aws_cloudwatch_log_group.dashboard[0].arn}:*"
    }]
  })
}

resource "aws_lambda_function" "dashboard" {
  count = local.dashboard ? 1 : 0

  function_name    = local.dashboard_name
  description      = "fleet-reporter: fleet dashboard for ${local.store_url}"
  role             = aws_iam_role.reporter.arn
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  filename         = var.dashboard_package
  source_code_hash = filebase64sha256(var.dashboard_package)
  architectures    = [var.dashboard_architecture]
  memory_size      = var.dashboard_memory_mb
  timeout          = var.dashboard_timeout_seconds
  # Caps what a flood of requests can cost (with dashboard_url_auth = "NONE" anyone
  # can send them); -1 leaves the function on the account's unreserved pool.
  reserved_concurrent_executions = var.dashboard_reserved_concurrency
  tags                           = var.tags

  environment {
    variables = local.dashboard_environment
  }

  depends_on = [aws_cloudwatch_log_group.dashboard, aws_iam_role_policy.reporter, aws_iam_role_policy.reporter_logs]
}

resource "aws_lambda_function_url" "dashboard" {
  count = local.dashboard ? 1 : 0

  function_name      = aws_lambda_function.dashboard[0].function_name
  authorization_type = var.dashboard_url_auth
}

# Since October 2025 a function URL needs both lambda:InvokeFunctionUrl and
# lambda:InvokeFunction for its callers.
resource "aws_lambda_permission" "dashboard_url" {
  for_each = toset(local.dashboard_invokers)

  statement_id           = "FunctionUrl-${substr(sha256(each.key), 0, 16)}"
  action                 = "lambda:InvokeFunctionUrl"
  function_name          = aws_lambda_function.dashboard[0].function_name
  principal              = each.key
  function_url_auth_type = var.dashboard_url_auth
}

# invoked_via_function_url limits this grant to calls that come through the URL
# (condition lambda:InvokedViaFunctionUrl): without it, with dashboard_url_auth =
# "NONE", any AWS account could invoke the function directly with any event.
resource "aws_lambda_permission" "dashboard_invoke" {
  for_each = toset(local.dashboard_invokers)

  statement_id             = "Invoke-${substr(sha256(each.key), 0, 16)}"
  action                   = "lambda:InvokeFunction"
  function_name            = aws_lambda_function.dashboard[0].function_name
  principal                = each.key
  invoked_via_function_url = true
}
