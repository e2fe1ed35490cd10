//! Tests of the snapshot codec: round trips, and every malformed file refused.

use std::sync::Arc;

use fleet_core::StatusReport;
use fleet_core::status::{AgentState, Facts, ReportedError};

use super::*;
use crate::outcome::ManifestOutcome;

fn sample() -> Snapshot {
    let h = HostName::new("web-1").unwrap();
    let report = StatusReport {
        version: 1,
        host: h.clone(),
        agent_version: "0.1.0".into(),
        state: AgentState::Failed,
        desired: None,
        current: None,
        last_error: Some(Box::new(ReportedError {
            kind: fleet_core::ErrorKind::Other("x".into()),
            message: "<script>alert(1)</script>".into(),
            at: "2026-11-26T12:00:00Z".parse().unwrap(),
        })),
        facts: Facts::default(),
        time: "2026-11-26T12:00:00Z".parse().unwrap(),
        signature: None,
        pause: None,
    };
    let mut hosts = BTreeMap::new();
    hosts.insert(
        h,
        CachedHost {
            status: Some(Cached {
                etag: "e1".into(),
                modified: Some("2026-11-26T11:59:00Z".parse().unwrap()),
                outcome: StatusOutcome::Report(Arc::new(report)),
            }),
            manifest: Some(Cached {
                etag: "e2".into(),
                modified: None,
                outcome: ManifestOutcome::Flagged("bad signature".into()),
            }),
            hold_modified: Some("2026-11-26T11:00:00Z".parse().unwrap()),
            marker: Some("2026-11-26T11:59:01Z".parse().unwrap()),
        },
    );
    Snapshot::new(
        "2026-11-26T12:00:00Z".parse().unwrap(),
        String::new(),
        hosts,
    )
}

const KEY: &str = "dashboard/snapshot.json";

/// The snapshot as text: every frame decompressed.
fn text(bytes: &[u8]) -> String {
    String::from_utf8(zstd::decode_all(bytes).unwrap()).unwrap()
}

/// Text (a header line, then host lines) encoded as a header frame and one shard.
fn encode(text: &str) -> Vec<u8> {
    let (header, hosts) = text.split_once('\n').unwrap();
    let mut out = compress(format!("{header}\n").as_bytes());
    out.extend(compress(hosts.as_bytes()));
    out
}

fn many(n: usize) -> Snapshot {
    let mut s = sample();
    let c = s.hosts.values().next().unwrap().clone();
    s.hosts = (0..n)
        .map(|i| {
            let h = HostName::new(&format!("h-{i:06}")).unwrap();
            let mut c = c.clone();
            if let Some(Cached {
                outcome: StatusOutcome::Report(r),
                ..
            }) = &mut c.status
            {
                Arc::make_mut(r).host = h.clone();
            }
            (h, c)
        })
        .collect();
    s
}

#[test]
fn round_trips() {
    let s = sample();
    let bytes = s.to_bytes();
    assert_eq!(Snapshot::parse(&bytes, KEY).unwrap(), s);
    // Readable with `zstd -dc`: a header line, then one line per host.
    let t = text(&bytes);
    assert!(t.starts_with("{\"version\":4,\"id\":\""), "{t}");
    assert!(t.lines().nth(1).unwrap().starts_with("[\"web-1\",{"), "{t}");
    assert_eq!(Snapshot::parse(&encode(&t), KEY).unwrap(), s);
    // Several shards, decoded in parallel, in order.
    let big = many(HOSTS_PER_SHARD * 2 + 7);
    let bytes = big.to_bytes();
    assert_eq!(split_frames(&bytes, 4).unwrap().len(), 1 + 3);
    assert!(split_frames(&bytes, 3).unwrap_err().contains("more than 3"));
    assert_eq!(Snapshot::parse(&bytes, KEY).unwrap(), big);
    // Compact: far less than the JSON.
    assert!(bytes.len() * 5 < text(&bytes).len());
}

#[test]
fn refuses_a_report_filed_under_another_host() {
    let t = text(&sample().to_bytes());
    let moved = t.replacen("[\"web-1\",", "[\"web-2\",", 1);
    let e = Snapshot::parse(&encode(&moved), KEY).unwrap_err();
    assert!(e.contains("web-2") && e.contains(KEY), "{e}");
}

