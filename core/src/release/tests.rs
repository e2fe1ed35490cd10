use super::*;

fn h(s: &str) -> HostName {
    HostName::new(s).unwrap()
}

fn fleet(n: usize) -> BTreeSet<HostName> {
    (1..=n).map(|i| h(&format!("web-{i}"))).collect()
}

fn spec(select: Selector) -> WaveSpec {
    WaveSpec {
        select,
        soak_seconds: 0,
        budget: Budget::Hosts(0),
    }
}

fn release(waves: Vec<Wave>, hosts: &BTreeSet<HostName>) -> Release {
    let key = SecretKey::generate("cache-1").unwrap();
    Release {
        version: 1,
        id: "r-1".into(),
        created_at: "2026-12-02T21:25:00Z".parse().unwrap(),
        cache_keys: vec![key.public()],
        hosts: hosts
            .iter()
            .map(|x| {
                let c = StorePath::new("/nix/store/aql5kla6x8r78rrdfyxr471hbn3himl6-top").unwrap();
                (
                    x.clone(),
                    ReleaseHost {
                        closure: c,
                        activation: Activation::Switch,
                    },
                )
            })
            .collect(),
        plan: Plan {
            waves,
            budget: Budget::Percent(10),
            report_deadline_seconds: 600,
        },
    }
}

#[test]
fn globs_match_within_a_name() {
    assert!(glob_match("web-*", "web-12"));
    assert!(glob_match("*-1?", "db-12"));
    assert!(glob_match("*", "a"));
    assert!(!glob_match("web-?", "web-12"));
    assert!(!glob_match("db-*", "web-1"));
    assert!(glob_match("web-1", "web-1") && !glob_match("web-1", "web-10"));
}

#[test]
fn percent_waves_are_cumulative_in_the_stable_order() {
    let hosts = fleet(12);
    let waves = resolve_waves(
        &hosts,
        &[
            spec(Selector::Percent(25)),
            spec(Selector::Percent(50)),
            spec(Selector::Percent(100)),
        ],
    )
    .unwrap();
    assert_eq!(
        waves.iter().map(|w| w.hosts.len()).collect::<Vec<_>>(),
        [3, 3, 6]
    );
    let order = stable_order(hosts.iter().cloned());
    let mut first: Vec<HostName> = order[..3].to_vec();
    first.sort();
    assert_eq!(waves[0].hosts, first);
    // The order depends on names only: adding hosts keeps the others' relative order.
    let more = stable_order(fleet(20));
    let kept: Vec<&HostName> = more.iter().filter(|x| hosts.contains(*x)).collect();
    assert_eq!(kept, order.iter().collect::<Vec<_>>());
}

#[test]
fn named_then_rest() {
    let hosts = fleet(5);
    let waves = resolve_waves(
        &hosts,
        &[
            spec(Selector::Hosts(vec!["web-1".into(), "web-2".into()])),
            spec(Selector::Percent(100)),
        ],
    )
    .unwrap();
    assert_eq!(waves[0].hosts, [h("web-1"), h("web-2")]);
    assert_eq!(waves[1].hosts, [h("web-3"), h("web-4"), h("web-5")]);
    let r = release(waves, &hosts);
    r.check().unwrap();
    let key = SecretKey::generate("publisher-1").unwrap();
    let trusted = TrustedKeys::new([key.public()]);
    let v = Release::verify(&r.sign(&key), "r-1", &trusted).unwrap();
    assert_eq!(v.release, r);
    assert_eq!(r.wave_of(&h("web-4")), Some(1));
    assert!(matches!(
        Release::verify(&r.sign(&key), "r-2", &trusted),
        Err(ReleaseError::Malformed { .. })
    ));
}

#[test]
fn bad_plans_are_refused_with_their_reason() {
    let hosts = fleet(4);
    let e = resolve_waves(&hosts, &[spec(Selector::Hosts(vec!["db-*".into()]))]).unwrap_err();
    assert!(matches!(e, ReleaseError::UnknownHost { .. }), "{e}");
    assert!(e.to_string().contains("db-*"), "{e}");
    let e = resolve_waves(
        &hosts,
        &[
            spec(Selector::Hosts(vec!["web-1".into()])),
            spec(Selector::Hosts(vec!["web-*".into()])),
        ],
    )
    .unwrap_err();
    assert!(matches!(e, ReleaseError::TwoWaves { .. }), "{e}");
    let e = resolve_waves(&hosts, &[spec(Selector::Percent(50))]).unwrap_err();
    assert!(matches!(e, ReleaseError::Unplaced(_)), "{e}");
    let e = resolve_waves(
        &hosts,
        &[spec(Selector::Percent(50)), spec(Selector::Percent(40))],
    )
    .unwrap_err();
    assert!(matches!(e, ReleaseError::BadPercent { wave: 2, .. }), "{e}");
    let over = WaveSpec {
        budget: Budget::Percent(101),
        ..spec(Selector::Percent(100))
    };
    let e = resolve_waves(&hosts, &[over]).unwrap_err();
    assert!(e.to_string().contains("over 100%"), "{e}");
    assert!(resolve_waves(&hosts, &[]).is_err());
    assert!(resolve_waves(&BTreeSet::new(), &[spec(Selector::Percent(100))]).is_err());
    // A tampered host list is refused even with a good signature.
    let mut waves = resolve_waves(&hosts, &[spec(Selector::Percent(100))]).unwrap();
    waves[0].hosts.pop();
    assert_eq!(
        release(waves, &hosts).check().unwrap_err(),
        ReleaseError::Mismatch(1)
    );
}

#[test]
fn budgets_and_selectors_parse_from_the_command_line() {
    assert_eq!(Budget::parse("2", "wave").unwrap(), Budget::Hosts(2));
    assert_eq!(Budget::parse("20%", "wave").unwrap(), Budget::Percent(20));
    assert!(
        Budget::parse("150%", "overall")
            .unwrap_err()
            .contains("over 100%")
    );
    assert!(Budget::parse("many", "overall").is_err());
    assert_eq!(Budget::Percent(25).allowed(10), 2);
    assert_eq!(Budget::Hosts(1).allowed(10), 1);
    assert_eq!(Selector::parse("25%").unwrap(), Selector::Percent(25));
    assert_eq!(
        Selector::parse("web-1, db-*").unwrap(),
        Selector::Hosts(vec!["web-1".into(), "db-*".into()])
    );
    assert!(Selector::parse(" , ").is_err());
    assert!(Selector::parse("x%").is_err());
}
