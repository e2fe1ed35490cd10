//! The IAM matrix: what each role's credentials may do in the bucket, proved on real
//! IAM-enforcing servers (SeaweedFS and moto) through `fleet_core::Bucket` only, with
//! the policy text of `fleet_core::iam` attached to real IAM users.
//!
//! [`MATRIX`] lists every (who, operation, key, expected) cell. The bucket is seeded
//! by the admin with every key the table names, under the root prefix [`SITE`] (and
//! [`OTHER_SITE`], to prove the policies do not reach past their root prefix); then
//! each cell runs with the role's own credentials and is checked for its effect, not
//! only its answer:
//!
//! - `Allow` read: the bytes are the seeded ones; write: the admin reads the new
//!   bytes back; list: the listing holds the seeded keys under that prefix;
//! - `Deny`: `BucketError::AccessDenied` whose message starts "access denied for key
//!   <key>", and a denied write or delete left the object as it was;
//! - `Missing`: the key is not seeded and the read is `BucketError::NotFound`.
//!
//! The test fails with a list of every cell that differs.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use fleet_core::bucket::BucketError;
use fleet_core::iam::Role;
use fleet_core::{Bucket, HostName, Key, KeyPrefix, ObjectName, S3Credentials};
use fleet_tests::s3::{S3Server, ServerKind};

/// Root prefix the policies are made for.
const SITE: &str = "site-1";
/// Another root prefix in the same bucket, which no policy grants.
const OTHER_SITE: &str = "site-2";

/// Whose credentials, on which root prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    /// host-a's agent on [`SITE`].
    AgentA,
    /// host-a's agent credentials used on [`OTHER_SITE`].
    AgentAOtherSite,
    /// The publisher on [`SITE`].
    Publisher,
    /// The reporter on [`SITE`].
    Reporter,
    /// The admin role on [`SITE`].
    Admin,
    /// The read-only viewer on [`SITE`].
    Viewer,
    /// An access key the server does not know.
    Stranger,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Read,
    /// `Bucket::head` (HEAD: a 403 there has no body to name the error).
    Head,
    Write,
    Delete,
    List,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Allow,
    Deny,
    /// Not seeded; the read answers "does not exist".
    Missing,
}

/// Where a cell applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum On {
    /// Every server.
    All,
    /// Only servers that evaluate policy `Condition`s: the list permissions are
    /// scoped with `s3:prefix` conditions, and moto ignores conditions (it lets any
    /// role with `s3:ListBucket` list every prefix), so these cells are skipped there.
    Conditions,
}

use Expect::*;
use Op::*;
use Who::*;

