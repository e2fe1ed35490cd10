//! Running a fleet over time, on `file://` buckets with real Nix:
//!
//! - `deploy` of a closure the local store lacks works from the bucket alone when
//!   its narinfos are complete and signed by a trusted cache key, and is refused
//!   (nothing written) when they are signed by another key;
//! - `renew` re-signs the manifests expiring within the window (same closure,
//!   higher sequence, audit `renew`), leaves the others, and an unknown host
//!   changes nothing;
//! - `rollback` goes back to the closure before the current one (skipping
//!   renewals) or to `--to-sequence N`, from the bucket alone; a sequence never
//!   written, a host without a manifest, or a target no longer complete in the cache
//!   is refused and changes nothing;
//! - a held host is skipped by deploy and rollback unless forced, renewed by renew,
//!   and a hold signed by an untrusted key stops a deploy;
//! - `deploy --dry-run` prints per host current -> new closure and what it would
//!   download (the new closure minus the current one), and writes nothing.

mod publish_support;

use fleet_core::nixcli::Nix as CoreNix;
use fleet_core::{Bucket, HostName, Key, KeyPrefix, TrustedKeys};
use fleet_publish::renew::{RenewSettings, renew};
use fleet_publish::rollback::{RollbackSettings, apply, plan};
use fleet_publish::{DeploySettings, DeployTarget, deploy};
use fleet_tests::nix::{Closure, FixtureOptions};
use jiff::SignedDuration;
use publish_support::*;

fn host(s: &str) -> HostName {
    HostName::new(s).unwrap()
}

fn generation(nix: &fleet_tests::nix::Nix, g: &str) -> Closure {
    nix.fixture_system("ops", g, &FixtureOptions::salted("publish-ops"))
        .unwrap()
}

fn settings_for(expires_in: SignedDuration) -> DeploySettings {
    DeploySettings {
        push: settings(),
        expires_in,
        ..DeploySettings::default()
    }
}

fn target(h: &str, c: &Closure) -> DeployTarget {
    DeployTarget {
        host: host(h),
        closure: c.top.clone(),
    }
}

/// A temporary directory with the cache key, the publisher key and a `file://`
/// bucket in it (and the bucket's URL).
fn setup() -> (tempfile::TempDir, KeyFiles, KeyFiles, Bucket, String) {
    let dir = tempfile::tempdir().unwrap();
    let cache = KeyFiles::new(dir.path(), "cache-pub-1");
    let publisher = KeyFiles::new(dir.path(), "publisher-1");
    let (bucket, url) = file_bucket(&dir.path().join("bucket"));
    (dir, cache, publisher, bucket, url)
}

/// Deploys from the default Nix store with the setup's keys; panics on failure.
async fn deploy_local(
    bucket: &Bucket,
    cache: &KeyFiles,
    publisher: &KeyFiles,
    targets: &[DeployTarget],
    settings: &DeploySettings,
) -> Vec<fleet_publish::DeployOutcome> {
    let nix = CoreNix::default_store();
    deploy(bucket, &nix, &cache.key, &publisher.key, targets, settings)
        .await
        .unwrap()
        .1
}

/// Every key under `hosts/` and `audit/`: what a refused command must leave alone.
async fn written(bucket: &Bucket) -> Vec<(String, u64)> {
    let mut all = Vec::new();
    for p in [KeyPrefix::hosts(), KeyPrefix::audit()] {
        for e in bucket.list(&p).await.unwrap() {
            all.push((e.key, e.size));
        }
    }
    all.sort();
    all
}

