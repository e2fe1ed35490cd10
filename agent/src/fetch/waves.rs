//! Step 4 of a fetch: importing verified paths with `nix copy`, in dependency
//! order and in batches, and (with [`super::FetchLimits::import_in_waves`])
//! deciding which staged paths may go in the next wave while others still download.

use std::collections::{HashMap, HashSet};

use fleet_core::StorePath;

use super::{Ctx, FetchError};

/// `nix copy` of `paths` (in dependency order: see [`dependency_order`]) from the
/// staging directory or the local substituter at `url`, in batches of [`FetchLimits::import_batch`]: each
/// batch's references are valid already, in an earlier batch or in the same one.
pub(super) async fn import(
    ctx: &Ctx<'_>,
    url: &str,
    paths: &[StorePath],
) -> Result<(), FetchError> {
    // Nix remembers narinfos per cache URL (for an hour, or a month) in its disk
    // cache. The local substituter's URL changes with its port, and a port used again
    // must not bring back another fetch's narinfo, so that memory is switched off.
    let options: &[(&str, &str)] = if url.starts_with("http://") {
        &[
            ("narinfo-cache-positive-ttl", "0"),
            ("narinfo-cache-negative-ttl", "0"),
        ]
    } else {
        &[]
    };
    for batch in paths.chunks(ctx.limits.import_batch) {
        ctx.nix
            .copy_from_with(url, batch, ctx.trusted, options)
            .await
            .map_err(|e| FetchError::ImportFailed {
                root: ctx.root.to_string(),
                why: e.to_string(),
            })?;
    }
    Ok(())
}

/// `paths` ordered so that every path comes after those of its references that are
/// among `paths` (`refs` maps a path to its narinfo's `References`). Self-references
/// are ignored, and a cycle (which Nix never makes) cannot loop: each path is placed
/// once.
pub(super) fn dependency_order(
    paths: &[StorePath],
    refs: &HashMap<StorePath, Vec<StorePath>>,
) -> Vec<StorePath> {
    let wanted: HashSet<&StorePath> = paths.iter().collect();
    let mut placed: HashSet<&StorePath> = HashSet::with_capacity(paths.len());
    let mut order = Vec::with_capacity(paths.len());
    // Depth-first, without recursion (closures can be deep chains): a path is placed
    // once the references on its stack frame are all placed.
    for start in paths {
        if placed.contains(start) {
            continue;
        }
        let mut stack: Vec<(&StorePath, usize)> = vec![(start, 0)];
        let mut on_stack: HashSet<&StorePath> = HashSet::from([start]);
        while let Some((p, i)) = stack.last_mut() {
            let p: &StorePath = p;
            let deps = refs.get(p).map(Vec::as_slice).unwrap_or_default();
            if let Some(d) = deps.get(*i) {
                *i += 1;
                if d != p && wanted.contains(d) && !placed.contains(d) && on_stack.insert(d) {
                    stack.push((d, 0));
                }
            } else {
                stack.pop();
                placed.insert(p);
                order.push(p.clone());
            }
        }
    }
    order
}

/// Which staged paths may be imported. Once the walk has named every missing path,
/// a staged path waits only for its missing references to be placed in a wave (the
/// same one or an earlier one: `nix copy` orders a wave itself).
pub(super) struct Waves {
    /// Every missing path, from the walk.
    missing: HashSet<StorePath>,
    /// Paths placed in a wave.
    waved: HashSet<StorePath>,
    /// Missing references not yet placed in a wave, per path whose narinfo arrived.
    blocking: HashMap<StorePath, usize>,
    /// The paths waiting for each missing path.
    dependents: HashMap<StorePath, Vec<StorePath>>,
    /// Staged paths still blocked.
    staged: HashSet<StorePath>,
    /// Staged and unblocked: the start of the next wave.
    ready: Vec<StorePath>,
}

impl Waves {
    pub(super) fn new(missing: HashSet<StorePath>) -> Self {
        Waves {
            missing,
            waved: HashSet::new(),
            blocking: HashMap::new(),
            dependents: HashMap::new(),
            staged: HashSet::new(),
            ready: Vec::new(),
        }
    }

    /// The narinfo of `p`, with these references, arrived.
    pub(super) fn arrived(&mut self, p: &StorePath, refs: &[StorePath]) {
        let mut n = 0;
        for r in refs {
            if r != p && self.missing.contains(r) && !self.waved.contains(r) {
                n += 1;
                self.dependents
                    .entry(r.clone())
                    .or_default()
                    .push(p.clone());
            }
        }
        self.blocking.insert(p.clone(), n);
        if n == 0 && self.staged.remove(p) {
            self.ready.push(p.clone());
        }
    }

    /// `p` was staged (its narinfo arrived before).
    pub(super) fn staged(&mut self, p: StorePath) {
        if self.blocking.get(&p) == Some(&0) {
            self.ready.push(p);
        } else {
            self.staged.insert(p);
        }
    }