#[rustfmt::skip]
const MATRIX: &[(Who, Op, &str, Expect, On)] = &[
    // host-a's agent: read its manifest and the cache, write its status; nothing else.
    (AgentA, Read,   "hosts/host-a/manifest.json",         Allow,   On::All),
    (AgentA, Read,   "cache/nix-cache-info",               Allow,   On::All),
    (AgentA, Read,   "cache/nar/fixture.nar.zst",          Allow,   On::All),
    (AgentA, Head,   "cache/nar/fixture.nar.zst",          Allow,   On::All),
    (AgentA, Write,  "status/host-a/status.json",          Allow,   On::All),
    (AgentA, Write,  "status/host-a/events/e-1.json",      Allow,   On::All),
    (AgentA, Read,   "hosts/host-b/manifest.json",         Deny,    On::All),
    (AgentA, Read,   "hosts/host-ab/manifest.json",        Deny,    On::All),
    (AgentA, Head,   "hosts/host-b/manifest.json",         Deny,    On::All),
    (AgentA, Read,   "status/host-a/status.json",          Deny,    On::All),
    (AgentA, Read,   "status/host-b/status.json",          Deny,    On::All),
    (AgentA, Read,   "releases/r-1.json",                  Deny,    On::All),
    (AgentA, Read,   "audit/a-1.json",                     Deny,    On::All),
    (AgentA, Read,   "dashboard/snapshot.json",             Deny,    On::All),
    (AgentA, Write,  "status/host-b/status.json",          Deny,    On::All),
    (AgentA, Write,  "status/host-ab/status.json",         Deny,    On::All),
    (AgentA, Write,  "cache/nix-cache-info",               Deny,    On::All),
    (AgentA, Write,  "cache/nar/fixture.nar.zst",          Deny,    On::All),
    (AgentA, Write,  "hosts/host-a/manifest.json",         Deny,    On::All),
    (AgentA, Write,  "hosts/host-b/manifest.json",         Deny,    On::All),
    (AgentA, Write,  "releases/r-1.json",                  Deny,    On::All),
    (AgentA, Write,  "audit/a-1.json",                     Deny,    On::All),
    (AgentA, Write,  "dashboard/snapshot.json",             Deny,    On::All),
    (AgentA, Delete, "hosts/host-a/manifest.json",         Deny,    On::All),
    (AgentA, Delete, "status/host-a/status.json",          Deny,    On::All),
    (AgentA, Delete, "cache/nix-cache-info",               Deny,    On::All),
    (AgentA, List,   "cache/",                             Deny,    On::All),
    (AgentA, List,   "hosts/",                             Deny,    On::All),
    (AgentA, List,   "status/",                            Deny,    On::All),
    (AgentA, List,   "status/host-a/events/",              Deny,    On::All),
    (AgentA, List,   "releases/",                          Deny,    On::All),
    (AgentA, List,   "audit/",                             Deny,    On::All),
    // These servers reveal absence to a principal that may read the key but not list
    // the bucket (AWS would answer 403 here).
    (AgentA, Read,   "cache/nar/absent.nar.zst",           Missing, On::All),
    (AgentA, Head,   "cache/nar/absent.nar.zst",           Missing, On::All),
    // The agent's grants stop at its root prefix.
    (AgentAOtherSite, Read,  "hosts/host-a/manifest.json", Deny,    On::All),
    (AgentAOtherSite, Read,  "cache/nix-cache-info",       Deny,    On::All),
    (AgentAOtherSite, Write, "status/host-a/status.json",  Deny,    On::All),
    // The publisher: read and write cache, hosts, releases, audit; read status; list
    // those; never write status or dashboard, never delete.
    (Publisher, Read,   "cache/nix-cache-info",            Allow,   On::All),
    (Publisher, Write,  "cache/nar/fixture.nar.zst",       Allow,   On::All),
    (Publisher, Write,  "hosts/host-a/manifest.json",      Allow,   On::All),
    (Publisher, Write,  "hosts/host-b/manifest.json",      Allow,   On::All),
    (Publisher, Write,  "releases/r-1.json",               Allow,   On::All),
    (Publisher, Write,  "audit/a-1.json",                  Allow,   On::All),
    (Publisher, Read,   "hosts/host-b/manifest.json",      Allow,   On::All),
    (Publisher, Read,   "releases/r-1.json",               Allow,   On::All),
    (Publisher, Read,   "audit/a-1.json",                  Allow,   On::All),
    (Publisher, Read,   "status/host-a/status.json",       Allow,   On::All),
    (Publisher, List,   "cache/",                          Allow,   On::All),
    (Publisher, List,   "hosts/",                          Allow,   On::All),
    (Publisher, List,   "releases/",                       Allow,   On::All),
    (Publisher, List,   "audit/",                          Allow,   On::All),
    (Publisher, List,   "status/",                         Allow,   On::All),
    (Publisher, Write,  "status/host-a/status.json",       Deny,    On::All),
    (Publisher, Write,  "status/host-a/events/e-1.json",   Deny,    On::All),
    (Publisher, Write,  "dashboard/snapshot.json",          Deny,    On::All),
    (Publisher, Read,   "dashboard/snapshot.json",          Deny,    On::All),
    (Publisher, Delete, "hosts/host-a/manifest.json",      Deny,    On::All),
    (Publisher, Delete, "cache/nix-cache-info",            Deny,    On::All),
    (Publisher, Delete, "audit/a-1.json",                  Deny,    On::All),
    // The reporter: read status, hosts, releases, dashboard, registry; write only dashboard.
    (Reporter, Read,   "status/host-a/status.json",        Allow,   On::All),
    (Reporter, Read,   "status/host-b/status.json",        Allow,   On::All),
    (Reporter, Read,   "hosts/host-a/manifest.json",       Allow,   On::All),
    (Reporter, Read,   "releases/r-1.json",                Allow,   On::All),
    (Reporter, Read,   "dashboard/snapshot.json",           Allow,   On::All),
    (Reporter, Write,  "dashboard/snapshot.json",           Allow,   On::All),
    (Reporter, List,   "status/",                          Allow,   On::All),
    (Reporter, List,   "status/host-a/events/",            Allow,   On::All),
    (Reporter, List,   "hosts/",                           Allow,   On::All),
    (Reporter, List,   "releases/",                        Allow,   On::All),
    (Reporter, Read,   "registry/hosts/host-a.json",       Allow,   On::All),
    (Reporter, List,   "registry/hosts/",                  Allow,   On::All),
    (Reporter, Write,  "registry/hosts/host-a.json",       Deny,    On::All),
    (AgentA,   Write,  "registry/hosts/host-a.json",       Deny,    On::All),
    (Reporter, Read,   "cache/nix-cache-info",             Deny,    On::All),
    (Reporter, Read,   "audit/a-1.json",                   Deny,    On::All),
    (Reporter, Write,  "status/host-a/status.json",        Deny,    On::All),
    (Reporter, Write,  "hosts/host-a/manifest.json",       Deny,    On::All),
    (Reporter, Write,  "releases/r-1.json",                Deny,    On::All),
    (Reporter, Write,  "cache/nix-cache-info",             Deny,    On::All),
    (Reporter, Write,  "audit/a-1.json",                   Deny,    On::All),
    (Reporter, Delete, "status/host-a/status.json",        Deny,    On::All),
    (Reporter, Delete, "dashboard/snapshot.json",           Deny,    On::All),
    (Reporter, List,   "cache/",                           Deny,    On::Conditions),
    (Reporter, List,   "audit/",                           Deny,    On::Conditions),
    // The admin: what the publisher may, and delete under hosts, status, cache and
    // releases; never the audit trail, never the dashboard.
    (Admin, Read,   "cache/nix-cache-info",                Allow,   On::All),
    (Admin, Write,  "hosts/host-a/manifest.json",          Allow,   On::All),
    (Admin, Write,  "hosts/host-a/hold.json",              Allow,   On::All),
    (Admin, Write,  "audit/a-2.json",                      Allow,   On::All),
    (Admin, Read,   "status/host-a/status.json",           Allow,   On::All),
    (Admin, List,   "hosts/",                              Allow,   On::All),
    (Admin, List,   "status/",                             Allow,   On::All),
    (Admin, List,   "cache/",                              Allow,   On::All),
    (Admin, Delete, "hosts/host-b/manifest.json",          Allow,   On::All),
    (Admin, Delete, "hosts/host-b/hold.json",              Allow,   On::All),
    (Admin, Delete, "status/host-b/status.json",           Allow,   On::All),
    (Admin, Delete, "status/host-b/events/e-9.json",       Allow,   On::All),
    (Admin, Delete, "cache/nar/garbage.nar.zst",           Allow,   On::All),
    (Admin, Delete, "releases/r-9.json",                   Allow,   On::All),
    (Admin, Delete, "audit/a-1.json",                      Deny,    On::All),
    (Admin, Delete, "dashboard/snapshot.json",              Deny,    On::All),
    (Admin, Write,  "status/host-a/status.json",           Deny,    On::All),
    (Admin, Write,  "dashboard/snapshot.json",              Deny,    On::All),
    // The viewer reads what the dashboard shows and changes nothing.
    (Viewer, Read,   "status/host-a/status.json",          Allow,   On::All),
    (Viewer, Read,   "hosts/host-a/manifest.json",         Allow,   On::All),
    (Viewer, Read,   "hosts/host-a/hold.json",             Allow,   On::All),
    (Viewer, Read,   "releases/r-1.json",                  Allow,   On::All),
    (Viewer, Read,   "dashboard/snapshot.json",             Allow,   On::All),
    (Viewer, List,   "status/",                            Allow,   On::All),
    (Viewer, List,   "hosts/",                             Allow,   On::All),
    (Viewer, Read,   "cache/nix-cache-info",               Deny,    On::All),
    (Viewer, Read,   "audit/a-1.json",                     Deny,    On::All),
    (Viewer, Write,  "hosts/host-a/manifest.json",         Deny,    On::All),
    (Viewer, Write,  "hosts/host-a/hold.json",             Deny,    On::All),
    (Viewer, Write,  "status/host-a/status.json",          Deny,    On::All),
    (Viewer, Write,  "dashboard/snapshot.json",             Deny,    On::All),
    (Viewer, Delete, "status/host-a/status.json",          Deny,    On::All),
    (Viewer, Delete, "hosts/host-a/manifest.json",         Deny,    On::All),
    (Viewer, List,   "cache/",                             Deny,    On::Conditions),
    (Viewer, List,   "audit/",                             Deny,    On::Conditions),
    // The root of trust: agents read it; only the admin writes it.
    (AgentA,    Read,   "trust/root.json",                 Allow,   On::All),
    (AgentA,    Read,   "trust/2.root.json",               Allow,   On::All),
    (AgentA,    Write,  "trust/root.json",                 Deny,    On::All),
    (Publisher, Write,  "trust/2.root.json",               Deny,    On::All),
    (Reporter,  Write,  "trust/root.json",                 Deny,    On::All),
    (Admin,     Write,  "trust/3.root.json",               Allow,   On::All),
    (Admin,     Write,  "trust/root.json",                 Allow,   On::All),
    (Viewer,    Write,  "trust/root.json",                 Deny,    On::All),
    // The host registry: the admin writes it (`enroll`), the dashboard reads it.
    (Admin,     Write,  "registry/hosts/host-b.json",      Allow,   On::All),
    (Publisher, Write,  "registry/hosts/host-b.json",      Deny,    On::All),
    (AgentA,    Write,  "registry/hosts/host-a.json",      Deny,    On::All),
    (Viewer,    Read,   "registry/hosts/host-a.json",      Allow,   On::All),
    (Viewer,    Write,  "registry/hosts/host-a.json",      Deny,    On::All),
    // A rollout's state sits beside its release: the publisher moves it on, the
    // dashboard reads it, agents never see it.
    (Publisher, Write,  "releases/r-1/rollout.json",       Allow,   On::All),
    (Reporter,  Read,   "releases/r-1/rollout.json",       Allow,   On::All),
    (Viewer,    Read,   "releases/r-1/rollout.json",       Allow,   On::All),
    (AgentA,    Read,   "releases/r-1/rollout.json",       Deny,    On::All),
    // The signed audit chain: publishers append, nobody deletes.
    (Publisher, Write,  "audit/chain/00000000000000000007.json", Allow, On::All),
    (Admin,     Delete, "audit/chain/00000000000000000001.json", Deny,  On::All),
    (Publisher, Delete, "audit/chain/00000000000000000001.json", Deny,  On::All),
    (Reporter,  Read,   "audit/chain/00000000000000000001.json", Deny,  On::All),
    // The change feed: a host writes only its own markers and reads nothing there;
    // the reporter lists the markers but reads and writes none; the admin cleans up.
    (AgentA,    Write,  "changes/20261203/043105/host-a",  Allow,   On::All),
    (AgentA,    Write,  "changes/20261203/043106/host-b",  Deny,    On::All),
    (AgentA,    Write,  "changes/20261203/043107/host-ab", Deny,    On::All),
    (AgentA,    Read,   "changes/20261203/043108/host-a",  Deny,    On::All),
    (AgentA,    List,   "changes/",                        Deny,    On::All),
    (Reporter,  List,   "changes/",                        Allow,   On::All),
    (Reporter,  Read,   "changes/20261203/043109/host-a",  Deny,    On::All),
    (Reporter,  Write,  "changes/20261203/043110/host-a",  Deny,    On::All),
    (Reporter,  Delete, "changes/20261203/043111/host-a",  Deny,    On::All),
    (Publisher, Write,  "changes/20261203/043112/host-a",  Deny,    On::All),
    (Viewer,    Write,  "changes/20261203/043113/host-a",  Deny,    On::All),
    (Admin,     List,   "changes/",                        Allow,   On::All),
    (Admin,     Delete, "changes/20261203/043114/host-b",  Allow,   On::All),
    // Unknown credentials get nothing.
    (Stranger, Read,   "cache/nix-cache-info",             Deny,    On::All),
    (Stranger, Write,  "status/host-a/status.json",        Deny,    On::All),
    (Stranger, List,   "cache/",                           Deny,    On::All),
];

