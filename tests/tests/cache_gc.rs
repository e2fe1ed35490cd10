//! `fleet-publish gc` on SeaweedFS with scoped IAM users and real Nix:
//!
//! - it deletes exactly the narinfos and NARs no manifest or kept generation
//!   reaches, keeps the rollback target, needs two runs a grace period apart (the
//!   first condemns), and the publisher's credentials may not delete;
//! - a push racing a gc loses nothing: a push (or deploy) that starts after the
//!   condemnation uploads the condemned paths again, a push that listed before it
//!   finishes within the grace period, and real `nix copy --from` still gets every
//!   closure.

mod publish_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use fleet_core::cache_walk::walk_closure;
use fleet_core::iam::Role;
use fleet_core::nixcli::Nix as CoreNix;
use fleet_core::{Bucket, HostName, Key, KeyPrefix, NarInfo, TrustedKeys};
use fleet_publish::gc::{GcSettings, gc};
use fleet_publish::{DeploySettings, DeployTarget, deploy};
use fleet_tests::nix::{Closure, FixtureOptions};
use fleet_tests::s3::S3Server;
use jiff::SignedDuration;
use publish_support::*;

struct Fx {
    server: &'static S3Server,
    name: String,
    publisher: Bucket,
    admin_role: Bucket,
    cache: KeyFiles,
    signer: KeyFiles,
    _dir: tempfile::TempDir,
}

async fn fx(label: &str) -> Fx {
    let server = S3Server::seaweedfs().await.unwrap();
    let name = server.new_bucket(label).await.unwrap();
    let p = server.user_for(&Role::Publisher, &name, "").await.unwrap();
    let a = server.user_for(&Role::Admin, &name, "").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    Fx {
        publisher: server.bucket(&name, "", &p).unwrap(),
        admin_role: server.bucket(&name, "", &a).unwrap(),
        cache: KeyFiles::new(dir.path(), "cache-gc-1"),
        signer: KeyFiles::new(dir.path(), "publisher-1"),
        server,
        name,
        _dir: dir,
    }
}

impl Fx {
    async fn deploy(&self, host: &str, c: &Closure) -> fleet_publish::PushSummary {
        let settings = DeploySettings {
            push: settings(),
            ..DeploySettings::default()
        };
        let t = DeployTarget {
            host: HostName::new(host).unwrap(),
            closure: c.top.clone(),
        };
        deploy(
            &self.publisher,
            &CoreNix::default_store(),
            &self.cache.key,
            &self.signer.key,
            &[t],
            &settings,
        )
        .await
        .unwrap()
        .0
    }

    fn settings(&self, keep: usize, grace: SignedDuration, apply: bool) -> GcSettings {
        GcSettings {
            signing_key: Some(self.signer.key.clone()),
            trusted: TrustedKeys::new([self.signer.public_key()]),
            keep_generations: keep,
            grace,
            apply,
        }
    }

    async fn cache_keys(&self) -> BTreeSet<String> {
        let listed = self.admin_role.list(&KeyPrefix::cache()).await.unwrap();
        listed.into_iter().map(|e| e.key).collect()
    }

    /// The narinfo and NAR keys of the paths of `c` not in any of `others`.
    async fn only_in(&self, c: &Closure, others: &[&Closure]) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for p in &c.paths {
            if others.iter().any(|o| o.paths.contains(p)) {
                continue;
            }
            let key = Key::narinfo(p.hash());
            let bytes = self.admin_role.get(&key, 1 << 20).await.unwrap().bytes;
            let ni = NarInfo::parse(&bytes, key.as_str()).unwrap();
            out.insert(key.to_string());
            out.insert(Key::nar(&ni.url).unwrap().to_string());
        }
        out
    }

    /// Real `nix copy --from http://…/cache` of `c`, trusting only our cache key.
    async fn nix_copies(&self, c: &Closure) {
        let policy = fleet_core::iam::public_cache_policy(&self.name, "").unwrap();
        self.server
            .put_bucket_policy(&self.name, &policy)
            .await
            .unwrap();
        let http = format!("{}/{}/cache", self.server.endpoint(), self.name);
        copy_and_verify(&nix(), &http, c, &self.cache.nix_public());
    }
}

