//! `fleet-publish renew` and `rollback` seen by a real `fleet-agent once` on a
//! `file://` bucket with real Nix (a chroot store per host):
//!
//! - a renewal of the closure the host runs is accepted (its sequence recorded)
//!   without switching;
//! - deploy g1, deploy g2, rollback: the host runs g1 again, switched once more.

mod agent_common;

use agent_common::World;
use fleet_core::keys::SecretKey;
use fleet_core::nixcli::Nix as CoreNix;
use fleet_core::status::AgentState;
use fleet_publish::renew::{RenewSettings, renew};
use fleet_publish::rollback::{RollbackSettings, apply, plan};
use fleet_publish::{DeploySettings, DeployTarget, PushSettings, deploy};
use fleet_tests::nix::Closure;

fn publish(w: &World, closure: &Closure) {
    let cache = SecretKey::load(&w.cache_secret_file).unwrap();
    let settings = DeploySettings {
        push: PushSettings {
            jobs: 2,
            ..PushSettings::default()
        },
        expires_in: w.expires_in,
        ..DeploySettings::default()
    };
    let target = DeployTarget {
        host: w.host.clone(),
        closure: closure.top.clone(),
    };
    w.block_on(deploy(
        &w.bucket,
        &CoreNix::default_store(),
        &cache,
        &w.publisher,
        &[target],
        &settings,
    ))
    .unwrap();
}

#[test]
fn renewals_do_not_switch_and_rollback_switches_back() {
    let w = World::new("web-1");
    let g1 = w.system("ops-1", 0);
    let g2 = w.system("ops-2", 0);
    publish(&w, &g1);
    let r = w.once_expect(0);
    assert_eq!(r.report.state, AgentState::Healthy);
    assert_eq!(w.activated(), std::slice::from_ref(&g1.top));

    // The world's manifests last a day, inside renew's default window of two.
    let report = w
        .block_on(renew(
            &w.bucket,
            &w.publisher,
            std::slice::from_ref(&w.host),
            &RenewSettings::default(),
        ))
        .unwrap();
    assert_eq!(report.renewed.len(), 1);
    assert_eq!(report.renewed[0].sequence, 2);
    let r = w.once_expect(0);
    assert_eq!(r.report.state, AgentState::Healthy);
    let current = r.report.current.clone().unwrap();
    assert_eq!((current.sequence, &current.closure), (Some(2), &g1.top));
    assert_eq!(
        w.activated(),
        std::slice::from_ref(&g1.top),
        "a renewal does not switch"
    );
    assert_eq!(w.state().highest_seen.unwrap().sequence, 2);

    publish(&w, &g2);
    w.once_expect(0);
    assert_eq!(w.activated(), [g1.top.clone(), g2.top.clone()]);

    let settings = RollbackSettings::default();
    let plans = w
        .block_on(plan(
            &w.bucket,
            &w.publisher,
            std::slice::from_ref(&w.host),
            &settings,
        ))
        .unwrap();
    assert_eq!(plans[0].to_closure, g1.top);
    let out = w
        .block_on(apply(&w.bucket, &w.publisher, &plans, &settings))
        .unwrap();
    assert_eq!(out[0].sequence, 4);
    let r = w.once_expect(0);
    assert_eq!(r.report.state, AgentState::Healthy);
    let current = r.report.current.clone().unwrap();
    assert_eq!((current.sequence, &current.closure), (Some(4), &g1.top));
    assert_eq!(
        w.activated(),
        [g1.top.clone(), g2.top.clone(), g1.top.clone()]
    );
    assert_eq!(w.profile_target(), Some(g1.top.clone()));
}