    /// Whether to start a wave now. Every `nix copy` costs a process start and a
    /// database open (tens of milliseconds), so a wave waits until a quarter of the
    /// paths not yet imported are ready, or until nothing else will arrive (`all_in`):
    /// a few large waves, not one per path.
    pub(super) fn worth_a_wave(&self, all_in: bool) -> bool {
        let left = self.missing.len().saturating_sub(self.waved.len());
        !self.ready.is_empty() && (all_in || self.ready.len() * 4 >= left)
    }

    /// The next wave: the ready paths and the staged paths they unblock, transitively.
    pub(super) fn next(&mut self) -> Vec<StorePath> {
        let mut wave = std::mem::take(&mut self.ready);
        let mut i = 0;
        while i < wave.len() {
            let p = wave[i].clone();
            self.blocking.remove(&p);
            for d in self.dependents.remove(&p).unwrap_or_default() {
                if let Some(n) = self.blocking.get_mut(&d) {
                    *n -= 1;
                    if *n == 0 && self.staged.remove(&d) {
                        wave.push(d);
                    }
                }
            }
            self.waved.insert(p);
            i += 1;
        }
        wave.sort();
        wave
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(name: &str) -> StorePath {
        let c = name.as_bytes()[0] as char;
        StorePath::new(&format!("/nix/store/{}-{name}", c.to_string().repeat(32))).unwrap()
    }

    #[test]
    fn dependency_order_puts_references_first() {
        // d -> b, c, d (itself), x (not among the paths); b -> a; c -> a, b; a -> v.
        let (a, b, c, d, v, x) = (sp("a"), sp("b"), sp("c"), sp("d"), sp("v"), sp("x"));
        let refs = HashMap::from([
            (d.clone(), vec![b.clone(), c.clone(), d.clone(), x.clone()]),
            (b.clone(), vec![a.clone()]),
            (c.clone(), vec![a.clone(), b.clone()]),
            (a.clone(), vec![v.clone()]),
        ]);
        for paths in [
            vec![d.clone(), c.clone(), b.clone(), a.clone()],
            vec![a.clone(), b.clone(), c.clone(), d.clone()],
            vec![c.clone(), a.clone(), d.clone(), b.clone()],
        ] {
            let order = dependency_order(&paths, &refs);
            assert_eq!(order.len(), 4, "{order:?}");
            let at = |p: &StorePath| order.iter().position(|q| q == p).unwrap();
            assert!(
                at(&a) < at(&b) && at(&b) < at(&c) && at(&c) < at(&d),
                "{order:?}"
            );
        }
        // A cycle (Nix never makes one) still places every path once.
        let cyclic = HashMap::from([(a.clone(), vec![b.clone()]), (b.clone(), vec![a.clone()])]);
        let order = dependency_order(&[a.clone(), b.clone()], &cyclic);
        assert_eq!(order.len(), 2);
    }

    #[test]
    fn waves_follow_dependency_order_and_wait_for_staging() {
        // d -> b, c (and itself); b -> a; c -> a; a -> v, which the store has.
        let (a, b, c, d, v) = (sp("a"), sp("b"), sp("c"), sp("d"), sp("v"));
        let mut w = Waves::new(HashSet::from([a.clone(), b.clone(), c.clone(), d.clone()]));
        w.arrived(&d, &[b.clone(), c.clone(), d.clone()]);
        w.arrived(&b, std::slice::from_ref(&a));
        w.arrived(&c, std::slice::from_ref(&a));
        w.arrived(&a, std::slice::from_ref(&v));
        w.staged(d.clone());
        w.staged(b.clone());
        // Nothing is ready: d and b wait for missing references.
        assert!(!w.worth_a_wave(true));
        assert!(w.next().is_empty());
        w.staged(a.clone());
        // a unblocks b in the same wave; c is not staged, so d waits.
        assert!(w.worth_a_wave(true));
        assert_eq!(w.next(), {
            let mut v = vec![a.clone(), b.clone()];
            v.sort();
            v
        });
        w.staged(c.clone());
        assert_eq!(w.next(), {
            let mut v = vec![c.clone(), d.clone()];
            v.sort();
            v
        });
        assert!(w.next().is_empty());
    }

    #[test]
    fn small_waves_wait_unless_nothing_else_comes() {
        let paths: Vec<StorePath> = ["a", "b", "c", "d", "f", "g", "h", "i"]
            .iter()
            .map(|n| sp(n))
            .collect();
        let mut w = Waves::new(paths.iter().cloned().collect());
        for p in &paths {
            w.arrived(p, &[]);
        }
        w.staged(paths[0].clone());
        // One ready path of eight left: not worth a `nix copy` yet...
        assert!(!w.worth_a_wave(false));
        // ...unless every download is over.
        assert!(w.worth_a_wave(true));
        w.staged(paths[1].clone());
        assert!(w.worth_a_wave(false));
        assert_eq!(w.next().len(), 2);
        // Paths that arrive after their references were imported are not blocked.
        let late = sp("z");
        let mut w = Waves::new(HashSet::from([paths[0].clone(), late.clone()]));
        w.arrived(&paths[0], &[]);
        w.staged(paths[0].clone());
        assert_eq!(w.next().len(), 1);
        w.arrived(&late, &[paths[0].clone()]);
        w.staged(late.clone());
        assert_eq!(w.next(), vec![late]);
    }
}