fn host(name: &str) -> HostName {
    HostName::new(name).expect("matrix host names are valid")
}

fn name(n: &str) -> ObjectName {
    ObjectName::new(n).expect("matrix object names are valid")
}

/// The `Key` for a matrix key, built with the layout's own constructors.
fn key(text: &str) -> Key {
    let parts: Vec<&str> = text.split('/').collect();
    let k = match parts.as_slice() {
        ["hosts", h, "manifest.json"] => Key::manifest(&host(h)),
        ["hosts", h, "hold.json"] => Key::hold(&host(h)),
        ["status", h, "status.json"] => Key::status(&host(h)),
        ["status", h, "events", e] => {
            Key::status_event(&host(h), &name(e.trim_end_matches(".json")))
        }
        ["cache", "nix-cache-info"] => Key::cache_info(),
        ["cache", "nar", n] => Key::nar(&format!("nar/{n}")).expect("valid NAR name"),
        ["releases", r] => Key::release(&name(r.trim_end_matches(".json"))),
        ["audit", a] => Key::audit(&name(a.trim_end_matches(".json"))),
        ["dashboard", "snapshot.json"] => Key::dashboard_snapshot(),
        ["registry", "hosts", h] => Key::registry_host(&host(h.trim_end_matches(".json"))),
        ["trust", "root.json"] => Key::trust_root(),
        ["trust", v] => Key::trust_root_version(
            v.trim_end_matches(".root.json")
                .parse()
                .expect("matrix root versions are numbers"),
        ),
        ["releases", r, "rollout.json"] => Key::rollout(&name(r)),
        ["changes", _, _, _] => {
            let (h, at) = Key::change_marker_host(text).expect("matrix markers parse");
            Key::change_marker(at, &h)
        }
        ["audit", "chain", i] => Key::audit_chain(
            i.trim_end_matches(".json")
                .parse()
                .expect("matrix audit indices are numbers"),
        ),
        _ => panic!("matrix key {text:?} has no layout constructor; add it to key()"),
    };
    assert_eq!(k.as_str(), text, "key() builds the key the table names");
    k
}

