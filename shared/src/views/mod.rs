//! Views (projections) of the stream besides STATUS: each is a [`crate::consumer::Consumer`]
//! with its own checkpoints, registered in [`crate::registry`].

pub mod check;
pub mod status;
