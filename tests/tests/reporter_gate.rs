//! `fleet-reporter summary` as CI runs it, on a `file://` bucket: a retired host
//! (tombstone manifest, agent reporting `retired`) is listed but not counted, the
//! exit code is 0 while no host fails the gate and 3 once one is refused, and
//! `--json` carries the gate, the retired and held hosts (with the reason) and
//! every row.

use std::process::Command;

use fleet_core::{HostName, Key, Manifest, SecretKey, StatusReport};

const CLOSURE: &str = "/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-nixos-system";

fn manifest(host: &str, seq: u64, activation: &str) -> Manifest {
    serde_json::from_value(serde_json::json!({
        "version": 1, "host": host, "sequence": seq,
        "closure": format!("{CLOSURE}-{seq}"),
        "issued_at": "2026-01-01T00:00:00Z", "expires_at": "2099-01-01T00:00:00Z",
        "cache_keys": [], "activation": activation,
    }))
    .unwrap()
}

fn status(host: &str, state: &str, seq: u64) -> Vec<u8> {
    let r: StatusReport = serde_json::from_value(serde_json::json!({
        "version": 1, "host": host, "agent_version": "0.1.0", "state": state,
        "desired": {"sequence": seq, "closure": format!("{CLOSURE}-{seq}")},
        "current": {"sequence": seq, "closure": format!("{CLOSURE}-{seq}")},
        "last_error": null, "facts": {}, "time": "2026-11-26T21:25:00Z",
    }))
    .unwrap();
    r.to_bytes()
}

fn summary(bucket: &str, key_file: &std::path::Path, json: bool) -> (i32, String) {
    let mut cmd = Command::new(fleet_tests::bin("fleet-reporter"));
    cmd.args(["summary", "--bucket", bucket, "--trusted-key-file"])
        .arg(key_file)
        .env("FLEET_LOG", "warn");
    if json {
        cmd.arg("--json");
    }
    let o = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    (o.status.code().unwrap(), text)
}

#[tokio::test]
async fn retired_hosts_are_apart_and_the_exit_code_gates_on_failing_hosts() {
    let d = tempfile::tempdir().unwrap();
    let url = format!("file://{}", d.path().join("bucket").display());
    std::fs::create_dir(d.path().join("bucket")).unwrap();
    let bucket = fleet_core::Bucket::open_url(&url).unwrap();
    let publisher = SecretKey::generate("publisher-1").unwrap();
    let key_file = d.path().join("publisher.public");
    publisher.public().write(&key_file).unwrap();
    let h = |s: &str| HostName::new(s).unwrap();
    let put = |k: Key, v: Vec<u8>| {
        let b = bucket.clone();
        async move { b.put(&k, v).await.unwrap() }
    };
    put(
        Key::manifest(&h("web-1")),
        manifest("web-1", 2, "switch").sign(&publisher),
    )
    .await;
    put(Key::status(&h("web-1")), status("web-1", "healthy", 2)).await;
    put(
        Key::manifest(&h("web-2")),
        manifest("web-2", 3, "retire").sign(&publisher),
    )
    .await;
    put(Key::status(&h("web-2")), status("web-2", "retired", 3)).await;

    let (code, text) = summary(&url, &key_file, false);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("1 host (+1 retired): 1 up-to-date;"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("web-2") && l.contains(" retired ")),
        "{text}"
    );

    put(Key::status(&h("web-1")), status("web-1", "refused", 2)).await;
    let hold = fleet_core::hold::Hold {
        version: 1,
        host: h("web-1"),
        held: true,
        reason: "kernel bug".into(),
        time: "2026-11-26T21:25:00Z".parse().unwrap(),
    };
    put(Key::hold(&h("web-1")), hold.sign(&publisher)).await;
    let (code, text) = summary(&url, &key_file, true);
    assert_eq!(code, 3, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["gate"]["ok"], false, "{v:#}");
    assert_eq!(v["gate"]["failing"][0]["host"], "web-1", "{v:#}");
    assert_eq!(v["gate"]["failing"][0]["state"], "refused", "{v:#}");
    assert_eq!(v["retired_hosts"], serde_json::json!(["web-2"]), "{v:#}");
    assert_eq!(v["held_hosts"][0]["host"], "web-1", "{v:#}");
    assert_eq!(v["held_hosts"][0]["hold"]["reason"], "kernel bug", "{v:#}");
    assert_eq!(v["rows"][0]["hold"]["signed_by"], "publisher-1", "{v:#}");
    assert_eq!(v["active_hosts"], 1, "{v:#}");
    assert_eq!(v["states"]["retired"], 1, "{v:#}");
    assert_eq!(v["rows"].as_array().unwrap().len(), 2, "{v:#}");
    assert_eq!(v["rows"][1]["state"], "retired", "{v:#}");
}