/// The `KeyPrefix` for a matrix prefix.
fn prefix(text: &str) -> KeyPrefix {
    let p = match text {
        "cache/" => KeyPrefix::cache(),
        "hosts/" => KeyPrefix::hosts(),
        "status/" => KeyPrefix::status(),
        "releases/" => KeyPrefix::releases(),
        "audit/" => KeyPrefix::audit(),
        "registry/hosts/" => KeyPrefix::registry_hosts(),
        "status/host-a/events/" => KeyPrefix::status_events(&host("host-a")),
        "changes/" => KeyPrefix::changes(),
        _ => panic!("matrix prefix {text:?} has no layout constructor; add it to prefix()"),
    };
    assert_eq!(
        p.as_str(),
        text,
        "prefix() builds the prefix the table names"
    );
    p
}

fn seeded_bytes(site: &str, key: &str) -> String {
    format!("seeded {site}/{key}")
}

/// Bucket handles for each `Who`, plus the admin's on both sites.
struct Views {
    admin_site: Bucket,
    admin_other: Bucket,
    agent_a: Bucket,
    agent_a_other: Bucket,
    publisher: Bucket,
    reporter: Bucket,
    admin: Bucket,
    viewer: Bucket,
    stranger: Bucket,
}

impl Views {
    fn of(&self, who: Who) -> &Bucket {
        match who {
            AgentA => &self.agent_a,
            AgentAOtherSite => &self.agent_a_other,
            Publisher => &self.publisher,
            Reporter => &self.reporter,
            Admin => &self.admin,
            Viewer => &self.viewer,
            Stranger => &self.stranger,
        }
    }

