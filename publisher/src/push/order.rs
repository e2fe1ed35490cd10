//! The order narinfos are written in: every path after the paths it references, so
//! a reader that finds a narinfo can fetch its whole closure.

use std::collections::HashMap;

use anyhow::bail;
use fleet_core::StorePath;
use fleet_core::nixcli::PathInfo;

/// Orders `infos` so every path comes after the paths it references.
pub(super) fn topological_order(infos: &[PathInfo]) -> anyhow::Result<Vec<usize>> {
    let index: HashMap<&StorePath, usize> = infos
        .iter()
        .enumerate()
        .map(|(i, p)| (&p.path, i))
        .collect();
    let mut pending_refs = vec![0usize; infos.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); infos.len()];
    for (i, info) in infos.iter().enumerate() {
        for r in &info.references {
            if r == &info.path {
                continue;
            }
            if let Some(&j) = index.get(r) {
                pending_refs[i] += 1;
                dependents[j].push(i);
            }
        }
    }
    let mut ready: Vec<usize> = (0..infos.len()).filter(|&i| pending_refs[i] == 0).collect();
    ready.reverse();
    let mut order = Vec::with_capacity(infos.len());
    while let Some(i) = ready.pop() {
        order.push(i);
        for &d in &dependents[i] {
            pending_refs[d] -= 1;
            if pending_refs[d] == 0 {
                ready.push(d);
            }
        }
    }
    if order.len() != infos.len() {
        bail!(
            "the store paths to push reference each other in a cycle, which a Nix store never \
             holds: check the local store (nix-store --verify --check-contents)"
        );
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_core::narinfo::Sha256Hash;

    fn sp(name: &str, i: u8) -> StorePath {
        let c = (b'a' + i) as char;
        StorePath::new(&format!("/nix/store/{}-{name}", c.to_string().repeat(32))).unwrap()
    }

    fn info(p: &StorePath, refs: &[&StorePath]) -> PathInfo {
        PathInfo {
            path: p.clone(),
            nar_hash: Sha256Hash([0; 32]),
            nar_size: 0,
            references: refs.iter().map(|r| (*r).clone()).collect(),
            deriver: None,
            signatures: vec![],
            ca: None,
        }
    }

    #[test]
    fn references_come_first_and_self_references_are_ignored() {
        let (a, b, c, d) = (sp("a", 0), sp("b", 1), sp("c", 2), sp("d", 3));
        // d -> b, c; b -> a; c -> a, c (self); a outside the set is fine too.
        let infos = vec![
            info(&d, &[&b, &c, &d]),
            info(&c, &[&a, &c]),
            info(&b, &[&a]),
            info(&a, &[]),
        ];
        let order = topological_order(&infos).unwrap();
        let pos = |p: &StorePath| order.iter().position(|&i| &infos[i].path == p).unwrap();
        assert!(pos(&a) < pos(&b) && pos(&a) < pos(&c));
        assert!(pos(&b) < pos(&d) && pos(&c) < pos(&d));
        let cyclic = vec![info(&a, &[&b]), info(&b, &[&a])];
        assert!(topological_order(&cyclic).is_err());
    }
}
