//! Facts about the git repository holding the catalog: HEAD's id and time.

use std::path::Path;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub commit: String,
    /// Committer time, seconds since 1970.
    pub time: i64,
}

/// HEAD of the repository containing `dir`, if there is one with a commit.
pub fn head(dir: &Path) -> Option<Head> {
    let repo = gix::discover(dir).ok()?;
    let commit = repo.head_commit().ok()?;
    let time = commit.time().ok()?.seconds;
    Some(Head {
        commit: commit.id.to_string(),
        time,
    })
}
