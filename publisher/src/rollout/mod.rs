//! Releases and their rollouts, with no coordinator but the bucket.
//!
//! A release (`releases/<id>.json`, [`fleet_core::release`]) names each host's
//! closure and a plan of waves; its rollout state (`releases/<id>/rollout.json`,
//! [`fleet_core::rollout`]) records how far it got and is only replaced by
//! compare-and-swap ([`store`]). Every command reads the state, decides, and writes
//! the next state on the ETag it read; whoever loses the race reads again. So any
//! number of `rollout advance` runs can go at once: a wave is *claimed* in the state
//! before its manifests are written, and a manifest is only written when the host's
//! current one does not already carry the release's closure above the sequence
//! recorded at the claim ([`advance`]).
//!
//! - [`create`]: checks and signs a release, pushes its closures, writes it and the
//!   first state;
//! - [`health`]: what the hosts' status objects say about a started wave, and the
//!   failure budgets;
//! - [`advance`]: one pass of the rollout (claim, deploy, observe, settle, soak,
//!   complete, halt);
//! - [`control`]: pause, resume, abort;
//! - [`revert`]: rolls a halted rollout's touched hosts back ([`crate::rollback`]);
//! - [`preview`]: what each wave would change ([`crate::dry_run`]).

pub mod advance;
pub mod control;
pub mod create;
pub mod health;
pub mod preview;
pub mod revert;
pub mod store;
