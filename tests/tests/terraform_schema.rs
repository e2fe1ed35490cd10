//! The Terraform modules and examples checked against the providers' argument
//! schemas (`scripts/tfschema.py`, schemas in `terraform/schemas/`): what `terraform
//! validate` would say about resource types, arguments and nested blocks, which it
//! cannot say here because providers cannot be downloaded. Each kind of mistake is
//! shown to fail on a broken copy of a module.
//!
//! The trimmed schemas are compared with what `tfschema.py trim` makes from the
//! vendored full ones (`shared/vendor/terraform-schemas` beside the checkout, or
//! `$FLEET_TF_SCHEMAS`); that test and the deprecation test skip, saying why, where
//! the vendored data is absent.

mod infra_support;

use fleet_tests::output_text as text;
use infra_support::{copy_tree, repo, vendored};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `python3 scripts/tfschema.py ARGS…` with `envs` (the standard library suffices).
fn tfschema(args: &[&Path], envs: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new("python3");
    cmd.arg(repo().join("scripts/tfschema.py")).args(args);
    cmd.env_remove("FLEET_TF_SCHEMA_DIR");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("python3 runs scripts/tfschema.py")
}

/// The vendored full schemas, or None (with the reason printed) when absent.
fn vendor() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("FLEET_TF_SCHEMAS") {
        return Some(PathBuf::from(d));
    }
    let found = vendored("terraform-schemas");
    if found.is_none() {
        eprintln!(
            "SKIPPED: no vendored provider schemas (shared/vendor/terraform-schemas beside the checkout, or $FLEET_TF_SCHEMAS)"
        );
    }
    found
}

/// Replaces `from` (which must be there) by `to` in `file`.
fn edit(file: &Path, from: &str, to: &str) {
    let s = std::fs::read_to_string(file).unwrap();
    assert!(s.contains(from), "{} lacks {from:?}", file.display());
    std::fs::write(file, s.replacen(from, to, 1)).unwrap();
}

