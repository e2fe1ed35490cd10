# One identity per role. Every S3 permission comes from module.policies, i.e. from
# fleet_core::iam; nothing here adds S3 rights.

locals {
  instance_profile_hosts = toset([for h, c in var.hosts : h if c.credentials == "instance-profile"])
  access_key_hosts       = toset([for h, c in var.hosts : h if c.credentials == "access-key"])

  agent_names = { for h in keys(var.hosts) : h => "${var.name_prefix}-agent-${h}" }

  ec2_assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })

  # OIDC condition keys are named after the provider's host, e.g.
  # token.actions.githubusercontent.com:sub.
  publisher_oidc_host = var.publisher_oidc == null ? null : element(split("oidc-provider/", var.publisher_oidc.provider_arn), 1)

  publisher_trust = concat(
    length(var.publisher_trusted_principal_arns) == 0 ? [] : [{
      Effect    = "Allow"
      Principal = { AWS = var.publisher_trusted_principal_arns }
      Action    = "sts:AssumeRole"
    }],
    var.publisher_oidc == null ? [] : [{
      Effect    = "Allow"
      Principal = { Federated = var.publisher_oidc.provider_arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = {
        StringEquals = { "${local.publisher_oidc_host}:aud" = var.publisher_oidc.audience }
        StringLike   = { "${local.publisher_oidc_host}:sub" = var.publisher_oidc.subjects }
      }
    }],
  )

  reporter_trust = concat(
    [{
      Effect    = "Allow"
      Principal = { Service = "lambda.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }],
    length(var.reporter_trusted_principal_arns) == 0 ? [] : [{
      Effect    = "Allow"
      Principal = { AWS = var.reporter_trusted_principal_arns }
      Action    = "sts:AssumeRole"
    }],
  )
}

# ---- agents on EC2: role + instance profile (short-lived credentials from IMDS) ----

resource "aws_iam_role" "agent" {
  for_each = local.instance_profile_hosts

  name               = local.agent_names[each.key]
  path               = var.iam_path
  description        = "fleet-agent of host ${each.key}"
  assume_role_policy = local.ec2_assume_role_policy
  tags               = merge(var.tags, { "fleet:host" = each.key })

  lifecycle {
    precondition {
      condition     = length(local.agent_names[each.key]) <= 64
      error_message = "IAM name ${local.agent_names[each.key]} is longer than 64 characters: shorten name_prefix or the host name."
    }
  }
}

resource "aws_iam_role_policy" "agent" {
  for_each = local.instance_profile_hosts

  name   = "fleet-agent"
  role   = aws_iam_role.agent[each.key].id
  policy = module.policies.agent[each.key]
}

resource "aws_iam_instance_profile" "agent" {
  for_each = local.instance_profile_hosts

  name = local.agent_names[each.key]
  path = var.iam_path
  role = aws_iam_role.agent[each.key].name
  tags = merge(var.tags, { "fleet:host" = each.key })
}

# ---- agents outside AWS: user + access key ---------------------------------------

resource "aws_iam_user" "agent" {
  for_each = local.access_key_hosts

  name = local.agent_names[each.key]
  path = var.iam_path
  tags = merge(var.tags, { "fleet:host" = each.key })

  lifecycle {
    precondition {
      condition     = length(local.agent_names[each.key]) <= 64
      error_message = "IAM name ${local.agent_names[each.key]} is longer than 64 characters: shorten name_prefix or the host name."
    }
  }
}

resource "aws_iam_user_policy" "agent" {
  for_each = local.access_key_hosts

  name   = "fleet-agent"
  user   = aws_iam_user.agent[each.key].name
  policy = module.policies.agent[each.key]
}

resource "aws_iam_access_key" "agent" {
  for_each = var.create_access_keys ? local.access_key_hosts : toset([])

  user = aws_iam_user.agent[each.key].name
}

# ---- publisher --------------------------------------------------------------------

resource "aws_iam_role" "publisher" {
  # A role needs someone allowed to assume it.
  count = length(local.publisher_trust) > 0 ? 1 : 0

  name        = "${var.name_prefix}-publisher"
  path        = var.iam_path
  description = "fleet-publish: push closures, deploy manifests"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = local.publisher_trust
  })
  tags = var.tags
}

resource "aws_iam_role_policy" "publisher" {
  count = length(aws_iam_role.publisher)

  name   = "fleet-publisher"
  role   = aws_iam_role.publisher[0].id
  policy = module.policies.publisher
}

resource "aws_iam_user" "publisher" {
  count = var.publisher_user ? 1 : 0

  name = "${var.name_prefix}-publisher"
  path = var.iam_path
  tags = var.tags
}

resource "aws_iam_user_policy" "publisher" {
  count = length(aws_iam_user.publisher)

  name   = "fleet-publisher"
  user   = aws_iam_user.publisher[0].name
  policy = module.policies.publisher
}

resource "aws_iam_access_key" "publisher" {
  count = var.create_access_keys ? length(aws_iam_user.publisher) : 0

  user = aws_iam_user.publisher[0].name
}

# ---- reporter ---------------------------------------------------------------------

resource "aws_iam_role" "reporter" {
  name        = "${var.name_prefix}-reporter"
  path        = var.iam_path
  description = "fleet-reporter: the dashboard"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = local.reporter_trust
  })
  tags = var.tags
}

resource "aws_iam_role_policy" "reporter" {
  name   = "fleet-reporter"
  role   = aws_iam_role.reporter.id
  policy = module.policies.reporter
}

# ---- admin and viewer (optional users) --------------------------------------------

resource "aws_iam_user" "admin" {
  count = var.admin_user ? 1 : 0

  name = "${var.name_prefix}-admin"
  path = var.iam_path
  tags = var.tags
}

resource "aws_iam_user_policy" "admin" {
  count = length(aws_iam_user.admin)

  name   = "fleet-admin"
  user   = aws_iam_user.admin[0].name
  policy = module.policies.admin
}

resource "aws_iam_access_key" "admin" {
  count = var.create_access_keys ? length(aws_iam_user.admin) : 0

  user = aws_iam_user.admin[0].name
}

resource "aws_iam_user" "viewer" {
  count = var.viewer_user ? 1 : 0

  name = "${var.name_prefix}-viewer"
  path = var.iam_path
  tags = var.tags
}

resource "aws_iam_user_policy" "viewer" {
  count = length(aws_iam_user.viewer)

  name   = "fleet-viewer"
  user   = aws_iam_user.viewer[0].name
  policy = module.policies.viewer
}

resource "aws_iam_access_key" "viewer" {
  count = var.create_access_keys ? length(aws_iam_user.viewer) : 0

  user = aws_iam_user.viewer[0].name
}
