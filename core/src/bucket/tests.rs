//! Tests of the bucket over memory and `file://` stores.

use super::list::{in_range, range_passed};
use super::*;
use crate::host::HostName;
use crate::layout::KeyPrefix;

fn host(s: &str) -> HostName {
    HostName::new(s).unwrap()
}

async fn exercise(b: &Bucket) {
    let k = Key::manifest(&host("web-1"));
    assert!(matches!(
        b.get(&k, 100).await,
        Err(BucketError::NotFound { .. })
    ));
    assert!(b.head(&k).await.unwrap().is_none());

    let e1 = b.put_if_absent(&k, &b"one"[..]).await.unwrap();
    assert!(matches!(
        b.put_if_absent(&k, &b"two"[..]).await,
        Err(BucketError::AlreadyExists { .. })
    ));
    let got = b.get(&k, 100).await.unwrap();
    assert_eq!(&got.bytes[..], b"one");
    let etag = got.etag.clone().or(e1).expect("stores give etags");

    // Conditional GET.
    assert!(matches!(
        b.get_if_changed(&k, Some(&etag), 100).await.unwrap(),
        Fetched::NotModified
    ));

    // Compare-and-swap: first wins, a stale etag loses.
    b.put_if_match(&k, &b"two"[..], &etag).await.unwrap();
    assert!(matches!(
        b.put_if_match(&k, &b"three"[..], &etag).await,
        Err(BucketError::Conflict { .. })
    ));
    let now = b.get(&k, 100).await.unwrap();
    assert_eq!(&now.bytes[..], b"two");
    assert!(matches!(
        b.get_if_changed(&k, Some(&etag), 100).await.unwrap(),
        Fetched::Object(_)
    ));

    // Size bound.
    assert!(matches!(
        b.get(&k, 2).await,
        Err(BucketError::TooLarge {
            size: 3,
            limit: 2,
            ..
        })
    ));

    // Listing returns keys relative to the root.
    b.put(&Key::status(&host("web-1")), &b"{}"[..])
        .await
        .unwrap();
    b.put(&Key::status(&host("web-2")), &b"{}"[..])
        .await
        .unwrap();
    let mut keys: Vec<_> = b
        .list(&KeyPrefix::status())
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["status/web-1/status.json", "status/web-2/status.json"]
    );
    assert!(b.list(&KeyPrefix::audit()).await.unwrap().is_empty());

    // CAS on a deleted object is a conflict, not a silent create.
    b.delete(&k).await.unwrap();
    assert!(matches!(
        b.put_if_match(&k, &b"x"[..], &etag).await,
        Err(BucketError::Conflict { .. })
    ));
}

