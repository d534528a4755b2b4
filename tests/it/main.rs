//! The integration tests: one binary, one module per area.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod build;
mod checksums;
mod ci;
mod cleanup;
mod cleanup_layout;
mod cleanup_safety;
mod cloud;
mod common;
mod containerd;
mod determinism;
mod docs;
mod executes_plan;
mod fault_proxy;
mod fuzz;
mod gitlab_local;
mod hostile;
mod hostile_disks;
mod hostile_inputs;
mod identity;
mod image_builder;
mod json_contract;
mod kubespray;
mod lock_and_pin;
mod plan;
mod provenance;
mod publish;
mod races;
mod registry_fixture;
mod release;
mod schema;
mod terminal;
mod validate;
mod verify;
mod verify_hostile;
