//! The reporter's change feed (decision 28) on a real SeaweedFS server that enforces
//! IAM, fed by real `fleet-agent once` processes, each under its own host's scoped
//! IAM user, and read by the reporter under its own scoped user.
//!
//! The fleet is four real agents (real Nix, one chroot store each) plus synthetic
//! hosts written by the admin, so that a handful of reporting hosts stays under the
//! feed's one-host-in-ten bound. The reporter's requests go through the counting
//! proxy (`fleet_tests::proxy`), so what a feed refresh costs is counted on the wire,
//! not taken from the reporter's own stats.
//!
//! After a full refresh: two agents report a new generation (their markers name
//! them), a third reports but its markers are lost (deleted by the admin), and the
//! admin forges markers for a real host and a synthetic host that did not report.
//! The next refresh reads the feed: no listing of `status/` or `hosts/`, HEADs only
//! for the hosts the markers name, the two reports shown exactly, the forged markers
//! change nothing shown, the host without a marker still shows its old state. A
//! refresh that lists the whole fleet (the next full listing) then shows that host's
//! new state too.

mod agent_common;

use std::collections::BTreeSet;
use std::time::Duration;

use agent_common::World;
use fleet_core::iam::Role;
use fleet_core::status::AgentState;
use fleet_core::{Bucket, HostName, Key, KeyPrefix, TrustedKeys};
use fleet_reporter::config::ReporterOptions;
use fleet_reporter::outcome::{HostRow, HostState};
use fleet_reporter::{Reporter, synth};
use fleet_tests::proxy::{Requests, counting_proxy};
use fleet_tests::s3::open_bucket_at;
use jiff::{SignedDuration, Timestamp};

/// Real agents.
const AGENTS: usize = 4;
/// Synthetic hosts besides them: 60 hosts in all, so a feed refresh may ask about 6.
const SYNTHETIC: usize = 56;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Every change-feed marker in the bucket, as the admin lists it.
fn markers(rt: &tokio::runtime::Runtime, admin: &Bucket) -> Vec<(HostName, Timestamp)> {
    rt.block_on(admin.list(&KeyPrefix::changes()))
        .unwrap()
        .iter()
        .filter_map(|i| Key::change_marker_host(&i.key))
        .collect()
}

/// Deletes the markers of `host` (every host when `None`) as the admin.
fn delete_markers(rt: &tokio::runtime::Runtime, admin: &Bucket, host: Option<&HostName>) {
    for (h, t) in markers(rt, admin) {
        if host.is_none_or(|want| *want == h) {
            rt.block_on(admin.delete(&Key::change_marker(t, &h)))
                .unwrap();
        }
    }
}

fn row<'a>(fleet: &'a fleet_reporter::fleet::Fleet, host: &HostName) -> &'a HostRow {
    fleet
        .host(host)
        .unwrap_or_else(|| panic!("{host} is not on the dashboard"))
}

/// The generation a row's status says the host runs.
fn current(r: &HostRow) -> Option<u64> {
    r.report
        .as_ref()
        .and_then(|s| s.current.as_ref())
        .and_then(|g| g.sequence)
}

/// The requests of one refresh that list the bucket (`GET /<bucket>` with a query,
/// which the proxy drops) and the keys it sent HEAD for, but the reporter's own
/// `dashboard/` objects.
fn split_requests(seen: &[String], bucket: &str) -> (usize, BTreeSet<String>) {
    let list_paths = [format!("GET /{bucket}"), format!("GET /{bucket}/")];
    let lists = seen.iter().filter(|r| list_paths.contains(r)).count();
    let heads = seen
        .iter()
        .filter_map(|r| r.strip_prefix(&format!("HEAD /{bucket}/")))
        .filter(|k| !k.starts_with("dashboard/"))
        .map(str::to_owned)
        .collect();
    (lists, heads)
}