/// `list_after` lists only the keys after the one given.
async fn listing_after(b: &Bucket) {
    for i in 1..=5 {
        b.put(&Key::audit_chain(i), &b"e"[..]).await.unwrap();
    }
    b.put(&Key::audit_head(), &b"{}"[..]).await.unwrap();
    let mut after: Vec<String> = b
        .list_after(&KeyPrefix::audit_chain(), &Key::audit_chain(3))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    after.sort();
    assert_eq!(
        after,
        [
            Key::audit_chain(4).to_string(),
            Key::audit_chain(5).to_string()
        ]
    );
    let none = b
        .list_after(&KeyPrefix::audit_chain(), &Key::audit_chain(5))
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// The keys [`Bucket::list_folder`] gives for `folder`.
async fn folder_keys(b: &Bucket, folder: &str) -> Vec<String> {
    let listed = b.list_folder(folder).await.unwrap();
    listed.into_iter().map(|o| o.key).collect()
}

/// `list_folders` gives the folders one level down and the objects directly in the
/// prefix, never what the folders hold; `list_folder` gives a folder whole; a GET
/// gives the time a listing does.
async fn listing_folders(b: &Bucket) {
    let (folders, objects) = b.list_folders(&KeyPrefix::releases()).await.unwrap();
    assert!(folders.is_empty() && objects.is_empty());
    for h in ["web-2", "web-1", "web-1-a"] {
        b.put(&Key::status(&host(h)), &b"{}"[..]).await.unwrap();
        let event = crate::ObjectName::new("e-1").unwrap();
        b.put(&Key::status_event(&host(h), &event), &b"{}"[..])
            .await
            .unwrap();
    }
    let (folders, objects) = b.list_folders(&KeyPrefix::status()).await.unwrap();
    assert_eq!(
        folders,
        ["status/web-1-a/", "status/web-1/", "status/web-2/"]
    );
    assert!(objects.is_empty(), "{objects:?}");
    let inside = folder_keys(b, "status/web-1/").await;
    assert_eq!(
        inside,
        ["status/web-1/events/e-1.json", "status/web-1/status.json"]
    );
    let k = Key::status(&host("web-2"));
    let listed = b.list_folder("status/web-2/").await.unwrap();
    let read = b.get(&k, 100).await.unwrap();
    let got = listed.iter().find(|o| o.key == k.as_str()).unwrap();
    assert_eq!(read.etag, got.etag);
    // A GET may give whole seconds where the listing gives milliseconds.
    let diff = got.last_modified.duration_since(read.last_modified).abs();
    assert!(
        diff < jiff::SignedDuration::from_secs(1),
        "{got:?} vs {:?}",
        read.last_modified
    );
    assert!(read.last_modified > jiff::Timestamp::UNIX_EPOCH);
}

#[tokio::test]
async fn memory_bucket_semantics() {
    let b = Bucket::open_url("memory://").unwrap();
    exercise(&b).await;
    listing_after(&b).await;
    listing_folders(&b).await;
}

#[tokio::test]
async fn file_bucket_semantics() {
    let d = tempfile::tempdir().unwrap();
    let url = format!("file://{}", d.path().join("bucket").display());
    let b = Bucket::open_url(&url).unwrap();
    exercise(&b).await;
    listing_after(&b).await;
    listing_folders(&b).await;
}

#[tokio::test]
async fn file_etags_agree_between_get_head_list_and_put() {
    let d = tempfile::tempdir().unwrap();
    let b = Bucket::open_url(&format!("file://{}", d.path().display())).unwrap();
    let k = Key::status(&host("a"));
    let put = b.put(&k, &b"{}"[..]).await.unwrap();
    let got = b.get(&k, 10).await.unwrap().etag;
    let head = b.head(&k).await.unwrap().unwrap().etag;
    let listed = b.list(&KeyPrefix::status()).await.unwrap()[0].etag.clone();
    assert!(got.is_some());
    assert_eq!(got, head);
    assert_eq!(got, listed);
    assert_eq!(got, put);
    let s = b.get_stream(&k).await.unwrap();
    assert_eq!(s.size(), 2);
    assert_eq!(read_body(s).await, b"{}");
    assert!(matches!(
        b.get_stream(&Key::status(&host("zz"))).await,
        Err(BucketError::NotFound { .. })
    ));
}

/// Reads a streamed body whole, as a blocking reader, running its feed if it has one.
async fn read_body(s: ObjectStream) -> Vec<u8> {
    use std::io::Read;
    let (mut reader, feed) = s.into_reader();
    let read = tokio::task::spawn_blocking(move || {
        let mut body = Vec::new();
        reader.read_to_end(&mut body).map(|_| body)
    });
    if let Some(feed) = feed {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        feed.run(Duration::from_secs(10), deadline).await.unwrap();
    }
    read.await.unwrap().unwrap()
}

#[tokio::test]
async fn local_objects_open_as_plain_files_only_on_file_stores() {
    let d = tempfile::tempdir().unwrap();
    let b = Bucket::open_url(&format!("file://{}", d.path().display())).unwrap();
    let k = Key::status(&host("a"));
    b.put(&k, &b"{}"[..]).await.unwrap();
    let s = b.get_stream(&k).await.unwrap();
    assert_eq!(s.size(), 2);
    let (_, feed) = b.get_stream(&k).await.unwrap().into_reader();
    assert!(feed.is_none(), "a file:// object is read from its file");
    assert_eq!(read_body(s).await, b"{}");
    assert!(matches!(
        b.get_stream(&Key::status(&host("zz"))).await,
        Err(BucketError::NotFound { .. })
    ));
    let m = Bucket::open_url("memory://").unwrap();
    m.put(&k, vec![7u8; 600 * 1024]).await.unwrap();
    let s = m.get_stream(&k).await.unwrap();
    assert_eq!(s.size(), 600 * 1024);
    let (_, feed) = m.get_stream(&k).await.unwrap().into_reader();
    assert!(
        feed.is_some(),
        "an object store's body is fed to the reader"
    );
    assert_eq!(read_body(s).await, vec![7u8; 600 * 1024]);
}

#[tokio::test]
async fn file_reads_follow_no_symlink_and_never_block_on_a_fifo() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("bucket");
    let b = Bucket::open_url(&format!("file://{}", root.display())).unwrap();
    let secret = d.path().join("secret");
    std::fs::write(&secret, b"outside the bucket").unwrap();

    // The object itself a symlink to a file outside the bucket.
    let k = Key::status(&host("a"));
    b.put(&k, &b"{}"[..]).await.unwrap();
    let file = root.join(k.as_str());
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink(&secret, &file).unwrap();
    let e = b.get(&k, 1 << 20).await.unwrap_err();
    assert!(!e.to_string().contains("outside the bucket"), "{e}");
    assert!(b.get_stream(&k).await.is_err());
    assert!(b.get_many(std::slice::from_ref(&k), 1 << 20).await[0].is_err());

    // A folder on the way a symlink (to a real folder holding a real object).
    let other = d.path().join("elsewhere");
    std::fs::create_dir_all(other.join("b")).unwrap();
    std::fs::write(other.join("b/status.json"), b"{}").unwrap();
    std::os::unix::fs::symlink(other.join("b"), root.join("status/b")).unwrap();
    let e = b.get(&Key::status(&host("b")), 1 << 20).await.unwrap_err();
    assert!(e.to_string().contains("symlink"), "{e}");

    // A FIFO where an object should be: refused at once, not waited on.
    let k = Key::status(&host("c"));
    let fifo = root.join(k.as_str());
    std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), b.get(&k, 1 << 20))
        .await
        .expect("a FIFO in the bucket must not block the read");
    assert!(matches!(got, Err(BucketError::NotFound { .. })), "{got:?}");
    assert!(b.get_stream(&k).await.is_err());
}