fn generation(g: &str) -> Closure {
    nix()
        .fixture_system("gc", g, &FixtureOptions::salted("cache-gc"))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_deletes_exactly_the_unreachable_and_keeps_rollback_targets() {
    let (g1, g2, g3) = (generation("1"), generation("2"), generation("3"));
    let f = fx("gc-exact").await;
    for g in [&g1, &g2, &g3] {
        f.deploy("web-1", g).await;
    }
    let garbage = f.only_in(&g1, &[&g2, &g3]).await;
    assert!(!garbage.is_empty(), "g1 has paths of its own");
    let all = f.cache_keys().await;
    let zero = SignedDuration::ZERO;

    // A dry run reports and changes nothing.
    let dry = gc(&f.admin_role, &f.settings(2, zero, false))
        .await
        .unwrap();
    assert_eq!(dry.unreachable.objects, garbage.len());
    assert_eq!(dry.freed.objects, 0, "nothing was condemned yet");
    assert_eq!(dry.roots["manifests"], 1);
    assert_eq!(f.cache_keys().await, all);

    // Objects younger than the grace period are never even condemned.
    let young = gc(
        &f.admin_role,
        &f.settings(2, SignedDuration::from_hours(1), true),
    )
    .await
    .unwrap();
    assert_eq!((young.unreachable.objects, young.freed.objects), (0, 0));

    // The first run condemns, the second deletes; the publisher may not.
    let first = gc(&f.admin_role, &f.settings(2, zero, true)).await.unwrap();
    assert_eq!(
        (first.freed.objects, first.condemned.objects),
        (0, garbage.len())
    );
    let err = gc(&f.publisher, &f.settings(2, zero, true))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("admin role"), "{err:#}");
    let second = gc(&f.admin_role, &f.settings(2, zero, true)).await.unwrap();
    let freed: BTreeSet<String> = second.freed_keys.iter().cloned().collect();
    assert_eq!(freed, garbage);
    assert_eq!(second.freed.objects, garbage.len());
    let left = f.cache_keys().await;
    let expected: BTreeSet<String> = all.difference(&garbage).cloned().collect();
    assert_eq!(left, expected, "exactly the unreachable objects went");

    // The current closure and the rollback target are complete and signed.
    let trusted = TrustedKeys::new([f.cache.public_key()]);
    for g in [&g2, &g3] {
        walk_closure(&f.admin_role, &g.top, &trusted).await.unwrap();
    }
    f.nix_copies(&g2).await;
    // Nothing more to do.
    let again = gc(&f.admin_role, &f.settings(2, zero, true)).await.unwrap();
    assert_eq!((again.unreachable.objects, again.freed.objects), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_racing_a_gc_loses_nothing() {
    let (g0, g1, g3, gx, g2) = (
        generation("r0"),
        generation("r1"),
        generation("r3"),
        generation("rx"),
        generation("r2"),
    );
    let f = fx("gc-race").await;
    for g in [&g0, &g1, &g3, &gx, &g2] {
        f.deploy("web-1", g).await;
    }
    let garbage = f.only_in(&gx, &[&g0, &g1, &g3, &g2]).await;
    let grace = SignedDuration::from_secs(20);
    // Wait until everything is older than the grace period, then condemn.
    tokio::time::sleep(Duration::from_secs(21)).await;
    let first = gc(&f.admin_role, &f.settings(1, grace, true))
        .await
        .unwrap();
    let condemned_at = Instant::now();
    assert!(
        first.condemned.objects > garbage.len(),
        "g0, g1, g3 and gx are condemned"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A push starting now finds g1 condemned and uploads it again; so does a deploy
    // of g3 (its check after the push included).
    let pushed = push_top(&f.publisher, &f.cache.key, &g1.top, &settings())
        .await
        .unwrap();
    let condemned_g1 = g1.paths.iter().filter(|p| !g2.paths.contains(p)).count();
    assert_eq!(pushed.uploaded, condemned_g1, "{pushed}");
    let pushed = f.deploy("web-2", &g3).await;
    let condemned_g3 = g3.paths.iter().filter(|p| !g2.paths.contains(p)).count();
    assert_eq!(pushed.uploaded, condemned_g3, "{pushed}");
    // A push that listed before the condemnation skipped g0's paths and only now
    // writes its top narinfo.
    let top = Key::narinfo(g0.top.hash());
    let bytes = f.publisher.get(&top, 1 << 20).await.unwrap().bytes;
    f.publisher.put(&top, bytes).await.unwrap();

    let ripe = Duration::from_secs(21).saturating_sub(condemned_at.elapsed());
    tokio::time::sleep(ripe).await;
    let second = gc(&f.admin_role, &f.settings(1, grace, true))
        .await
        .unwrap();
    let freed: BTreeSet<String> = second.freed_keys.iter().cloned().collect();
    assert_eq!(freed, garbage, "only gx's own paths went");
    for g in [&g0, &g1, &g3, &g2] {
        f.nix_copies(g).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_refuses_what_it_cannot_verify_and_changes_nothing() {
    let g1 = generation("bad-1");
    let dir = tempfile::tempdir().unwrap();
    let (bucket, url) = file_bucket(&dir.path().join("bucket"));
    let cache = KeyFiles::new(dir.path(), "cache-gc-1");
    let signer = KeyFiles::new(dir.path(), "publisher-1");
    let stranger = KeyFiles::new(dir.path(), "publisher-9");
    let settings = DeploySettings {
        push: settings(),
        ..DeploySettings::default()
    };
    let t = DeployTarget {
        host: HostName::new("web-1").unwrap(),
        closure: g1.top.clone(),
    };
    deploy(
        &bucket,
        &CoreNix::default_store(),
        &cache.key,
        &signer.key,
        &[t],
        &settings,
    )
    .await
    .unwrap();
    let cache_keys = || async {
        let listed = bucket.list(&KeyPrefix::cache()).await.unwrap();
        listed.into_iter().map(|e| e.key).collect::<Vec<_>>()
    };
    let before = cache_keys().await;

    // A manifest that does not verify with the keys given: its closure is unknown.
    let wrong = GcSettings {
        signing_key: None,
        trusted: TrustedKeys::new([stranger.public_key()]),
        keep_generations: 1,
        grace: SignedDuration::ZERO,
        apply: true,
    };
    let err = format!("{:#}", gc(&bucket, &wrong).await.unwrap_err());
    assert!(
        err.contains("nothing was deleted") && err.contains("does not verify"),
        "{err}"
    );
    // No publisher key at all, and a bad grace: clear errors from the command.
    let mut no_key = publish_cmd();
    no_key.args(["gc", "--bucket", &url, "--apply"]);
    let mut bad_grace = publish_cmd();
    bad_grace
        .args([
            "gc",
            "--bucket",
            &url,
            "--grace",
            "soon",
            "--trusted-key-file",
        ])
        .arg(&signer.public);
    for (cmd, want) in [
        (no_key, "no trusted-key given"),
        (bad_grace, "grace = \"soon\""),
    ] {
        let (ok, _, stderr) = run(cmd);
        assert!(!ok && stderr.contains(want), "{stderr}");
    }
    assert_eq!(
        before,
        cache_keys().await,
        "nothing was condemned or deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_keeps_its_closures_until_it_is_deleted() {
    let (g1, g2, g3, g4) = (
        generation("rel1"),
        generation("rel2"),
        generation("rel3"),
        generation("rel4"),
    );
    let f = fx("gc-release").await;
    for g in [&g1, &g2, &g3, &g4] {
        f.deploy("web-1", g).await;
    }
    // A release that names g1, signed and stored as `fleet-publish release` does;
    // with one generation kept, only the release holds g1 now.
    let release = fleet_core::release::Release {
        version: 1,
        id: "r-1".into(),
        created_at: jiff::Timestamp::now(),
        cache_keys: vec![f.cache.public_key()],
        hosts: [(
            HostName::new("web-1").unwrap(),
            fleet_core::release::ReleaseHost {
                closure: g1.top.clone(),
                activation: fleet_core::Activation::Switch,
            },
        )]
        .into(),
        plan: serde_json::from_value(serde_json::json!({
            "waves": [{"select": {"percent": 100}, "hosts": ["web-1"], "soak_seconds": 0,
                       "budget": {"hosts": 0}}],
            "budget": {"hosts": 0},
            "report_deadline_seconds": 60
        }))
        .unwrap(),
    };
    let id = fleet_core::ObjectName::new("r-1").unwrap();
    f.publisher
        .put(&Key::release(&id), release.sign(&f.signer.key))
        .await
        .unwrap();
    let only_g1 = f.only_in(&g1, &[&g2, &g3, &g4]).await;
    assert!(!only_g1.is_empty());
    let zero = SignedDuration::ZERO;
    let all = f.cache_keys().await;
    for _ in 0..2 {
        let r = gc(&f.admin_role, &f.settings(1, zero, true)).await.unwrap();
        assert_eq!(r.roots["releases"], 1);
    }
    let left = f.cache_keys().await;
    assert!(
        only_g1.is_subset(&left),
        "the release's closure stays: {:?}",
        only_g1.difference(&left).collect::<Vec<_>>()
    );
    assert!(left.len() < all.len(), "g2 and g3 went");
    walk_closure(
        &f.admin_role,
        &g1.top,
        &TrustedKeys::new([f.cache.public_key()]),
    )
    .await
    .unwrap();

    // Deleting the release (admin) lets its closure go.
    f.admin_role.delete(&Key::release(&id)).await.unwrap();
    for _ in 0..2 {
        gc(&f.admin_role, &f.settings(1, zero, true)).await.unwrap();
    }
    let gone = f.cache_keys().await;
    assert!(only_g1.is_disjoint(&gone), "{gone:?}");
}