    /// The admin's view of the site `who` works on.
    fn admin_for(&self, who: Who) -> &Bucket {
        match who {
            AgentAOtherSite => &self.admin_other,
            _ => &self.admin_site,
        }
    }
}

fn site_of(who: Who) -> &'static str {
    if who == AgentAOtherSite {
        OTHER_SITE
    } else {
        SITE
    }
}

async fn setup(server: &S3Server) -> Result<Views> {
    let b = server.new_bucket("iam-matrix").await?;
    let admin = server.admin_credentials();
    let agent = server
        .user_for(&Role::Agent(host("host-a")), &b, SITE)
        .await?;
    let publisher = server.user_for(&Role::Publisher, &b, SITE).await?;
    let reporter = server.user_for(&Role::Reporter, &b, SITE).await?;
    let admin_role = server.user_for(&Role::Admin, &b, SITE).await?;
    let viewer = server.user_for(&Role::Viewer, &b, SITE).await?;
    let stranger = S3Credentials {
        access_key_id: "AKIAFLEETSTRANGER000".into(),
        secret_access_key: "not-a-secret-this-server-knows".into(),
        session_token: None,
    };
    let views = Views {
        admin_site: server.bucket(&b, SITE, &admin)?,
        admin_other: server.bucket(&b, OTHER_SITE, &admin)?,
        agent_a: server.bucket(&b, SITE, &agent)?,
        agent_a_other: server.bucket(&b, OTHER_SITE, &agent)?,
        publisher: server.bucket(&b, SITE, &publisher)?,
        reporter: server.bucket(&b, SITE, &reporter)?,
        admin: server.bucket(&b, SITE, &admin_role)?,
        viewer: server.bucket(&b, SITE, &viewer)?,
        stranger: server.bucket(&b, SITE, &stranger)?,
    };
    // Seed every object a cell names (on the site its `who` works on), and one
    // object under every listed prefix.
    for (who, op, text, expect, _) in MATRIX {
        let site = site_of(*who);
        let admin = views.admin_for(*who);
        let texts: Vec<String> = match (op, expect) {
            (_, Missing) => vec![],
            (List, _) => vec![format!("{text}listed.json")],
            _ => vec![text.to_string()],
        };
        for t in texts {
            let k = if *op == List {
                listed_key(text)
            } else {
                key(&t)
            };
            admin
                .put(&k, seeded_bytes(site, k.as_str()))
                .await
                .with_context(|| format!("seeding {site}/{k} as admin"))?;
        }
    }
    Ok(views)
}