#[test]
fn refuses_malformed_oversized_and_inconsistent_files() {
    let t = text(&sample().to_bytes());
    let two = text(&many(2).to_bytes());
    let (head2, lines2) = two.split_once('\n').unwrap();
    let lines2: Vec<&str> = lines2.lines().collect();
    let mut bad: Vec<(Vec<u8>, &str)> =
        vec![
        (b"{}".to_vec(), "zstd frame"),
        (Vec::new(), "empty"),
        // A version 1 file (plain JSON) from an older reporter.
        (
            br#"{"version":1,"written_at":"2026-11-26T12:00:00Z","trusted_keys":"","hosts":{}}"#
                .to_vec(),
            "zstd frame",
        ),
        (encode(&t.replace("\"version\":4", "\"version\":3")), "version 3"),
        // A delta is no snapshot.
        (encode(&t.replacen("\"id\"", "\"base\"", 1)), "not a snapshot"),
        (
            encode(&t.replace("bad signature", &"x".repeat(MAX_FLAG_LEN + 1))),
            "manifest.flagged",
        ),
        (encode(&t.replacen("{", "{\"extra\":1,", 1)), "extra"),
        (encode(&t.replacen("{\"status\"", "{\"extra\":1,\"status\"", 1)), "extra"),
        (encode(&t.replace("\"hosts\":1", "\"hosts\":2")), "announces 2 hosts"),
        (encode(&t.replace("\"shards\":1", "\"shards\":2")), "announces 2 shards"),
        // The same host twice, and hosts out of order.
        (
            encode(&format!("{head2}\n{}\n{}\n", lines2[0], lines2[0])),
            "unique and in order",
        ),
        (
            encode(&format!("{head2}\n{}\n{}\n", lines2[1], lines2[0])),
            "unique and in order",
        ),
        // A header beyond its bound.
        (
            encode(&t.replacen("{", &format!("{{\"pad\":\"{}\",", "x".repeat(5000)), 1)),
            "header",
        ),
    ];
    // More hosts than any snapshot holds, announced before any shard is read.
    bad.push((
        encode(&t.replace(
            "\"hosts\":1",
            &format!("\"hosts\":{}", MAX_SNAPSHOT_HOSTS + 1),
        )),
        "more than the 1000000",
    ));
    // A shard with more lines than a shard holds (the header's counts agree).
    let over = text(&many(HOSTS_PER_SHARD + 1).to_bytes());
    let (head, lines) = over.split_once('\n').unwrap();
    let mut crammed = compress(format!("{head}\n").as_bytes());
    crammed.extend(compress(lines.as_bytes()));
    crammed.extend(compress(b""));
    bad.push((crammed, "more than 2000 hosts"));
    let good = sample().to_bytes();
    bad.push((good[..good.len() - 1].to_vec(), "zstd frame"));
    // A frame that does not record its size cannot be bounded before it is read.
    let mut unsized_frame = compress(t.lines().next().unwrap().as_bytes());
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    enc.include_contentsize(false).unwrap();
    std::io::Write::write_all(&mut enc, t.split_once('\n').unwrap().1.as_bytes()).unwrap();
    unsized_frame.extend(enc.finish().unwrap());
    bad.push((unsized_frame, "record its size"));
    for (bytes, why) in bad {
        let e = Snapshot::parse(&bytes, KEY).unwrap_err();
        assert!(e.contains(KEY) && e.contains(why), "{why}: {e}");
    }
}

/// A valid zstd frame that holds nothing but declares `size` bytes.
fn frame_declaring(size: u64) -> Vec<u8> {
    // Magic, a descriptor with an 8-byte content size, a 1 KiB window, the size,
    // then one empty last raw block.
    let mut f = vec![0x28, 0xB5, 0x2F, 0xFD, 0xC0, 0x00];
    f.extend(size.to_le_bytes());
    f.extend([0x01, 0x00, 0x00]);
    f
}

#[test]
fn shards_declaring_more_than_the_bound_are_refused_before_they_are_inflated() {
    let t = text(&sample().to_bytes());
    let header = t.lines().next().unwrap();
    assert_eq!(declared_size(&frame_declaring(7)), Ok(7));
    for sizes in [
        vec![MAX_SNAPSHOT_DECOMPRESSED + 1],
        vec![MAX_SNAPSHOT_DECOMPRESSED / 2 + 1; 2],
    ] {
        // As many hosts as the shards could hold, so only the sizes are wrong.
        let h = header
            .replace("\"shards\":1", &format!("\"shards\":{}", sizes.len()))
            .replace(
                "\"hosts\":1",
                &format!("\"hosts\":{}", HOSTS_PER_SHARD * sizes.len()),
            );
        let mut bytes = compress(format!("{h}\n").as_bytes());
        for s in &sizes {
            bytes.extend(frame_declaring(*s));
        }
        let e = Snapshot::parse(&bytes, KEY).unwrap_err();
        assert!(e.contains("decompresses to more than"), "{e}");
    }
}

#[test]
fn fingerprint_ignores_order_and_is_empty_for_no_keys() {
    let a = fleet_core::SecretKey::generate("a").unwrap().public();
    let b = fleet_core::SecretKey::generate("b").unwrap().public();
    assert_eq!(
        fingerprint(&TrustedKeys::new([a.clone(), b.clone()])),
        fingerprint(&TrustedKeys::new([b, a.clone()]))
    );
    assert_ne!(fingerprint(&TrustedKeys::new([a])), "");
    assert_eq!(fingerprint(&TrustedKeys::default()), "");
}

