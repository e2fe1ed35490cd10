//! Step 1 of a refresh: list `status/` and `hosts/` and sort what is listed into one
//! [`Slot`] per host, in host order.
//!
//! Of a host's `status/` folder only `status.json` is listed (never its events): on
//! `file://` that is one `stat` per host, on S3 the other entries are dropped as the
//! pages arrive. Of a host's `hosts/` folder, `manifest.json` and, for a held host,
//! `hold.json` (read by `holds.rs`): two `stat`s on `file://`. S3 listings run as concurrent key ranges cut at host
//! names of the previous snapshot (or at first characters when there is none), see
//! [`fleet_core::Bucket::list_pruned`]. Without a previous snapshot (a cold refresh)
//! `status/` is listed one level deep instead, its host folders only, since every
//! `status.json` is read anyway ([`list`]). Keys under no valid
//! host name are counted as [`Ignored`].

use fleet_core::bucket::{BucketError, ObjectInfo, Visit};
use fleet_core::layout::{HOSTS_DIR, STATUS_DIR};
use fleet_core::{Bucket, HostName, Key, KeyPrefix};
use serde::Serialize;

use crate::outcome::{ManifestOutcome, StatusOutcome};
use crate::snapshot::{CachedHost, Snapshot};

/// How many keys of ignored objects are kept for display.
pub const MAX_IGNORED_KEYS: usize = 50;

/// Objects under `status/` or `hosts/` that belong to no valid host.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Ignored {
    /// How many.
    pub count: usize,
    /// The first [`MAX_IGNORED_KEYS`] keys (hostile text: escape when displaying).
    pub keys: Vec<String>,
}

impl Ignored {
    fn add(&mut self, key: &str) {
        self.count += 1;
        if self.keys.len() < MAX_IGNORED_KEYS {
            self.keys.push(key.chars().take(300).collect());
        }
    }
}

/// What the listing step hands on.
pub(super) struct Listing {
    /// One slot per host, in host order.
    pub slots: Vec<Slot>,
    /// Keys under no valid host.
    pub ignored: Ignored,
    /// Objects in the two listings.
    pub listed: usize,
    /// The listed `hosts/<host>/hold.json`, sorted by host.
    pub holds: Vec<(HostName, ObjectInfo)>,
}

/// Lists both folders (concurrent key ranges, at most `concurrency` each, cut at the
/// hosts of `prev`) and merges them into one slot per host.
///
/// Without a previous snapshot, `status/` is listed one level deep instead
/// ([`Bucket::list_folders`]): the host folders, not their objects. Every
/// `status.json` is read anyway when nothing can be reused, and the read gives its
/// ETag and time, so listing it (and, on the server, every event object beside it)
/// would only cost pages: 10,000 hosts with 5 events each are 60 pages of 1,000
/// objects but 10 pages of 1,000 folders. On `file://` it saves a `stat` per host
/// (the read `stat`s the file it opened). Such slots are [`Slot::unlisted`].
pub(super) async fn list(
    bucket: &Bucket,
    concurrency: usize,
    prev: Option<&Snapshot>,
) -> Result<Listing, BucketError> {
    let (status_prefix, hosts_prefix) = (KeyPrefix::status(), KeyPrefix::hosts());
    let ranges = concurrency.clamp(1, MAX_LIST_RANGES);
    let hosts_splits = split_points(HOSTS_DIR, prev, ranges);
    let hosts_listing = bucket.list_pruned(&hosts_prefix, below_host(HOSTS_DIR), &hosts_splits);
    let mut ignored = Ignored::default();
    let cold = prev.is_none();
    let (statuses, hosts_list, listed_status) = if cold {
        let (status_folders, hosts_list) =
            tokio::try_join!(status_folders(bucket, &mut ignored), hosts_listing)?;
        let n = status_folders.1;
        (status_folders.0, hosts_list, n)
    } else {
        let status_splits = split_points(STATUS_DIR, prev, ranges);
        let (status_list, hosts_list) = tokio::try_join!(
            bucket.list_pruned(&status_prefix, below_host(STATUS_DIR), &status_splits),
            hosts_listing,
        )?;
        let n = status_list.len();
        (
            by_host(STATUS_DIR, status_list, &mut ignored),
            hosts_list,
            n,
        )
    };
    let listed = listed_status + hosts_list.len();
    let (holds, manifests): (Vec<_>, Vec<_>) = by_host(HOSTS_DIR, hosts_list, &mut ignored)
        .into_iter()
        .partition(|(h, info)| info.key == Key::hold(h).as_str());
    Ok(Listing {
        slots: merge_by_host(statuses, manifests, cold),
        ignored,
        listed,
        holds,
    })
}

