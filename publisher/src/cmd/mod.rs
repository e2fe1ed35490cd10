//! One module per subcommand: its clap arguments (also its part of the
//! configuration file) and the `run` function `main.rs` calls, which layers them,
//! calls the library and prints. The engines of `push` and `deploy` live in
//! [`mod@crate::push`] and [`mod@crate::deploy`];
//! `show` and `keygen` are small enough to keep their library function here.

pub mod audit;
pub mod deploy;
pub mod enroll;
pub mod gc;
pub mod hold;
pub mod keygen;
pub mod policy;
pub mod push;
pub mod release;
pub mod renew;
pub mod resign;
pub mod retire;
pub mod rollback;
pub mod rollout;
pub mod rollout_advance;
pub mod rollout_control;
pub mod rollout_plan;
pub mod rollout_rollback;
pub mod rollout_status;
pub mod show;
pub mod trust;
pub mod unhold;