#[test]
fn a_verified_manifest_round_trips_with_its_digest_in_hex_and_a_bad_digest_is_refused() {
    use crate::outcome::ManifestInfo;
    use fleet_core::narinfo::Sha256Hash;
    let mut s = sample();
    let digest = Sha256Hash::of(b"manifest bytes");
    s.hosts.values_mut().next().unwrap().manifest = Some(Cached {
        etag: "e2".into(),
        modified: None,
        outcome: ManifestOutcome::Verified(Arc::new(ManifestInfo {
            sequence: 7,
            closure: fleet_core::StorePath::new(
                "/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-nixos-system-web-1",
            )
            .unwrap(),
            issued_at: "2026-11-26T12:00:00Z".parse().unwrap(),
            expires_at: "2026-12-26T12:00:00Z".parse().unwrap(),
            activation: fleet_core::Activation::Switch,
            signed_by: "publisher-1".into(),
            digest,
        })),
    });
    let bytes = s.to_bytes();
    assert_eq!(Snapshot::parse(&bytes, KEY).unwrap(), s);
    let t = text(&bytes);
    let hex = digest.to_hex();
    assert_eq!(hex.len(), 64);
    assert!(t.contains(&format!("\"digest\":\"{hex}\"")), "{t}");
    for bad in [&hex[..63], "zz", &format!("{hex}00")] {
        let e = Snapshot::parse(&encode(&t.replace(&hex, bad)), KEY).unwrap_err();
        assert!(e.contains("64 hex digits") && e.contains(KEY), "{bad}: {e}");
    }
}

/// A copy of `s` with host `i` of [`many`] reporting another ETag.
fn touched(s: &Snapshot, i: usize) -> Snapshot {
    let mut s = s.clone();
    let h = HostName::new(&format!("h-{i:06}")).unwrap();
    s.hosts.get_mut(&h).unwrap().status.as_mut().unwrap().etag = format!("e{i}-new");
    s
}

#[test]
fn a_delta_brings_the_stored_snapshot_up_to_date() {
    let stored = many(40);
    let bytes = stored.to_bytes();
    let mut now = touched(&stored, 3);
    now.hosts.remove(&HostName::new("h-000005").unwrap());
    let added = HostName::new("h-999999").unwrap();
    let mut entry = now.hosts.values().next().unwrap().clone();
    entry.status = None;
    now.hosts.insert(added.clone(), entry);
    now.written_at = "2026-11-26T12:05:00Z".parse().unwrap();
    let changed: BTreeSet<HostName> = ["h-000003", "h-000005", "h-999999"]
        .iter()
        .map(|h| HostName::new(h).unwrap())
        .collect();
    let delta = now.delta_bytes(&changed);
    // Readable like the snapshot: the header names the snapshot it applies to, a
    // gone host is `null`.
    let t = text(&delta);
    assert!(t.contains(&format!("\"base\":\"{}\"", stored.id)), "{t}");
    assert!(t.contains("[\"h-000005\",null]"), "{t}");
    assert_eq!(t.lines().count(), 4, "{t}");

    let mut read = Snapshot::parse(&bytes, KEY).unwrap();
    let got = read.apply_delta(&delta, "d").unwrap();
    assert_eq!(got, changed);
    assert_eq!(read, now);
    // Three lines, not forty.
    assert!(t.len() * 5 < text(&bytes).len());
}

#[test]
fn a_delta_of_another_snapshot_is_refused_and_changes_nothing() {
    let stored = many(10);
    let now = touched(&stored, 2);
    let changed: BTreeSet<HostName> = [HostName::new("h-000002").unwrap()].into();
    let delta = now.delta_bytes(&changed);

    // The snapshot was written again since (a new id).
    let mut other = Snapshot::parse(&stored.to_bytes(), KEY).unwrap();
    other.id = new_id();
    let before = other.clone();
    let e = other.apply_delta(&delta, "d").unwrap_err();
    assert!(
        e.contains("applies to snapshot") && e.contains(&stored.id),
        "{e}"
    );
    assert_eq!(other, before);

    // Other trusted keys, or older than the snapshot.
    let mut keys = Snapshot::parse(&stored.to_bytes(), KEY).unwrap();
    let mut rekeyed = now.clone();
    rekeyed.trusted_keys = "ab".repeat(32);
    let e = keys
        .apply_delta(&rekeyed.delta_bytes(&changed), "d")
        .unwrap_err();
    assert!(e.contains("other trusted keys"), "{e}");
    let mut older = now.clone();
    older.written_at = "2026-11-26T11:00:00Z".parse().unwrap();
    let e = keys
        .apply_delta(&older.delta_bytes(&changed), "d")
        .unwrap_err();
    assert!(e.contains("older"), "{e}");
    assert_eq!(keys, Snapshot::parse(&stored.to_bytes(), KEY).unwrap());

    // A snapshot is no delta, and a delta is checked as strictly as a snapshot.
    let e = keys.apply_delta(&stored.to_bytes(), "d").unwrap_err();
    assert!(e.contains("applies to snapshot"), "{e}");
    let t = text(&delta).replacen("\"h-000002\"", "\"h-00000!\"", 1);
    let e = keys.apply_delta(&encode(&t), "d").unwrap_err();
    assert!(e.contains("line 1"), "{e}");
}