async fn current(bucket: &Bucket, h: &str, publisher: &KeyFiles) -> fleet_core::manifest::Manifest {
    fleet_publish::show(
        bucket,
        &host(h),
        &TrustedKeys::new([publisher.public_key()]),
    )
    .await
    .unwrap()
    .manifest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closure_missing_locally_deploys_from_the_bucket_when_signed() {
    let nix = nix();
    let g1 = generation(&nix, "bucket-1");
    let (dir, cache, publisher, bucket, _url) = setup();
    let other_cache = KeyFiles::new(dir.path(), "cache-pub-2");
    let settings = settings_for(SignedDuration::from_hours(24));
    deploy_local(
        &bucket,
        &cache,
        &publisher,
        &[target("web-1", &g1)],
        &settings,
    )
    .await;

    // A second, empty store: the publisher no longer has the build.
    let empty = CoreNix::with_store(dir.path().join("empty-store").display().to_string());
    let (summary, out) = deploy(
        &bucket,
        &empty,
        &cache.key,
        &publisher.key,
        &[target("web-2", &g1)],
        &settings,
    )
    .await
    .unwrap();
    assert_eq!(summary.closure_paths, 0, "nothing was pushed");
    assert_eq!((out[0].sequence, &out[0].closure), (1, &g1.top));
    assert_eq!(current(&bucket, "web-2", &publisher).await.closure, g1.top);

    // Signed by a cache key the deploy does not trust: refused, nothing written.
    let before = written(&bucket).await;
    let err = deploy(
        &bucket,
        &empty,
        &other_cache.key,
        &publisher.key,
        &[target("web-3", &g1)],
        &settings,
    )
    .await
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("not signed by a trusted cache key")
            && msg.contains("no manifest was written")
            && msg.contains(&g1.top.to_string()),
        "{msg}"
    );
    assert_eq!(written(&bucket).await, before);

    // With the old key as an extra cache key it goes through (cache key rotation).
    let rotated = DeploySettings {
        extra_cache_keys: vec![cache.public_key()],
        ..settings.clone()
    };
    let (_, out) = deploy(
        &bucket,
        &empty,
        &other_cache.key,
        &publisher.key,
        &[target("web-3", &g1)],
        &rotated,
    )
    .await
    .unwrap();
    assert_eq!(out[0].closure, g1.top);
    let m = current(&bucket, "web-3", &publisher).await;
    assert_eq!(
        m.cache_keys,
        vec![other_cache.public_key(), cache.public_key()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_resigns_what_expires_soon_and_nothing_else() {
    let nix = nix();
    let g1 = generation(&nix, "renew-1");
    let (_dir, cache, publisher, bucket, _url) = setup();
    let short = settings_for(SignedDuration::from_hours(1));
    let soon = [target("web-1", &g1), target("web-2", &g1)];
    deploy_local(&bucket, &cache, &publisher, &soon, &short).await;
    let long = settings_for(SignedDuration::from_hours(24 * 7));
    deploy_local(&bucket, &cache, &publisher, &[target("db-1", &g1)], &long).await;
    let before_web1 = current(&bucket, "web-1", &publisher).await;

    // An unknown host among the named ones: an error, and nothing renewed.
    let before = written(&bucket).await;
    let err = renew(
        &bucket,
        &publisher.key,
        &[host("web-1"), host("ghost")],
        &RenewSettings::default(),
    )
    .await
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("ghost has no manifest to renew"),
        "{err:#}"
    );
    assert_eq!(written(&bucket).await, before);

    let all = fleet_publish::manifest_write::manifest_hosts(&bucket)
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    let report = renew(&bucket, &publisher.key, &all, &RenewSettings::default())
        .await
        .unwrap();
    let renewed: Vec<&str> = report.renewed.iter().map(|o| o.host.as_str()).collect();
    assert_eq!(renewed, ["web-1", "web-2"]);
    assert_eq!(report.not_due.len(), 1);
    assert_eq!(report.not_due[0].0.as_str(), "db-1");
    assert!(report.failed.is_empty());
    let after = current(&bucket, "web-1", &publisher).await;
    assert_eq!(after.sequence, before_web1.sequence + 1);
    assert_eq!(after.closure, before_web1.closure);
    assert_eq!(after.activation, before_web1.activation);
    assert_eq!(after.cache_keys, before_web1.cache_keys);
    assert!(after.expires_at > before_web1.expires_at + SignedDuration::from_hours(24));
    let audit = audit_entries(&bucket).await;
    let renews: Vec<_> = audit.iter().filter(|e| e.action == "renew").collect();
    assert_eq!(renews.len(), 2);
    assert!(renews.iter().all(|e| e.closure == g1.top));

    // A second run right after has nothing to do.
    let report = renew(&bucket, &publisher.key, &all, &RenewSettings::default())
        .await
        .unwrap();
    assert!(report.renewed.is_empty());
    assert_eq!(report.not_due.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_goes_back_from_the_audit_history_and_refuses_bad_input() {
    let nix = nix();
    let g1 = generation(&nix, "rollback-1");
    let g2 = generation(&nix, "rollback-2");
    let (_dir, cache, publisher, bucket, _url) = setup();
    let s = settings_for(SignedDuration::from_hours(1));
    for g in [&g1, &g2] {
        deploy_local(&bucket, &cache, &publisher, &[target("web-1", g)], &s).await;
    }
    // A renewal of g2 (sequence 3) is not what "the one before" means.
    renew(
        &bucket,
        &publisher.key,
        &[host("web-1")],
        &RenewSettings::default(),
    )
    .await
    .unwrap();
    let web = [host("web-1")];

    // Bad input: nothing changes.
    let before = written(&bucket).await;
    let to_99 = RollbackSettings {
        to_sequence: Some(99),
        ..RollbackSettings::default()
    };
    let err = plan(&bucket, &publisher.key, &web, &to_99)
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("no earlier sequence 99") && msg.contains("audited sequences: 1, 2, 3"),
        "{msg}"
    );
    let err = plan(
        &bucket,
        &publisher.key,
        &[host("ghost")],
        &RollbackSettings::default(),
    )
    .await
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("ghost has no manifest"),
        "{err:#}"
    );
    assert_eq!(written(&bucket).await, before);

    let plans = plan(&bucket, &publisher.key, &web, &RollbackSettings::default())
        .await
        .unwrap();
    assert_eq!((plans[0].to_sequence, &plans[0].to_closure), (1, &g1.top));
    let out = apply(
        &bucket,
        &publisher.key,
        &plans,
        &RollbackSettings::default(),
    )
    .await
    .unwrap();
    assert_eq!((out[0].sequence, &out[0].closure), (4, &g1.top));
    let m = current(&bucket, "web-1", &publisher).await;
    assert_eq!((m.sequence, m.closure), (4, g1.top.clone()));
    let audit = audit_entries(&bucket).await;
    assert_eq!(audit.last().unwrap().action, "rollback");

    // --to-sequence 2 goes forward to g2 again.
    let to_2 = RollbackSettings {
        to_sequence: Some(2),
        ..RollbackSettings::default()
    };
    let plans = plan(&bucket, &publisher.key, &web, &to_2).await.unwrap();
    apply(&bucket, &publisher.key, &plans, &to_2).await.unwrap();
    assert_eq!(current(&bucket, "web-1", &publisher).await.closure, g2.top);

    // A target whose closure is no longer complete in the cache is refused.
    let only_g1 = g1.paths.iter().find(|p| !g2.paths.contains(p)).unwrap();
    bucket.delete(&Key::narinfo(only_g1.hash())).await.unwrap();
    let before = written(&bucket).await;
    let err = plan(&bucket, &publisher.key, &web, &RollbackSettings::default())
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("cannot be rolled back to") && msg.contains(&only_g1.to_string()),
        "{msg}"
    );
    assert_eq!(written(&bucket).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_hosts_are_skipped_unless_forced_and_still_renewed() {
    use fleet_publish::hold::{held, set_hold};
    let nix = nix();
    let g1 = generation(&nix, "hold-1");
    let g2 = generation(&nix, "hold-2");
    let (dir, cache, publisher, bucket, _url) = setup();
    let stranger = KeyFiles::new(dir.path(), "publisher-9");
    let s = settings_for(SignedDuration::from_hours(1));
    let both = |g: &Closure| [target("web-1", g), target("web-2", g)];
    deploy_local(&bucket, &cache, &publisher, &both(&g1), &s).await;

    // Bad input writes no hold.
    let err = set_hold(&bucket, &publisher.key, &[host("ghost")], true, "x")
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("ghost has no manifest"),
        "{err:#}"
    );
    let err = set_hold(&bucket, &publisher.key, &[host("web-1")], true, " ")
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("--reason"), "{err:#}");
    assert!(
        bucket
            .head(&Key::hold(&host("web-1")))
            .await
            .unwrap()
            .is_none()
    );

    set_hold(&bucket, &publisher.key, &[host("web-1")], true, "disk swap")
        .await
        .unwrap();
    let trusted = TrustedKeys::new([publisher.public_key()]);
    let holds = held(&bucket, &[host("web-1"), host("web-2")], &trusted)
        .await
        .unwrap();
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[&host("web-1")].hold.reason, "disk swap");
    let shown = fleet_publish::show(&bucket, &host("web-1"), &trusted)
        .await
        .unwrap();
    assert_eq!(shown.hold.unwrap().hold.reason, "disk swap");

    // deploy skips the held host, rollback too; renew renews it.
    let out = deploy_local(&bucket, &cache, &publisher, &both(&g2), &s).await;
    let deployed: Vec<&str> = out.iter().map(|o| o.host.as_str()).collect();
    assert_eq!(deployed, ["web-2"]);
    assert_eq!(current(&bucket, "web-1", &publisher).await.closure, g1.top);
    let err = plan(
        &bucket,
        &publisher.key,
        &[host("web-1")],
        &RollbackSettings::default(),
    )
    .await
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("every host given is held or retired (web-1: held, disk swap)"),
        "{err:#}"
    );
    let report = renew(
        &bucket,
        &publisher.key,
        &[host("web-1")],
        &RenewSettings::default(),
    )
    .await
    .unwrap();
    assert_eq!(report.renewed.len(), 1);

    // --force deploys it anyway.
    let forced = DeploySettings {
        force: true,
        ..s.clone()
    };
    deploy_local(
        &bucket,
        &cache,
        &publisher,
        &[target("web-1", &g2)],
        &forced,
    )
    .await;
    assert_eq!(current(&bucket, "web-1", &publisher).await.closure, g2.top);

    // Released: deployable again. A hold signed by an untrusted key stops a deploy.
    set_hold(&bucket, &publisher.key, &[host("web-1")], false, "")
        .await
        .unwrap();
    assert!(
        held(&bucket, &[host("web-1")], &trusted)
            .await
            .unwrap()
            .is_empty()
    );
    set_hold(&bucket, &stranger.key, &[host("web-2")], true, "forged")
        .await
        .unwrap();
    let err = deploy(
        &bucket,
        &CoreNix::default_store(),
        &cache.key,
        &publisher.key,
        &both(&g1),
        &s,
    )
    .await
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("not a hold signed by a trusted publisher key"),
        "{err:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_what_each_host_would_download_and_writes_nothing() {
    let nix = nix();
    let g1 = generation(&nix, "dry-1");
    let g2 = generation(&nix, "dry-2");
    let (dir, cache, publisher, bucket, url) = setup();
    let s = settings_for(SignedDuration::from_hours(1));
    deploy_local(&bucket, &cache, &publisher, &[target("web-1", &g1)], &s).await;
    let hosts = dir.path().join("hosts.json");
    let dry = |json: bool| {
        let mut cmd = publish_cmd();
        cmd.args(["deploy", "--dry-run", "--bucket", &url, "--hosts"])
            .arg(&hosts)
            .arg("--cache-key")
            .arg(&cache.secret)
            .arg("--signing-key")
            .arg(&publisher.secret);
        if json {
            cmd.arg("--json");
        }
        let (ok, stdout, stderr) = run(cmd);
        assert!(ok, "{stderr}");
        stdout
    };
    let new_only: Vec<_> = g2.paths.iter().filter(|p| !g1.paths.contains(p)).collect();
    let nar_of = |paths: &[&fleet_core::StorePath]| -> u64 {
        paths
            .iter()
            .map(|p| nix.dump(p).unwrap().len() as u64)
            .sum()
    };

    // g2 is only in the local store so far.
    std::fs::write(
        &hosts,
        serde_json::json!({"web-1": g2.top.to_string(), "web-2": g1.top.to_string()}).to_string(),
    )
    .unwrap();
    let before = written(&bucket).await;
    let v: serde_json::Value = serde_json::from_str(&dry(true)).unwrap();
    assert_eq!(written(&bucket).await, before, "a dry run writes nothing");
    let web1 = &v[0];
    assert_eq!(web1["host"], "web-1");
    assert_eq!(web1["current_sequence"], 1);
    assert_eq!(web1["current_closure"], g1.top.to_string());
    assert_eq!(web1["source"], "local store");
    assert_eq!(web1["closure_paths"], g2.paths.len());
    assert_eq!(web1["paths_to_download"], new_only.len());
    assert_eq!(web1["nar_bytes"], nar_of(&new_only));
    assert!(web1["download_bytes"].is_null());
    let web2 = &v[1];
    assert_eq!(web2["current_sequence"], serde_json::Value::Null);
    assert_eq!(web2["paths_to_download"], g1.paths.len());
    assert_eq!(web2["source"], "bucket");
    assert!(web2["download_bytes"].as_u64().unwrap() > 0);

    // Once g2 is pushed the bucket answers, with compressed sizes too.
    fleet_publish::push(
        &bucket,
        &CoreNix::default_store(),
        &cache.key,
        std::slice::from_ref(&g2.top),
        &settings(),
    )
    .await
    .unwrap();
    let text = dry(false);
    assert!(
        text.contains(&format!(
            "web-1: sequence 1 {} -> {}, {} of {} paths to download",
            g1.top,
            g2.top,
            new_only.len(),
            g2.paths.len()
        )) && text.contains("MiB compressed")
            && text.contains("from the bucket"),
        "{text}"
    );
    assert!(text.contains("web-2: no manifest ->"), "{text}");
}