#[test]
fn a_feed_refresh_shows_exactly_what_real_agents_reported_and_forged_markers_change_nothing() {
    let rt = runtime();
    let (server, bucket_name, admin, first_creds) =
        agent_common::seaweedfs_bucket("reporter-feed", "feed-0");
    let direct = format!(
        "s3://{bucket_name}?endpoint={}&region=us-east-1",
        server.endpoint()
    );

    // Four real hosts, each with its own IAM user; one publisher and one cache key for
    // all (the fixture closures share store paths, so their narinfos must be signed
    // alike).
    let mut worlds: Vec<World> = Vec::new();
    for i in 0..AGENTS {
        let host = format!("feed-{i}");
        let creds = if i == 0 {
            first_creds.clone()
        } else {
            let role = Role::Agent(HostName::new(&host).unwrap());
            rt.block_on(server.user_for(&role, &bucket_name, ""))
                .unwrap()
        };
        let mut w = World::s3(&host, &direct, admin.clone(), &creds);
        if let Some(w0) = worlds.first() {
            w.publisher = w0.publisher.clone();
            w.cache_secret_file = w0.cache_secret_file.clone();
            w.cache_public = w0.cache_public.clone();
        }
        let g1 = w.system("1", 0);
        w.bring_up(1, &g1);
        worlds.push(w);
    }
    let host = |i: usize| worlds[i].host.clone();
    // The agents wrote their markers with their statuses.
    let marked: BTreeSet<HostName> = markers(&rt, &admin).into_iter().map(|m| m.0).collect();
    assert_eq!(marked, (0..AGENTS).map(host).collect());

    let publisher = worlds[0].publisher.clone();
    rt.block_on(synth::populate(
        &admin,
        &publisher,
        SYNTHETIC,
        Timestamp::now(),
        16,
    ))
    .unwrap();

    // The reporter, under its own scoped user, through the counting proxy.
    let reporter_creds = rt
        .block_on(server.user_for(&Role::Reporter, &bucket_name, ""))
        .unwrap();
    let requests = Requests::default();
    let port = counting_proxy(
        server.endpoint().trim_start_matches("http://"),
        requests.clone(),
    )
    .unwrap();
    let reporter_bucket = open_bucket_at(
        &format!("http://127.0.0.1:{port}"),
        &bucket_name,
        "",
        &reporter_creds,
    )
    .unwrap();
    let options = ReporterOptions {
        trusted: TrustedKeys::new([publisher.public()]),
        cache_ttl: Duration::ZERO,
        ..Default::default()
    };
    let reporter = Reporter::new(reporter_bucket.clone(), options.clone());

    let before = rt.block_on(reporter.refresh()).unwrap();
    assert_eq!(before.stats.listing, "full");
    assert_eq!(before.stats.snapshot_write, "written");
    assert_eq!(before.hosts.len(), AGENTS + SYNTHETIC);
    for i in 0..AGENTS {
        let r = row(&before, &host(i));
        assert_eq!(
            (r.state, current(r)),
            (HostState::UpToDate, Some(1)),
            "{r:?}"
        );
    }
    let (full_lists, _) = split_requests(&requests.take(), &bucket_name);
    assert!(
        full_lists >= 3,
        "a full refresh lists status/, hosts/ and the registry"
    );
    // The markers the full listing has seen are cleared (as an admin's clean-up of old
    // day folders would), so what follows is all the feed has to go on.
    delete_markers(&rt, &admin, None);

    // feed-1 and feed-2 move to generation 2 and report it (markers written).
    for i in [1, 2] {
        let g2 = worlds[i].system("2", 0);
        worlds[i].deploy(2, &g2);
        let r = worlds[i].once_expect(0);
        assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
    }
    // feed-3 does too, but its marker is lost.
    let g2 = worlds[3].system("2", 0);
    worlds[3].deploy(2, &g2);
    let r = worlds[3].once_expect(0);
    assert_eq!(r.report.state, AgentState::Healthy, "{}", r.stderr);
    delete_markers(&rt, &admin, Some(&host(3)));
    // Forged markers for hosts that did not report: a real one and a synthetic one.
    let synthetic = synth::host_name(5);
    let forged_at = Timestamp::now();
    for h in [host(0), synthetic.clone()] {
        rt.block_on(admin.put(&Key::change_marker(forged_at, &h), Vec::new()))
            .unwrap();
    }
    let named: BTreeSet<HostName> = markers(&rt, &admin).into_iter().map(|m| m.0).collect();
    assert_eq!(
        named,
        [host(0), host(1), host(2), synthetic.clone()]
            .into_iter()
            .collect()
    );

    // The feed refresh.
    let after = rt.block_on(reporter.refresh()).unwrap();
    let seen = requests.take();
    assert_eq!(after.stats.listing, "feed", "requests: {seen:#?}");
    assert_eq!(after.stats.markers, named.len());
    let (lists, heads) = split_requests(&seen, &bucket_name);
    // One LIST of changes/ and the registry's: no listing of status/ or hosts/.
    assert_eq!(lists, 2, "requests: {seen:#?}");
    let want_heads: BTreeSet<String> = named
        .iter()
        .flat_map(|h| [Key::status(h), Key::manifest(h), Key::hold(h)])
        .map(|k| k.as_str().to_owned())
        .collect();
    assert_eq!(
        heads, want_heads,
        "HEADs only for the hosts the markers name"
    );
    // Only the two reports were read again: a status and a manifest each.
    let mut gets: Vec<&str> = seen
        .iter()
        .filter_map(|r| r.strip_prefix(&format!("GET /{bucket_name}/")))
        .filter(|k| !k.starts_with("dashboard/"))
        .collect();
    gets.sort();
    let mut want_gets: Vec<String> = [1, 2]
        .iter()
        .flat_map(|i| [Key::manifest(&host(*i)), Key::status(&host(*i))])
        .map(|k| k.as_str().to_owned())
        .collect();
    want_gets.sort();
    assert_eq!(gets, want_gets, "requests: {seen:#?}");

    // Exactly the new states.
    for i in [1, 2] {
        let r = row(&after, &host(i));
        assert_eq!(
            (r.state, current(r)),
            (HostState::UpToDate, Some(2)),
            "{r:?}"
        );
        assert_eq!(r.desired.as_ref().and_then(|g| g.sequence), Some(2));
        assert!(r.last_seen > row(&before, &host(i)).last_seen);
    }
    // Forged markers and the host whose marker was lost: shown as before, field for
    // field; so is every host nobody touched.
    for h in before.hosts.iter().map(|r| &r.host) {
        if [host(1), host(2)].contains(h) {
            continue;
        }
        assert_eq!(
            format!("{:?}", row(&after, h)),
            format!("{:?}", row(&before, h)),
            "{h} changed on the dashboard"
        );
    }
    assert_eq!(after.hosts.len(), before.hosts.len());

    // The next full listing (a reporter that lists in full on every refresh, starting
    // from the stored snapshot) catches feed-3.
    let full = Reporter::new(
        reporter_bucket,
        ReporterOptions {
            full_listing_every: SignedDuration::ZERO,
            ..options
        },
    );
    let caught = rt.block_on(full.refresh()).unwrap();
    assert_eq!(caught.stats.listing, "full");
    let r = row(&caught, &host(3));
    assert_eq!(
        (r.state, current(r)),
        (HostState::UpToDate, Some(2)),
        "{r:?}"
    );
    for i in [0, 1, 2] {
        let r = row(&caught, &host(i));
        let want = if i == 0 { 1 } else { 2 };
        assert_eq!(
            (r.state, current(r)),
            (HostState::UpToDate, Some(want)),
            "{r:?}"
        );
    }
    assert_eq!(
        format!("{:?}", row(&caught, &synthetic)),
        format!("{:?}", row(&before, &synthetic))
    );
}