/// `status/` one level deep: a placeholder for the `status.json` of each folder named
/// by a valid host (the fetch step reads it, and drops it if there is none), sorted by
/// host, and how many entries were listed. Objects directly in `status/` and every
/// object in folders not named by a host (listed whole, rare) go to `ignored`.
async fn status_folders(
    bucket: &Bucket,
    ignored: &mut Ignored,
) -> Result<(Vec<(HostName, ObjectInfo)>, usize), BucketError> {
    let (folders, objects) = bucket.list_folders(&KeyPrefix::status()).await?;
    let mut listed = folders.len() + objects.len();
    let mut stray: Vec<String> = objects.into_iter().map(|o| o.key).collect();
    let mut out = Vec::with_capacity(folders.len());
    for folder in folders {
        let name = folder
            .strip_prefix(STATUS_DIR)
            .and_then(|r| r.strip_prefix('/'))
            .and_then(|r| r.strip_suffix('/'))
            .unwrap_or_default();
        match HostName::new(name) {
            Ok(host) => {
                let key = Key::status(&host).as_str().to_owned();
                out.push((host, unlisted(key)));
            }
            Err(_) => {
                let inside = bucket.list_folder(&folder).await?;
                listed += inside.len();
                stray.extend(inside.into_iter().map(|o| o.key));
            }
        }
    }
    stray.sort_unstable();
    for key in &stray {
        ignored.add(key);
    }
    // Folder order is nearly host order (`web-1-a/` sorts before `web-1/`).
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((out, listed))
}

/// A placeholder for an object whose folder was listed but not the object itself:
/// no ETag, no size, no time until it is read ([`Slot::unlisted`]).
fn unlisted(key: String) -> ObjectInfo {
    ObjectInfo {
        key,
        size: 0,
        etag: None,
        last_modified: jiff::Timestamp::UNIX_EPOCH,
    }
}

/// The listed objects of one folder that belong to a host, sorted by host; keys under
/// no valid host go to `ignored`.
fn by_host(dir: &str, list: Vec<ObjectInfo>, ignored: &mut Ignored) -> Vec<(HostName, ObjectInfo)> {
    let mut v: Vec<(HostName, ObjectInfo)> = Vec::with_capacity(list.len());
    for info in list {
        match sort_key(dir, &info.key) {
            Listed::Status(h) | Listed::Manifest(h) | Listed::Hold(h) => v.push((h, info)),
            Listed::Other => {}
            Listed::Ignored => ignored.add(&info.key),
        }
    }
    // Key order is nearly host order (`web-1-a/` sorts before `web-1/`).
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Where a listed key belongs.
enum Listed {
    Status(HostName),
    Manifest(HostName),
    Hold(HostName),
    /// A valid host's other object (events, future files): not part of the snapshot.
    Other,
    /// Under no valid host.
    Ignored,
}

fn sort_key(dir: &str, key: &str) -> Listed {
    let is_status = dir == STATUS_DIR;
    if is_status {
        if let Some(h) = Key::status_host(key) {
            return Listed::Status(h);
        }
    } else if let Some(h) = Key::manifest_host(key) {
        return Listed::Manifest(h);
    }
    let rest = key
        .strip_prefix(dir)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or("");
    match rest.split_once('/') {
        Some((h, _)) if !is_status => match HostName::new(h) {
            Ok(h) if key == Key::hold(&h).as_str() => Listed::Hold(h),
            Ok(_) => Listed::Other,
            Err(_) => Listed::Ignored,
        },
        Some((h, _)) if HostName::new(h).is_ok() => Listed::Other,
        _ => Listed::Ignored,
    }
}

/// Most concurrent range listings of one prefix on an object store. More do not help
/// on SeaweedFS, whose filer walks the folders one at a time whatever the requests
/// (measured: 32 ranges list 2,000 hosts 2x slower than one); on AWS S3 each range
/// saves page round trips.
pub const MAX_LIST_RANGES: usize = 8;
/// Hosts per range listing when the previous snapshot tells where to cut.
const HOSTS_PER_RANGE: usize = 500;

/// The object name a host's folder under `dir` holds for the aggregation
/// (`status.json`, `manifest.json`), taken from core's layout.
fn host_object_names(dir: &str) -> &'static [&'static str] {
    static NAMES: std::sync::LazyLock<([&str; 1], [&str; 2])> = std::sync::LazyLock::new(|| {
        let h = HostName::new("h").expect("valid host name");
        // Leaked once: the names of fleet's own objects, for the life of the process.
        let name = |k: Key| -> &'static str {
            k.as_str()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned()
                .leak()
        };
        (
            [name(Key::status(&h))],
            [name(Key::manifest(&h)), name(Key::hold(&h))],
        )
    });
    if dir == STATUS_DIR {
        &NAMES.0
    } else {
        &NAMES.1
    }
}