/// The object seeded under a listed prefix.
fn listed_key(prefix_text: &str) -> Key {
    match prefix_text {
        "cache/" => key("cache/nar/listed.nar.zst"),
        "hosts/" => key("hosts/listed/manifest.json"),
        "status/" => key("status/listed/status.json"),
        "status/host-a/events/" => key("status/host-a/events/listed.json"),
        "releases/" => key("releases/listed.json"),
        "audit/" => key("audit/listed.json"),
        "registry/hosts/" => key("registry/hosts/listed.json"),
        "changes/" => key("changes/20261203/000000/listed"),
        _ => panic!("no seeded object for prefix {prefix_text:?}; add it to listed_key()"),
    }
}

/// What a cell did, or why it is not what the table says.
async fn run_cell(views: &Views, i: usize, who: Who, op: Op, text: &str) -> Result<Expect, String> {
    const LIMIT: u64 = 1 << 20;
    let b = views.of(who);
    let admin = views.admin_for(who);
    let denied = |e: &BucketError, shown: &str| -> Result<Expect, String> {
        let msg = e.to_string();
        let want = format!("access denied for key {shown}");
        match e {
            BucketError::AccessDenied { .. } if msg.starts_with(&want) => Ok(Deny),
            BucketError::AccessDenied { .. } => Err(format!(
                "AccessDenied, but the message does not start with {want:?}: {msg}"
            )),
            other => Err(format!("error is not AccessDenied: {other:?}")),
        }
    };
    let admin_read = |k: Key| async move {
        admin
            .get(&k, LIMIT)
            .await
            .map(|o| String::from_utf8_lossy(&o.bytes).into_owned())
            .map_err(|e| format!("admin could not read {k} back: {e}"))
    };
    match op {
        Read => {
            let k = key(text);
            match b.get(&k, LIMIT).await {
                Ok(o) => {
                    let got = String::from_utf8_lossy(&o.bytes).into_owned();
                    let want = admin_read(k).await?;
                    if got == want {
                        Ok(Allow)
                    } else {
                        Err(format!("read {got:?}, but the object holds {want:?}"))
                    }
                }
                Err(BucketError::NotFound { .. }) => Ok(Missing),
                Err(e) => denied(&e, text),
            }
        }
        Head => {
            let k = key(text);
            match b.head(&k).await {
                Ok(Some(info)) => match admin.head(&k).await {
                    Ok(Some(want)) if want.size == info.size => Ok(Allow),
                    other => Err(format!("head says {info:?}, the admin sees {other:?}")),
                },
                Ok(None) => Ok(Missing),
                Err(e) => denied(&e, text),
            }
        }
        Write => {
            let k = key(text);
            let before = admin_read(k.clone()).await?;
            let new = format!("written by {who:?} in cell {i}");
            match b.put(&k, new.clone()).await {
                Ok(_) => {
                    let after = admin_read(k).await?;
                    if after == new {
                        Ok(Allow)
                    } else {
                        Err(format!("write answered OK but the object holds {after:?}"))
                    }
                }
                Err(e) => {
                    let outcome = denied(&e, text)?;
                    let after = admin_read(k).await?;
                    if after == before {
                        Ok(outcome)
                    } else {
                        Err(format!(
                            "write was refused but changed the object to {after:?}"
                        ))
                    }
                }
            }
        }
        Delete => {
            let k = key(text);
            match b.delete(&k).await {
                Ok(()) => match admin.head(&k).await {
                    Ok(None) => Ok(Allow),
                    Ok(Some(_)) => Err("delete answered OK but the object is still there".into()),
                    Err(e) => Err(format!("admin could not check {k}: {e}")),
                },
                Err(e) => {
                    let outcome = denied(&e, text)?;
                    match admin.head(&k).await {
                        Ok(Some(_)) => Ok(outcome),
                        Ok(None) => Err("delete was refused but the object is gone".into()),
                        Err(e) => Err(format!("admin could not check {k}: {e}")),
                    }
                }
            }
        }
        List => match b.list(&prefix(text)).await {
            Ok(items) => {
                let want = listed_key(text);
                if items.iter().any(|i| i.key == want.as_str()) {
                    Ok(Allow)
                } else {
                    let keys: Vec<_> = items.iter().map(|i| i.key.as_str()).collect();
                    Err(format!("listing lacks the seeded {want}: {keys:?}"))
                }
            }
            Err(e) => denied(&e, text),
        },
    }
}

