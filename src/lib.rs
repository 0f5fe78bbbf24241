//! Crossfold facade (placeholder, filled in below).
pub use crossfold_core as core;
