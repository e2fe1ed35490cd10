//! One module per subcommand: the library function tests call, and the `run`
//! function `main.rs` calls with the parsed command line.

pub mod deploy;
pub mod keygen;
pub mod policy;
pub mod push;
pub mod show;
