//! imagepipe: build, tag, publish and garbage-collect OS images from one
//! declarative catalog (`images.yml`).

pub mod builder;
pub mod catalog;
pub mod ci;
pub mod cleanup;
pub mod cli;
pub mod cloud;
pub mod context;
pub mod env;
pub mod error;
pub mod files;
pub mod gitinfo;
pub mod gitrefs;
pub mod http;
pub mod interrupt;
pub mod io_reason;
pub mod lock;
pub mod oci;
pub mod pin;
pub mod plan;
pub mod pool;
pub mod progress;
pub mod provenance;
pub mod publish;
pub mod recipe;
pub mod registry;
pub mod release;
pub mod release_notes;
pub mod report;
pub mod retention;
pub mod schema_version;
pub mod settings;
pub mod source;
pub mod state;
pub mod store;
pub mod template;
pub mod verify;

pub use error::{Error, Result};
