//! The version of every `--format json` output's shape (see `report`).

/// Within one version fields are only added; a removed or changed field is
/// a new version.
pub const SCHEMA_VERSION: u32 = 1;