async fn check_matrix(kind: ServerKind) -> Result<()> {
    let server = S3Server::shared(kind).await?;
    let views = setup(server).await?;
    let mut mismatches = String::new();
    let mut skipped = String::new();
    let mut ran = 0;
    for (i, (who, op, text, expect, on)) in MATRIX.iter().enumerate() {
        let row = format!("{who:?} {op:?} {text}");
        if *on == On::Conditions && !kind.enforces_conditions() {
            writeln!(
                skipped,
                "  {row:<52} (expected {expect:?}; {kind} ignores policy Conditions)"
            )?;
            continue;
        }
        ran += 1;
        match run_cell(&views, i, *who, *op, text).await {
            Ok(got) if got == *expect => {}
            Ok(got) => writeln!(mismatches, "  {row:<52} expected {expect:?}, got {got:?}")?,
            Err(why) => writeln!(mismatches, "  {row:<52} expected {expect:?}: {why}")?,
        }
    }
    if !skipped.is_empty() {
        println!("{kind}: skipped cells:\n{skipped}");
    }
    assert!(
        mismatches.is_empty(),
        "{kind} ({}): {} of {ran} IAM matrix cells differ from the table:\n{mismatches}server log: {} (kept if FLEET_KEEP_S3_DIRS=1)",
        server.endpoint(),
        mismatches.lines().count(),
        server.log_path().display()
    );
    println!("{kind}: all {ran} cells as the table says");
    Ok(())
}

#[tokio::test]
async fn iam_matrix_on_seaweedfs() -> Result<()> {
    check_matrix(ServerKind::SeaweedFs).await
}

#[tokio::test]
async fn iam_matrix_on_moto() -> Result<()> {
    check_matrix(ServerKind::Moto).await
}

#[test]
fn every_matrix_key_is_a_layout_key() {
    for (_, op, text, _, _) in MATRIX {
        if *op == List {
            prefix(text);
            listed_key(text);
        } else {
            key(text);
        }
    }
}