/// What to list of each folder under `dir/` ([`Bucket::list_pruned`]): of a valid
/// host's `status/` folder only its `status.json` (its events are never listed), of
/// its `hosts/` folder its manifest and hold (anything else there is no part of a
/// refresh); folders under names that are not hosts are walked whole, so their
/// objects are reported as ignored.
fn below_host(dir: &'static str) -> impl Fn(&str) -> Visit + Send + Sync + 'static {
    let only = host_object_names(dir);
    move |folder: &str| {
        let host = folder
            .strip_prefix(dir)
            .and_then(|r| r.strip_prefix('/'))
            .and_then(|r| r.strip_suffix('/'))
            .filter(|h| !h.contains('/'));
        match host {
            Some(h) if HostName::new(h).is_ok() => Visit::Only(only),
            _ => Visit::All,
        }
    }
}

/// Where to cut an object store listing of `dir/` into concurrent ranges: after
/// evenly spaced hosts of the previous snapshot, or, without one, after a few first
/// characters of host names. (`file://` listings ignore them.)
///
/// Each cut is `dir/<name>~`: `~` sorts after every character of a host name and of
/// the layout's object names, and no host's folder is named by a cut. That matters on
/// SeaweedFS, whose `start-after` skips the whole folder when it names one
/// (`start-after=status/web-1` lists nothing of `status/web-1/`).
fn split_points(dir: &str, prev: Option<&Snapshot>, ranges: usize) -> Vec<String> {
    let hosts = prev.map(|p| p.hosts.len()).unwrap_or(0);
    if ranges < 2 {
        return vec![];
    }
    if hosts >= 2 * HOSTS_PER_RANGE {
        let n = (hosts / HOSTS_PER_RANGE).clamp(2, ranges);
        let step = hosts.div_ceil(n);
        return prev
            .into_iter()
            .flat_map(|p| p.hosts.keys())
            .enumerate()
            .filter(|(i, _)| (i + 1) % step == 0 && i + 1 < hosts)
            .map(|(_, h)| format!("{dir}/{h}/~"))
            .collect();
    }
    // Host names start with 0-9 or a-z (one DNS label).
    ["9", "e", "j", "o", "t"]
        .iter()
        .take(ranges - 1)
        .map(|c| format!("{dir}/{c}~"))
        .collect()
}

/// One host during a refresh: what was listed, what it gave, what to cache.
pub(super) struct Slot {
    /// The host.
    pub host: HostName,
    /// Its listed `status.json`.
    pub status: Option<ObjectInfo>,
    /// Whether `status` is a placeholder for an object that was not listed (only its
    /// folder was, [`status_folders`]): the fetch step replaces it with what the read
    /// gives, or removes it when there is no such object.
    pub unlisted: bool,
    /// Its listed `manifest.json`.
    pub manifest: Option<ObjectInfo>,
    /// What its status gave in this refresh (reused or fetched).
    pub status_now: Option<StatusOutcome>,
    /// What its manifest gave in this refresh (reused or fetched).
    pub manifest_now: Option<ManifestOutcome>,
    /// What the next snapshot caches for it.
    pub entry: CachedHost,
}

impl Slot {
    pub(super) fn new(host: HostName) -> Self {
        Self {
            host,
            status: None,
            unlisted: false,
            manifest: None,
            status_now: None,
            manifest_now: None,
            entry: CachedHost::default(),
        }
    }
}

/// Merges status and manifest listings, each sorted by host, into one slot per host
/// in host order (a host listed twice keeps the last entry); `unlisted`: the statuses
/// are placeholders ([`Slot::unlisted`]).
fn merge_by_host(
    statuses: Vec<(HostName, ObjectInfo)>,
    manifests: Vec<(HostName, ObjectInfo)>,
    unlisted: bool,
) -> Vec<Slot> {
    let mut out: Vec<Slot> = Vec::with_capacity(statuses.len().max(manifests.len()));
    let mut s = statuses.into_iter().peekable();
    let mut m = manifests.into_iter().peekable();
    loop {
        let take_status = match (s.peek(), m.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((a, _)), Some((b, _))) => a <= b,
        };
        let (host, info) = if take_status { s.next() } else { m.next() }.expect("peeked");
        if out.last().is_none_or(|l| l.host != host) {
            out.push(Slot::new(host));
        }
        let slot = out.last_mut().expect("just pushed");
        if take_status {
            slot.status = Some(info);
            slot.unlisted = unlisted;
        } else {
            slot.manifest = Some(info);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use jiff::Timestamp;

    use super::*;

    #[test]
    fn listing_keys_are_sorted_out() {
        assert!(matches!(
            sort_key("status", "status/a/status.json"),
            Listed::Status(_)
        ));
        assert!(matches!(
            sort_key("hosts", "hosts/a/manifest.json"),
            Listed::Manifest(_)
        ));
        assert!(matches!(
            sort_key("status", "status/a/events/x.json"),
            Listed::Other
        ));
        assert!(matches!(
            sort_key("status", "status/A<b>/status.json"),
            Listed::Ignored
        ));
        assert!(matches!(
            sort_key("status", "status/stray.json"),
            Listed::Ignored
        ));
    }

    #[test]
    fn of_a_host_folder_only_its_object_is_listed() {
        let v = below_host(STATUS_DIR);
        assert_eq!(v("status/web-1/"), Visit::Only(&["status.json"]));
        assert_eq!(v("status/Not_A_Host/"), Visit::All);
        assert_eq!(v("status/Not_A_Host/x/"), Visit::All);
        assert_eq!(v("status/"), Visit::All);
        assert_eq!(
            below_host(HOSTS_DIR)("hosts/web-1/"),
            Visit::Only(&["manifest.json", "hold.json"])
        );
        assert!(matches!(
            sort_key("hosts", "hosts/web-1/hold.json"),
            Listed::Hold(h) if h.as_str() == "web-1"
        ));
    }

    #[test]
    fn listing_cuts_are_ordered_and_name_no_host_folder() {
        let hosts = |n: usize| {
            let mut s = Snapshot::new(Timestamp::UNIX_EPOCH, String::new(), BTreeMap::new());
            for i in 0..n {
                s.hosts.insert(
                    HostName::new(&format!("h-{i:05}")).unwrap(),
                    CachedHost::default(),
                );
            }
            s
        };
        for (prev, want) in [
            (None, 5),
            (Some(hosts(10)), 5),
            (Some(hosts(5000)), MAX_LIST_RANGES - 1),
            (Some(hosts(1000)), 1),
        ] {
            let cuts = split_points(STATUS_DIR, prev.as_ref(), MAX_LIST_RANGES);
            assert_eq!(cuts.len(), want, "{cuts:?}");
            assert!(cuts.windows(2).all(|w| w[0] < w[1]), "{cuts:?}");
            for c in &cuts {
                assert!(c.starts_with("status/") && c.ends_with('~'), "{c}");
            }
        }
        assert!(split_points(STATUS_DIR, None, 1).is_empty());
    }

    #[test]
    fn listings_merge_into_one_slot_per_host_in_order() {
        let info = |k: &str| ObjectInfo {
            key: k.into(),
            size: 1,
            etag: None,
            last_modified: Timestamp::UNIX_EPOCH,
        };
        let h = |s: &str| HostName::new(s).unwrap();
        let statuses = vec![(h("a"), info("s-a")), (h("web-1"), info("s-w1"))];
        let manifests = vec![
            (h("b"), info("m-b")),
            (h("web-1"), info("m-w1")),
            (h("web-1-a"), info("m-w1a")),
        ];
        let slots = merge_by_host(statuses, manifests, false);
        let got: Vec<(String, Option<String>, Option<String>)> = slots
            .iter()
            .map(|s| {
                (
                    s.host.to_string(),
                    s.status.as_ref().map(|i| i.key.clone()),
                    s.manifest.as_ref().map(|i| i.key.clone()),
                )
            })
            .collect();
        let o = |s: &str| Some(s.to_owned());
        assert_eq!(
            got,
            [
                ("a".into(), o("s-a"), None),
                ("b".into(), None, o("m-b")),
                ("web-1".into(), o("s-w1"), o("m-w1")),
                ("web-1-a".into(), None, o("m-w1a")),
            ]
        );
    }
}
