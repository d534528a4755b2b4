//! A client for the OCI Distribution API: transport with retries and auth
//! below, blob and manifest operations above.

pub mod auth;
mod blobs;
pub mod client;
mod manifests;
pub mod retry;
mod tags;
mod tls;
mod transport;

pub use blobs::StreamedUpload;
pub use client::{Client, Opener, RegistryError, Repository};
