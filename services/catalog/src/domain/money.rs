//! Money is shared by every service; it lives in the common crate.
pub use common::money::*;