#[test]
fn range_listings_are_right_in_byte_and_folder_order() {
    // Hosts db, db-2 and db0: by bytes db-2/ < db/ < db0/, by folders db/ < db-2/
    // < db0/. Every key must land in some range, whichever order the store lists
    // in, for a cut after either host.
    let keys = ["s/db-2/x", "s/db/x", "s/db0/x", "s/c/x", "s/e/x"];
    for cut in ["s/db/~", "s/db-2/~", "s/db0/~"] {
        for k in keys {
            let first = in_range(k, None, Some(cut));
            let second = in_range(k, Some(cut), None);
            assert!(first || second, "{k} in no range for cut {cut}");
        }
        // A store in either order reaches every key of the first range before
        // the listing stops.
        for order in [
            vec!["s/c/x", "s/db-2/x", "s/db/x", "s/db0/x", "s/e/x"],
            vec!["s/c/x", "s/db/x", "s/db-2/x", "s/db0/x", "s/e/x"],
        ] {
            let stop = order
                .iter()
                .position(|k| range_passed(k, cut))
                .unwrap_or(order.len());
            for k in &order[stop..] {
                assert!(!in_range(k, None, Some(cut)), "{k} after the stop at {cut}");
            }
        }
    }
    assert!(!range_passed("s/db/x", "s/db-2/~"));
    assert!(range_passed("s/db0/x", "s/db-2/~"));
}

