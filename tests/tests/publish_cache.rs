//! `fleet-publish push` against real Nix, on `file://` buckets:
//!
//! - real `nix copy --from file://…` accepts what push wrote (zstd, xz, none), the
//!   copied trees equal the sources, `nix store verify --sigs-needed 1` passes, and
//!   a cache signed by another key is refused;
//! - every NAR file decompresses to exactly `nix-store --dump` of its path, and every
//!   narinfo field matches what Nix registered;
//! - a no-op republish touches nothing; a push killed half-way leaves only complete
//!   narinfos (NAR first, references first) and a rerun finishes without re-uploading;
//! - bad input (not a store path, not in the store, unreadable keys, unreachable
//!   bucket, a corrupted store path) fails with errors that name what and where.
//!
//! The proofs against SeaweedFS (scoped credentials, HTTP) are in `publish_s3.rs`.

mod publish_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use fleet_core::narinfo::{Compression, NarInfo, Sha256Hash};
use fleet_core::{Bucket, Key, StorePath, TrustedKeys};
use fleet_publish::PushSettings;
use fleet_tests::nix::{BulkOptions, Closure, FixtureOptions};
use publish_support::*;
use sha2::{Digest, Sha256};

fn system(nix: &fleet_tests::nix::Nix, salt: &str) -> Closure {
    let c = nix
        .fixture_system("pub", "1", &FixtureOptions::salted(salt))
        .unwrap();
    assert!(c.paths.len() >= 3, "{:?}", c.paths);
    c
}

/// Every narinfo under `root/cache` with its modification time.
fn narinfos(root: &Path) -> BTreeMap<String, SystemTime> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(root.join("cache")) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".narinfo") {
            out.insert(name, e.metadata().unwrap().modified().unwrap());
        }
    }
    out
}