#[test]
fn every_module_and_example_matches_the_provider_schemas() {
    let o = tfschema(&[Path::new("check")], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    // Every configuration, and both providers at every version their floors allow.
    assert!(err.contains("in 5 configurations"), "{err}");
    assert!(err.contains("aws 6.62.0; minio 3.20.0, 3.40.1"), "{err}");
}

#[test]
fn the_schema_check_catches_broken_modules() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("terraform");
    copy_tree(&repo().join("terraform"), &root);
    let aws = root.join("modules/aws-fleet");
    let minio = root.join("modules/minio-fleet");

    edit(
        &aws.join("main.tf"),
        "force_destroy = var.force_destroy",
        "forse_destroy = var.force_destroy",
    );
    edit(
        &aws.join("main.tf"),
        "  versioning_configuration {",
        "  versioning_configuration = {",
    );
    edit(
        &aws.join("main.tf"),
        "      noncurrent_days = 1\n",
        "      noncurrent_dayz = 1\n",
    );
    edit(
        &aws.join("dashboard.tf"),
        "resource \"aws_lambda_function_url\"",
        "resource \"aws_lambda_function_urls\"",
    );
    edit(
        &aws.join("dashboard.tf"),
        "  handler          = \"bootstrap\"\n",
        "  handler          = \"bootstrap\"\n  runtime { name = \"x\" }\n",
    );
    edit(
        &aws.join("main.tf"),
        "    filter {\n      prefix = local.prefix\n    }\n",
        "    filter {}\n",
    );
    edit(&aws.join("versions.tf"), ">= 6.29", ">= 6.0");
    edit(&minio.join("versions.tf"), ">= 3.20", ">= 3.10");
    edit(
        &minio.join("main.tf"),
        "    id = \"old-versions-and-uploads\"\n",
        "",
    );
    edit(
        &minio.join("main.tf"),
        "  acl           = \"private\"",
        "  acl           = \"private\"\n  encryption_type = \"AES512\"",
    );
    edit(
        &minio.join("main.tf"),
        "  encryption_type = var.server_side_encryption",
        "  encryption_type = \"AES512\"",
    );

    let example = root.join("examples/minio");
    edit(&example.join("main.tf"), ">= 3.20", ">= 3.0");

    let o = tfschema(&[Path::new("check"), &aws, &minio, &example], &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    for want in [
        // Unknown names, with the closest real one.
        "aws_s3_bucket.this (aws 6.62.0): unknown argument `forse_destroy` (did you mean `force_destroy`?)",
        "unknown resource type `aws_lambda_function_urls` (did you mean `aws_lambda_function_url`?)",
        "minio_s3_bucket.this (minio 3.20.0): unknown argument `encryption_type`",
        // A block written as an attribute, and an attribute written as a block.
        "`versioning_configuration` is a block: write `versioning_configuration { ... }`",
        "`runtime` is an argument: write `runtime = ...`, not a block",
        // Missing required arguments, in nested and in top-level blocks.
        "rule.noncurrent_version_expiration: required argument `noncurrent_days` is missing",
        "minio_ilm_policy.this (minio 3.40.1).rule: required argument `id` is missing",
        "aws_lambda_function_urls.dashboard (aws 6.62.0): unknown resource type",
        // A value outside the provider's list.
        "`encryption_type` = 'AES512' is not one of ['aws:kms', 'AES256']",
        // Deprecated forms the AWS extract does not mark (terraform/schemas/changelog.json).
        "`aws_s3_bucket_lifecycle_configuration.rule.filter`: an empty filter {} is deprecated",
        // Provider floors: below what the code needs, below any schema at hand.
        "`aws_lambda_permission.invoked_via_function_url` needs provider 6.29.0",
        "provider `minio` floor 3.10.0 is older than the oldest version with a schema (3.20.0)",
        // A caller promising older providers than the module it calls needs.
        "provider `minio` '>= 3.0, < 4.0' allows versions older than module `fleet` needs",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // file:line of each problem points into the copy.
    assert!(
        out.lines().all(|l| l.starts_with(&*root.to_string_lossy())),
        "{out}"
    );
}

#[test]
fn deprecated_arguments_and_missing_providers_are_refused() {
    let Some(vendor) = vendor() else { return };
    let d = tempfile::tempdir().unwrap();
    let module = d.path().join("m");
    std::fs::create_dir(&module).unwrap();
    std::fs::write(
        module.join("main.tf"),
        r#"terraform {
  required_providers {
    minio = {
      source  = "aminueza/minio"
      version = ">= 3.40.1, < 4.0"
    }
  }
}

resource "minio_s3_bucket_replication" "r" {
  bucket = "b"

  rule {
    target {
      bucket     = "c"
      host       = "minio.lan:9000"
      access_key = "a"
      syncronous = true
    }
  }
}

resource "aws_s3_bucket" "no_provider" {
  bucket = "b"
}
"#,
    )
    .unwrap();
    // Against the full vendored schemas: this type is not one terraform/ uses.
    let o = tfschema(
        &[Path::new("check"), &module],
        &[("FLEET_TF_SCHEMA_DIR", &vendor)],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        out.contains("rule.target: `syncronous` is deprecated: Use 'synchronous' instead"),
        "{out}"
    );
    assert!(
        out.contains("provider `aws` is used but not in this module's required_providers"),
        "{out}"
    );
    // And the real modules pass against the full schemas too.
    let o = tfschema(&[Path::new("check")], &[("FLEET_TF_SCHEMA_DIR", &vendor)]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn the_trimmed_schemas_are_what_trim_makes_from_the_vendored_ones() {
    let Some(vendor) = vendor() else { return };
    let d = tempfile::tempdir().unwrap();
    let o = tfschema(
        &[
            Path::new("trim"),
            Path::new("--vendor"),
            &vendor,
            Path::new("--out"),
            d.path(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let mut made: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    made.sort();
    assert_eq!(made.len(), 3, "{made:?}");
    for name in made {
        let want = std::fs::read_to_string(d.path().join(&name)).unwrap();
        let have = std::fs::read_to_string(repo().join("terraform/schemas").join(&name))
            .unwrap_or_default();
        assert!(
            want == have,
            "terraform/schemas/{} is stale: run `python3 scripts/tfschema.py trim`",
            name.to_string_lossy()
        );
    }
}
