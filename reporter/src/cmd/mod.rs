//! One module per subcommand.

pub mod lambda;
pub mod serve;
pub mod summary;
