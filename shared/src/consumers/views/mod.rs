//! Views (projections) of the stream besides STATUS: each is a [`crate::consumers::Consumer`]
//! with its own checkpoints, registered in [`crate::run::registry`].

pub mod check;
pub mod status;
