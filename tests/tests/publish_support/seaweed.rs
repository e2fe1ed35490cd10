//! The two S3 admin calls the `publish_s3` tests need beyond `fleet_tests::s3`
//! (which makes servers, buckets and per-role users): a bucket policy (anonymous
//! read of `cache/*`, so plain `nix` can read the cache over HTTP) and a user with a
//! policy that is not one of fleet's roles (read-only on the cache). Both are
//! ordinary S3/IAM calls made with boto3, like the harness's own
//! `tests/harness/s3_admin.py`; if that script grows `put-bucket-policy` and a
//! custom-policy user, this module can go.
//!
//! Python is found as the harness finds it: `$FLEET_PYTHON`, else the repository's
//! `.venv/bin/python`, else `python3` on `PATH`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use fleet_core::S3Credentials;
use fleet_tests::s3::S3Server;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FLEET_PYTHON") {
        return p.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

const ADMIN_PY: &str = r#"
import sys, json, boto3
req = json.load(sys.stdin)
kw = dict(endpoint_url=req["endpoint"], aws_access_key_id=req["key"],
          aws_secret_access_key=req["secret"], region_name="us-east-1")
out = {}
if req["op"] == "bucket-policy":
    boto3.client("s3", **kw).put_bucket_policy(Bucket=req["bucket"], Policy=req["policy"])
elif req["op"] == "user":
    iam = boto3.client("iam", **kw)
    iam.create_user(UserName=req["user"])
    iam.put_user_policy(UserName=req["user"], PolicyName="fleet", PolicyDocument=req["policy"])
    k = iam.create_access_key(UserName=req["user"])["AccessKey"]
    out = {"key": k["AccessKeyId"], "secret": k["SecretAccessKey"]}
json.dump(out, sys.stdout)
"#;

fn call(server: &S3Server, mut req: serde_json::Value) -> serde_json::Value {
    let admin = server.admin_credentials();
    req["endpoint"] = server.endpoint().into();
    req["key"] = admin.access_key_id.into();
    req["secret"] = admin.secret_access_key.into();
    let mut child = Command::new(python())
        .args(["-c", ADMIN_PY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run Python with boto3 ({e}); run scripts/deps.sh"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(req.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "S3 admin call {} failed: {}",
        req["op"],
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Sets `bucket`'s bucket policy (JSON text).
pub fn put_bucket_policy(server: &S3Server, bucket: &str, policy: &str) {
    call(
        server,
        serde_json::json!({"op": "bucket-policy", "bucket": bucket, "policy": policy}),
    );
}

/// Creates user `user` with `policy` (JSON text) inline; returns its access key.
pub fn user_with_policy(server: &S3Server, user: &str, policy: &str) -> S3Credentials {
    let out = call(
        server,
        serde_json::json!({"op": "user", "user": user, "policy": policy}),
    );
    S3Credentials {
        access_key_id: out["key"].as_str().unwrap().to_owned(),
        secret_access_key: out["secret"].as_str().unwrap().to_owned(),
        session_token: None,
    }
}