#[tokio::test]
async fn file_cas_is_exclusive_under_contention() {
    let d = tempfile::tempdir().unwrap();
    let url = format!("file://{}", d.path().display());
    let b = Bucket::open_url(&url).unwrap();
    let k = Key::manifest(&host("a"));
    b.put(&k, &b"0"[..]).await.unwrap();
    // 16 writers race to increment a counter with CAS; every increment lands once.
    let mut tasks = vec![];
    for _ in 0..16 {
        let b = Bucket::open_url(&url).unwrap();
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let o = b.get(&k, 100).await.unwrap();
                let n: u64 = std::str::from_utf8(&o.bytes).unwrap().parse().unwrap();
                match b
                    .put_if_match(&k, (n + 1).to_string(), o.etag.as_deref().unwrap())
                    .await
                {
                    Ok(_) => break,
                    Err(BucketError::Conflict { .. }) => continue,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(&b.get(&k, 100).await.unwrap().bytes[..], b"16");
}

#[tokio::test]
async fn head_many_answers_like_head_in_order() {
    let d = tempfile::tempdir().unwrap();
    let file = Bucket::open_url(&format!("file://{}", d.path().display())).unwrap();
    for b in [file, Bucket::open_url("memory://").unwrap()] {
        let keys: Vec<Key> = (0..4)
            .map(|i| Key::status(&host(&format!("h-{i}"))))
            .collect();
        for (i, k) in keys.iter().enumerate().take(3) {
            b.put(k, "x".repeat(i + 1)).await.unwrap();
        }
        let got = b.head_many(&keys, 2).await;
        assert_eq!(got.len(), 4);
        for (k, r) in keys.iter().zip(&got) {
            assert_eq!(
                format!("{:?}", r.as_ref().unwrap()),
                format!("{:?}", b.head(k).await.unwrap()),
                "{k}"
            );
        }
        assert_eq!(got[2].as_ref().unwrap().as_ref().unwrap().size, 3);
        assert!(got[3].as_ref().unwrap().is_none());
        assert!(b.head_many(&[], 2).await.is_empty());
    }
    // On file://, a folder where an object should be is no object, as for `head`.
    let b = Bucket::open_url(&format!("file://{}", d.path().display())).unwrap();
    let k = Key::status(&host("dir"));
    std::fs::create_dir_all(d.path().join(k.as_str())).unwrap();
    assert!(
        b.head_many(std::slice::from_ref(&k), 1).await[0]
            .as_ref()
            .unwrap()
            .is_none()
    );
    // No bucket folder at all: no objects, as `head` says.
    let gone = Bucket::open_url(&format!("file://{}/gone", d.path().display())).unwrap();
    assert!(gone.head(&k).await.unwrap().is_none());
    let got = gone.head_many(std::slice::from_ref(&k), 1).await;
    assert!(got[0].as_ref().unwrap().is_none(), "{got:?}");
}

#[tokio::test]
async fn get_many_reads_like_get_in_order() {
    let d = tempfile::tempdir().unwrap();
    let file = Bucket::open_url(&format!("file://{}", d.path().display())).unwrap();
    for b in [file, Bucket::open_url("memory://").unwrap()] {
        let keys: Vec<Key> = (0..5)
            .map(|i| Key::status(&host(&format!("h-{i}"))))
            .collect();
        for (i, k) in keys.iter().enumerate().take(4) {
            b.put(k, "x".repeat(i + 1)).await.unwrap();
        }
        let got = b.get_many(&keys, 3).await;
        assert_eq!(got.len(), 5);
        for (i, r) in got.iter().enumerate().take(3) {
            let o = r.as_ref().unwrap();
            assert_eq!(o.bytes.len(), i + 1);
            assert_eq!(o.etag, b.get(&keys[i], 3).await.unwrap().etag);
        }
        assert!(matches!(got[3], Err(BucketError::TooLarge { size: 4, .. })));
        assert!(
            matches!(&got[4], Err(BucketError::NotFound { key, .. }) if key == keys[4].as_str())
        );
        assert!(b.get_many(&[], 3).await.is_empty());
    }
}

/// Objects in and around pruned folders, listed with and without pruning.
async fn pruned_listing(b: &Bucket) {
    let mut all = vec![
        "status/stray.json".to_owned(),
        "status/Bad_Host/x/y.json".to_owned(),
        "status/Bad_Host/status.json".to_owned(),
        "hosts/web-1/manifest.json".to_owned(),
    ];
    for i in 0..150 {
        all.push(format!("status/web-{i}/status.json"));
        all.push(format!("status/web-{i}/events/a-{i}.json"));
        all.push(format!("status/web-{i}/events/b-{i}.json"));
    }
    all.push("status/web-1-a/status.json".to_owned());
    for k in &all {
        // Raw keys: some are deliberately outside the layout.
        b.store
            .put(&b.path(k), PutPayload::from_static(b"{}"))
            .await
            .unwrap();
    }
    // Skip every folder two levels below status/ (events and the like).
    let prune = |d: &str| {
        if d.matches('/').count() >= 3 {
            Visit::Skip
        } else {
            Visit::All
        }
    };
    let mut want: Vec<_> = b
        .list(&KeyPrefix::status())
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.key.matches('/').count() <= 2)
        .collect();
    want.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(want.len(), 150 + 3);
    let key_etag = |v: &[ObjectInfo]| {
        v.iter()
            .map(|i| (i.key.clone(), i.etag.clone(), i.size, i.last_modified))
            .collect::<Vec<_>>()
    };
    // Split points anywhere: before, inside and after the keys, at a key, at a
    // folder, and between `web-1-a/` and `web-1/` (which sort around each other).
    let splits: Vec<String> = [
        "a",
        "status/web-1",
        "status/web-1/",
        "status/web-1/status.json",
        "status/web-50/events/a-50.json",
        "status/web-7",
        "status/web-99/",
        "zzz",
    ]
    .map(str::to_owned)
    .to_vec();
    for split in [&[][..], &splits[..]] {
        let mut got = b
            .list_pruned(&KeyPrefix::status(), prune, split)
            .await
            .unwrap();
        got.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(key_etag(&got), key_etag(&want), "splits {split:?}");
    }
    // Nothing pruned: every object under the prefix, each once.
    let got = b
        .list_pruned(&KeyPrefix::status(), |_| Visit::All, &splits)
        .await
        .unwrap();
    assert_eq!(got.len(), all.len() - 1);
    // Only status.json of each folder directly under status/: no events, no other
    // object of those folders, top-level objects still listed.
    let only = |d: &str| {
        if d.matches('/').count() == 2 {
            Visit::Only(&["status.json"])
        } else {
            Visit::All
        }
    };
    // What the one-stat path gives equals what the walk gives.
    let walked = b
        .list_pruned(&KeyPrefix::status(), |_| Visit::All, &[])
        .await
        .unwrap();
    for o in b
        .list_pruned(&KeyPrefix::status(), only, &[])
        .await
        .unwrap()
    {
        let w = walked.iter().find(|w| w.key == o.key).unwrap();
        assert_eq!(
            (&w.etag, w.size, w.last_modified),
            (&o.etag, o.size, o.last_modified)
        );
    }
    let want: Vec<String> = all
        .iter()
        .filter(|k| {
            k.starts_with("status/")
                && (k.matches('/').count() == 1
                    || (k.matches('/').count() == 2 && k.ends_with("/status.json")))
        })
        .cloned()
        .collect();
    for split in [&[][..], &splits[..]] {
        let mut got: Vec<String> = b
            .list_pruned(&KeyPrefix::status(), only, split)
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.key)
            .collect();
        got.sort();
        let mut want = want.clone();
        want.sort();
        assert_eq!(got, want);
    }
    // An absent prefix lists nothing.
    assert!(
        b.list_pruned(&KeyPrefix::audit(), |_| Visit::All, &[])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn pruned_listing_on_memory() {
    pruned_listing(&Bucket::open_url("memory://").unwrap()).await;
}

#[tokio::test]
async fn pruned_listing_on_file_skips_pruned_folders_and_keeps_etags() {
    let d = tempfile::tempdir().unwrap();
    let b = Bucket::open_url(&format!("file://{}", d.path().display())).unwrap();
    pruned_listing(&b).await;
    // ETags agree with get; a part file, a broken link and a folder link are left
    // out, a link to a file is listed; an unreadable pruned folder is never read.
    let k = Key::status(&host("web-3"));
    let listed = b
        .list_pruned(&KeyPrefix::status(), |_| Visit::All, &[])
        .await
        .unwrap();
    let info = listed.iter().find(|i| i.key == k.as_str()).unwrap();
    assert_eq!(info.etag, b.get(&k, 10).await.unwrap().etag);
    let root = d.path().join("status/web-3");
    std::fs::write(root.join("x.json#1"), "{}").unwrap();
    std::os::unix::fs::symlink("/nonexistent", root.join("broken")).unwrap();
    std::os::unix::fs::symlink(d.path().join("status"), root.join("loop")).unwrap();
    std::os::unix::fs::symlink(root.join("status.json"), root.join("alias.json")).unwrap();
    let mut keys: Vec<String> = b
        .list_pruned(&KeyPrefix::status(), |_| Visit::All, &[])
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .filter(|k| k.starts_with("status/web-3/"))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "status/web-3/alias.json",
            "status/web-3/events/a-3.json",
            "status/web-3/events/b-3.json",
            "status/web-3/status.json"
        ]
    );
    let events = root.join("events");
    std::fs::set_permissions(&events, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let pruned = b
        .list_pruned(
            &KeyPrefix::status(),
            |d| {
                if d.ends_with("/events/") {
                    Visit::Skip
                } else {
                    Visit::All
                }
            },
            &[],
        )
        .await;
    let unpruned = b
        .list_pruned(&KeyPrefix::status(), |_| Visit::All, &[])
        .await;
    // Root reads it anyway; for anyone else the folder is unreadable.
    let readable = std::fs::read_dir(&events).is_ok();
    std::fs::set_permissions(&events, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    assert!(pruned.is_ok());
    if !readable {
        assert!(
            matches!(unpruned, Err(BucketError::AccessDenied { ref key, .. }) if key == "status/web-3/events/"),
            "{unpruned:?}"
        );
    }
}

#[tokio::test]
async fn file_folder_listing_survives_links_and_odd_names() {
    use std::os::unix::ffi::OsStrExt;
    let d = tempfile::tempdir().unwrap();
    let b = Bucket::open_url(&format!("file://{}", d.path().display())).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.json"), "{}").unwrap();
    let folder = d.path().join("status/Not_A_Host");
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    std::fs::write(folder.join("sub/x.json"), "{}").unwrap();
    std::fs::write(folder.join("tab\tname"), "{}").unwrap();
    std::fs::write(folder.join(std::ffi::OsStr::from_bytes(b"bad-\xff")), "{}").unwrap();
    std::os::unix::fs::symlink(".", folder.join("loop")).unwrap();
    std::os::unix::fs::symlink(outside.path(), folder.join("away")).unwrap();
    let keys = folder_keys(&b, "status/Not_A_Host/").await;
    assert_eq!(
        keys,
        [
            "status/Not_A_Host/bad-\u{fffd}",
            "status/Not_A_Host/sub/x.json",
            "status/Not_A_Host/tab\tname",
        ]
    );
    // The same folder through object_store's walk fails: why list_folder does not
    // use it on file://.
    let direct = b
        .store
        .list(Some(&object_store::path::Path::from("status/Not_A_Host")))
        .collect::<Vec<_>>()
        .await;
    assert!(direct.iter().any(|r| r.is_err()), "{direct:?}");
}

#[test]
fn errors_name_key_and_store() {
    let e = classify(
        "s3://b/p",
        Op::List,
        "status/",
        object_store::Error::Generic {
            store: "S3",
            source: "Client error with status 403 Forbidden: <Code>AccessDenied</Code>".into(),
        },
    );
    let msg = e.to_string();
    assert!(matches!(e, BucketError::AccessDenied { op: Op::List, .. }));
    assert!(
        msg.contains("access denied for key status/") && msg.contains("s3://b/p"),
        "{msg}"
    );
}