/// The cache's invariants: every narinfo parses, is signed by `trusted`, its NAR
/// exists with the size it states, and every reference has a narinfo too.
async fn check_cache_invariants(bucket: &Bucket, root: &Path, trusted: &TrustedKeys) {
    let present: BTreeSet<String> = narinfos(root).into_keys().collect();
    for name in &present {
        let key = format!("cache/{name}");
        let text = std::fs::read(root.join(&key)).unwrap();
        let ni = NarInfo::parse(&text, &key).unwrap();
        ni.verify(trusted, &key).unwrap();
        let nar = bucket
            .head(&Key::nar(&ni.url).unwrap())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{key} is there but its NAR {} is not", ni.url));
        assert_eq!(Some(nar.size), ni.file_size, "{key}");
        for r in &ni.references {
            assert!(
                present.contains(&format!("{}.narinfo", r.hash())),
                "{key} is there but its reference {r} has no narinfo"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_nix_copies_what_push_wrote_in_every_compression() {
    let nix = nix();
    let closure = system(&nix, "publish-copy");
    let dir = tempfile::tempdir().unwrap();
    let cache = KeyFiles::new(dir.path(), "cache-pub-1");
    let other = KeyFiles::new(dir.path(), "cache-other-1");
    for compression in [Compression::Zstd, Compression::Xz, Compression::None] {
        let root = dir.path().join(format!("bucket-{compression}"));
        let (bucket, _) = file_bucket(&root);
        let s = PushSettings {
            compression,
            ..settings()
        };
        let sum = push_top(&bucket, &cache.key, &closure.top, &s)
            .await
            .unwrap();
        assert_eq!(
            (sum.closure_paths, sum.uploaded, sum.skipped),
            (closure.paths.len(), closure.paths.len(), 0)
        );
        for p in &closure.paths {
            let text = std::fs::read(root.join(format!("cache/{}.narinfo", p.hash()))).unwrap();
            let ni = NarInfo::parse(&text, "t").unwrap();
            assert_eq!(ni.compression, compression);
            assert!(
                ni.url
                    .ends_with(&format!(".nar{}", compression.extension())),
                "{}",
                ni.url
            );
        }
        let url = format!("file://{}/cache", root.display());
        copy_and_verify(&nix, &url, &closure, &cache.nix_public());
        copy_is_refused(&nix, &url, &closure.top, &other.nix_public());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nar_files_are_nix_store_dump_and_narinfos_match_nix() {
    let nix = nix();
    let closure = system(&nix, "publish-bytes");
    let dir = tempfile::tempdir().unwrap();
    let cache = KeyFiles::new(dir.path(), "cache-pub-1");
    let root = dir.path().join("bucket");
    let (bucket, _) = file_bucket(&root);
    push_top(&bucket, &cache.key, &closure.top, &settings())
        .await
        .unwrap();

    let trusted = TrustedKeys::new([cache.public_key()]);
    let infos = nix.path_info_json(None, &closure.paths).unwrap();
    for (p, info) in closure.paths.iter().zip(infos.as_array().unwrap()) {
        assert_eq!(info["path"].as_str(), Some(p.to_string().as_str()));
        let key = Key::narinfo(p.hash());
        let text = bucket.get(&key, 1 << 20).await.unwrap().bytes;
        let ni = NarInfo::parse(&text, key.as_str()).unwrap();
        ni.verify(&trusted, key.as_str()).unwrap();
        assert_eq!(&ni.store_path, p);

        // The NAR file: FileHash and FileSize describe its bytes, and it decompresses
        // to exactly what `nix-store --dump` prints.
        let file = bucket
            .get(&Key::nar(&ni.url).unwrap(), 1 << 30)
            .await
            .unwrap()
            .bytes;
        let digest: [u8; 32] = Sha256::digest(&file).into();
        assert_eq!(ni.file_hash, Some(Sha256Hash(digest)), "{p}");
        assert_eq!(ni.file_size, Some(file.len() as u64), "{p}");
        let mut nar = Vec::new();
        fleet_core::stream::decoder(ni.compression, &file[..])
            .unwrap()
            .read_to_end(&mut nar)
            .unwrap();
        let dumped = nix.dump(p).unwrap();
        assert!(nar == dumped, "{p}: NAR differs from nix-store --dump");

        // The signed fields are what Nix registered.
        let nar_hash = Sha256Hash::parse(info["narHash"].as_str().unwrap()).unwrap();
        assert_eq!(ni.nar_hash, nar_hash, "{p}");
        assert_eq!(Some(ni.nar_size), info["narSize"].as_u64(), "{p}");
        let mut refs: Vec<String> = info["references"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect();
        refs.sort();
        let ours: Vec<String> = ni.references.iter().map(|r| r.to_string()).collect();
        assert_eq!(ours, refs, "{p}");
        let deriver = info["deriver"]
            .as_str()
            .map(|d| StorePath::new(d).unwrap().base_name());
        assert_eq!(ni.deriver, deriver, "{p}");
    }
    assert_eq!(
        std::fs::read_to_string(root.join("cache/nix-cache-info")).unwrap(),
        fleet_core::narinfo::nix_cache_info()
    );
}

/// Both of fleet's NAR serialisers (the streaming `dump` and `dump_to_vec`, which
/// `push` uses for NARs it packs in memory) write exactly what `nix-store --dump`
/// prints, for real store paths holding every kind of node: files, executables,
/// empty files, nested and empty directories, relative and absolute symlinks.
#[test]
fn both_nar_serialisers_match_nix_store_dump_on_real_store_paths() {
    let nix = nix();
    let closure = system(&nix, "publish-dump");
    for p in &closure.paths {
        let want = nix.dump(p).unwrap();
        let path = PathBuf::from(p.to_string());
        let mut streamed = Vec::new();
        fleet_core::nar::dump(&path, &mut streamed).unwrap();
        assert!(
            streamed == want,
            "{p}: nar::dump differs from nix-store --dump"
        );
        // Into a vector that already holds something and has spare room, capped
        // at exactly the NAR's size.
        let mut whole = b"previous".to_vec();
        whole.reserve(1 << 16);
        fleet_core::nar::dump_to_vec(&path, &mut whole, (8 + want.len()) as u64).unwrap();
        assert!(
            whole[8..] == want[..],
            "{p}: nar::dump_to_vec differs from nix-store --dump"
        );
        let err = fleet_core::nar::dump_to_vec(&path, &mut Vec::new(), want.len() as u64 - 1)
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{p}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noop_republish_touches_nothing_and_shared_paths_go_once() {
    let nix = nix();
    let g1 = system(&nix, "publish-noop");
    let g2 = nix
        .fixture_system("pub", "2", &FixtureOptions::salted("publish-noop"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = KeyFiles::new(dir.path(), "cache-pub-1");
    let root = dir.path().join("bucket");
    let (bucket, _) = file_bucket(&root);
    push_top(&bucket, &cache.key, &g1.top, &settings())
        .await
        .unwrap();
    let before = narinfos(&root);
    let again = push_top(&bucket, &cache.key, &g1.top, &settings())
        .await
        .unwrap();
    assert_eq!(
        (again.uploaded, again.skipped, again.file_bytes),
        (0, g1.paths.len(), 0)
    );
    assert_eq!(
        narinfos(&root),
        before,
        "a no-op republish rewrote narinfos"
    );

    // The next generation shares 3 paths: only the others are uploaded.
    let shared = g2.paths.iter().filter(|p| g1.paths.contains(p)).count();
    assert_eq!(shared, 3);
    let next = push_top(&bucket, &cache.key, &g2.top, &settings())
        .await
        .unwrap();
    assert_eq!(
        (next.uploaded, next.skipped),
        (g2.paths.len() - shared, shared)
    );
    check_cache_invariants(&bucket, &root, &TrustedKeys::new([cache.public_key()])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_push_leaves_a_consistent_cache_and_a_rerun_resumes() {
    let nix = nix();
    let closure = nix
        .bulk_closure(
            BulkOptions {
                n_paths: 31,
                total_bytes: 30 * 1_500_000,
            },
            "publish-resume",
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = KeyFiles::new(dir.path(), "cache-pub-1");
    let root = dir.path().join("bucket");
    let (bucket, url) = file_bucket(&root);

    // Kill the binary (SIGKILL) as soon as the first narinfo appears.
    let mut cmd = publish_cmd();
    cmd.args(["push", "--bucket", &url, "--jobs", "1", "--cache-key"])
        .arg(&cache.secret)
        .arg(closure.top.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while narinfos(&root).is_empty() {
        assert!(Instant::now() < deadline, "push wrote no narinfo in 60 s");
        if let Some(st) = child.try_wait().unwrap() {
            panic!("push ended ({st}) before it wrote a narinfo");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = narinfos(&root);
    assert!(
        before.len() < closure.paths.len(),
        "the push finished before it could be interrupted; use a bigger closure"
    );
    let trusted = TrustedKeys::new([cache.public_key()]);
    check_cache_invariants(&bucket, &root, &trusted).await;

    // The rerun skips every path whose narinfo made it and leaves those untouched.
    let sum = push_top(&bucket, &cache.key, &closure.top, &settings())
        .await
        .unwrap();
    assert_eq!(sum.skipped, before.len(), "{sum:?}");
    assert_eq!(sum.uploaded, closure.paths.len() - before.len(), "{sum:?}");
    let after = narinfos(&root);
    for (name, mtime) in &before {
        assert_eq!(
            after.get(name),
            Some(mtime),
            "{name} was rewritten by the rerun"
        );
    }
    check_cache_invariants(&bucket, &root, &trusted).await;
    copy_and_verify(
        &nix,
        &format!("file://{}/cache", root.display()),
        &closure,
        &cache.nix_public(),
    );

    // A NAR that made it without its narinfo (killed between the two) is not sent again.
    let leaf = closure.paths.iter().find(|p| **p != closure.top).unwrap();
    std::fs::remove_file(root.join(format!("cache/{}.narinfo", leaf.hash()))).unwrap();
    let sum = push_top(&bucket, &cache.key, &closure.top, &settings())
        .await
        .unwrap();
    assert_eq!(
        (sum.uploaded, sum.nars_reused, sum.file_bytes),
        (1, 1, 0),
        "{sum:?}"
    );
    check_cache_invariants(&bucket, &root, &trusted).await;
}

/// Restores a store file's bytes and mtime when dropped.
struct Restore {
    path: PathBuf,
    bytes: Vec<u8>,
    mtime: SystemTime,
}

impl Drop for Restore {
    fn drop(&mut self) {
        std::fs::write(&self.path, &self.bytes).unwrap();
        let f = std::fs::File::options()
            .write(true)
            .open(&self.path)
            .unwrap();
        f.set_modified(self.mtime).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_store_path_is_refused_and_nothing_of_it_uploaded() {
    let nix = nix();
    // A closure no other test uses: its data file is altered for the test's duration.
    let closure = nix
        .bulk_closure(
            BulkOptions {
                n_paths: 2,
                total_bytes: 4096,
            },
            "publish-corrupt",
        )
        .unwrap();
    let victim = closure.paths.iter().find(|p| **p != closure.top).unwrap();
    let file = PathBuf::from(victim.to_string()).join("data");
    let guard = Restore {
        bytes: std::fs::read(&file).unwrap(),
        mtime: std::fs::metadata(&file).unwrap().modified().unwrap(),
        path: file.clone(),
    };
    let original = guard.bytes.clone();
    let mut flipped = original.clone();
    flipped[0] ^= 0xff;
    std::fs::write(&file, &flipped).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cache = KeyFiles::new(dir.path(), "cache-pub-1");
    let root = dir.path().join("bucket");
    let (bucket, _) = file_bucket(&root);
    let err = push_top(&bucket, &cache.key, &closure.top, &settings())
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    drop(guard);
    assert!(
        msg.contains(&victim.to_string()) && msg.contains("does not match what the Nix database"),
        "{msg}"
    );
    let names = narinfos(&root);
    assert!(!names.contains_key(&format!("{}.narinfo", victim.hash())));
    // Its dependent (the top) must not have a narinfo either.
    assert!(!names.contains_key(&format!("{}.narinfo", closure.top.hash())));
    assert!(
        std::fs::read(&file).unwrap() == original,
        "the store file was not restored"
    );
}

#[test]
fn bad_input_fails_with_errors_that_name_what_and_where() {
    let nix = nix();
    let closure = system(&nix, "publish-bad");
    let dir = tempfile::tempdir().unwrap();
    let cache = KeyFiles::new(dir.path(), "cache-pub-1");
    let url = format!("file://{}", dir.path().join("bucket").display());
    let top = closure.top.to_string();
    let missing_path = format!("/nix/store/{}-not-built", closure.top.hash());
    let garbage = dir.path().join("garbage.secret");
    std::fs::write(&garbage, "this is not a key").unwrap();
    let secret = cache.secret.to_str().unwrap().to_owned();
    let public = cache.public.to_str().unwrap().to_owned();
    let nokey = dir.path().join("nope.secret");
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--bucket", &url, "--cache-key", &secret, &missing_path],
            vec![&missing_path, "not a valid path in the local Nix store"],
        ),
        (
            vec!["--bucket", &url, "--cache-key", &secret, "/etc/passwd"],
            vec!["/etc/passwd", "not a store path"],
        ),
        (
            vec![
                "--bucket",
                &url,
                "--cache-key",
                nokey.to_str().unwrap(),
                &top,
            ],
            vec!["cache key", "nope.secret"],
        ),
        (
            vec![
                "--bucket",
                &url,
                "--cache-key",
                garbage.to_str().unwrap(),
                &top,
            ],
            vec!["garbage.secret", "not a valid secret key"],
        ),
        (
            vec!["--bucket", &url, "--cache-key", &public, &top],
            vec!["cache-pub-1.public", "public key"],
        ),
        (
            vec![
                "--bucket",
                "s3://fleet-test?endpoint=http://127.0.0.1:1",
                "--cache-key",
                &secret,
                &top,
            ],
            vec!["cannot reach", "127.0.0.1:1", "cache/"],
        ),
        (
            vec!["--cache-key", &secret, &top],
            vec!["no bucket given", "FLEET_BUCKET"],
        ),
        (
            vec!["--bucket", "bucket", "--cache-key", &secret, &top],
            vec!["bucket URL \"bucket\""],
        ),
    ];
    for (args, wants) in cases {
        let mut cmd = publish_cmd();
        // Credentials of the right shape, so an S3 failure is about reaching the server.
        cmd.env("AWS_ACCESS_KEY_ID", "AKIATEST")
            .env("AWS_SECRET_ACCESS_KEY", "test-secret")
            .arg("push")
            .args(&args);
        let (ok, _, stderr) = run(cmd);
        assert!(!ok, "{args:?} succeeded");
        for w in wants {
            assert!(stderr.contains(w), "{args:?}: {w:?} not in {stderr}");
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // Nothing was written for the failed runs against the file bucket.
    assert!(narinfos(&dir.path().join("bucket")).is_empty());
}

/// The push pledges the NarSize Nix registered to zstd; a store path whose size no
/// longer matches makes that pack fail, and the push must still refuse it with the
/// same message naming the path and both sizes, not a codec error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_path_that_changed_size_is_refused_with_both_sizes() {
    let nix = nix();
    // A closure no other test uses: its data file grows for the test's duration.
    let closure = nix
        .bulk_closure(
            BulkOptions {
                n_paths: 2,
                total_bytes: 4096,
            },
            "publish-resized",
        )
        .unwrap();
    let victim = closure.paths.iter().find(|p| **p != closure.top).unwrap();
    let file = PathBuf::from(victim.to_string()).join("data");
    let guard = Restore {
        bytes: std::fs::read(&file).unwrap(),
        mtime: std::fs::metadata(&file).unwrap().modified().unwrap(),
        path: file.clone(),
    };
    let registered = nix
        .path_info_json(None, std::slice::from_ref(victim))
        .unwrap()[0]["narSize"]
        .as_u64()
        .unwrap();
    let mut grown = guard.bytes.clone();
    grown.extend_from_slice(&[0u8; 8]);
    std::fs::write(&file, &grown).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cache = KeyFiles::new(dir.path(), "cache-pub-1");
    let root = dir.path().join("bucket");
    let (bucket, _) = file_bucket(&root);
    let err = push_top(&bucket, &cache.key, &closure.top, &settings())
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    drop(guard);
    assert!(
        msg.contains(&victim.to_string())
            && msg.contains("does not match what the Nix database")
            && msg.contains(&format!("({} bytes)", registered + 8))
            && msg.contains(&format!("({registered} bytes)")),
        "{msg}"
    );
    let names = narinfos(&root);
    assert!(!names.contains_key(&format!("{}.narinfo", victim.hash())));
    assert!(!names.contains_key(&format!("{}.narinfo", closure.top.hash())));
}
