//! Keeps the Terraform policy templates one with `fleet_core::iam`:
//!
//! - the files committed under `terraform/modules/fleet-policies/policies/` are
//!   exactly what [`iam::terraform_template`] makes now;
//! - rendering a template the way Terraform's `templatefile` does (each `${name}`
//!   replaced by its value) gives exactly [`iam::policy`] / [`iam::public_cache_policy`]
//!   for the same values.
//!
//! After changing a policy in `core/src/iam.rs`, regenerate the files with
//! `FLEET_UPDATE_TEMPLATES=1 cargo test -p fleet-core --test iam_templates`.
//! (`tests/tests/infra.rs` renders the same files with Terraform itself.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use fleet_core::HostName;
use fleet_core::iam::{self, Role, TemplateKind};

const UPDATE_ENV: &str = "FLEET_UPDATE_TEMPLATES";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../terraform/modules/fleet-policies/policies")
}

/// `templatefile` for the subset fleet's templates use: `${name}` interpolations of
/// plain variables. Anything else (directives, escapes, unknown names) fails, so a
/// template that needs more than this cannot pass unnoticed.
fn render(template: &str, vars: &BTreeMap<&str, &str>) -> String {
    assert!(!template.contains("%{"), "template has a directive");
    assert!(
        !template.contains("$${"),
        "template has an escaped interpolation"
    );
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').expect("unterminated ${");
        let name = &after[..end];
        let value = vars
            .get(name)
            .unwrap_or_else(|| panic!("template uses ${{{name}}}, which has no value"));
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

fn placeholders(template: &str) -> BTreeSet<String> {
    template
        .split("${")
        .skip(1)
        .map(|s| s.split('}').next().unwrap().to_owned())
        .collect()
}

#[test]
fn committed_templates_match_the_code() {
    let update = std::env::var_os(UPDATE_ENV).is_some_and(|v| v == "1");
    let dir = dir();
    let mut stale = Vec::new();
    for kind in TemplateKind::ALL {
        let path = dir.join(kind.file_name());
        let want = iam::terraform_template(kind);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &want).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(have) if have == want => {}
            Ok(_) => stale.push(format!("{} differs", path.display())),
            Err(e) => stale.push(format!("{}: {e}", path.display())),
        }
    }
    // A template the code no longer makes must not linger either.
    let known: BTreeSet<&str> = TemplateKind::ALL.iter().map(|k| k.file_name()).collect();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !known.contains(name.as_str()) {
            stale.push(format!(
                "{} is not made by fleet_core::iam (remove it)",
                dir.join(&name).display()
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "the Terraform policy templates are out of date with core/src/iam.rs:\n  {}\n\
         regenerate them with `{UPDATE_ENV}=1 cargo test -p fleet-core --test iam_templates`",
        stale.join("\n  ")
    );
}

#[test]
fn templates_use_exactly_their_placeholders() {
    for kind in TemplateKind::ALL {
        let t = iam::terraform_template(kind);
        let want: BTreeSet<String> = kind.variables().iter().map(|v| v.to_string()).collect();
        assert_eq!(placeholders(&t), want, "{kind:?}");
        // Valid JSON as it stands (placeholders are inside strings), so a reader or
        // a linter sees a policy document.
        serde_json::from_str::<serde_json::Value>(&t).unwrap();
    }
}

#[test]
fn rendered_templates_equal_the_policies() {
    let cases = [
        ("fleet-prod", "", "web-1"),
        ("fleet-prod", "site-a", "a"),
        ("my.bucket-2", "/eu/site_b.1/", "edge-0042"),
        ("b-1", "x/y/z", &"h".repeat(63)),
    ];
    let mut checked = 0;
    for (bucket, prefix, host) in cases {
        let p = iam::normalize_prefix(prefix).unwrap();
        let vars = BTreeMap::from([("bucket", bucket), ("prefix", p.as_str()), ("host", host)]);
        for kind in TemplateKind::ALL {
            let rendered = render(&iam::terraform_template(kind), &vars);
            let want = match kind {
                TemplateKind::Agent => {
                    iam::policy(&Role::Agent(HostName::new(host).unwrap()), bucket, prefix)
                }
                TemplateKind::Publisher => iam::policy(&Role::Publisher, bucket, prefix),
                TemplateKind::Reporter => iam::policy(&Role::Reporter, bucket, prefix),
                TemplateKind::PublicCache => iam::public_cache_policy(bucket, prefix),
                TemplateKind::AuditCreateOnly => iam::audit_create_only_policy(bucket, prefix),
                TemplateKind::Admin => iam::policy(&Role::Admin, bucket, prefix),
                TemplateKind::Viewer => iam::policy(&Role::Viewer, bucket, prefix),
            }
            .unwrap();
            assert_eq!(
                rendered, want,
                "{kind:?} for {bucket:?} {prefix:?} {host:?}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, cases.len() * TemplateKind::ALL.len());
}

#[test]
fn the_renderer_refuses_what_it_cannot_do() {
    let vars = BTreeMap::from([("bucket", "b")]);
    assert_eq!(render("a ${bucket} c", &vars), "a b c");
    for bad in ["${prefix}", "%{ if true }x%{ endif }", "$${bucket}"] {
        let r = std::panic::catch_unwind(|| render(bad, &vars));
        assert!(r.is_err(), "{bad}");
    }
}
