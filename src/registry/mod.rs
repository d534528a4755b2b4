//! A client for the OCI Distribution API: transport with retries and auth
//! below, blob and manifest operations above.

pub mod auth;
pub mod client;
pub mod retry;

pub use client::{Client, Opener, RegistryError, Repository};
