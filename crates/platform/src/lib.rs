//! The platform as a whole: the one registry of its services, and how to start a set of
//! them in one process with each finding the others on the ports they actually bound.
//! Used by the `platform` command (`up`, `dlq`, `views`, `functions`) and by the
//! cross-service tests.

pub mod console;
pub mod functions;
pub mod import;
pub mod registry;
