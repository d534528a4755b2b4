//! Release tags: the git tag grammar that names a Kubernetes release.
//!
//! `v1.33.6`, `v1.34.0-rc.1`, `v1.33.6/runc-1.2.6`, `v1.33.6-runc-v1.2.9`:
//! `vMAJOR.MINOR.PATCH`, an optional Kubernetes pre-release
//! (`-alpha.N`, `-beta.N`, `-rc.N`), then an optional free comment after `/`
//! or after a `-` that does not start a pre-release (GitHub's `v*` tag
//! filter does not match `/`, so projects such as Outscale's use `-`).

use std::fmt;

use serde::Serialize;

/// The Kubernetes version facts derived from a release tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Release {
    /// The tag as given, comment included.
    pub tag: String,
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    /// The Kubernetes pre-release (`rc.1`, `alpha.2`), without the dash.
    pub pre: Option<String>,
    /// The free comment after `/` or `-` (`runc-v1.2.9`).
    pub comment: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid release tag `{tag}`: {reason} — {help}")]
pub struct ReleaseError {
    pub tag: String,
    pub reason: String,
    pub help: &'static str,
    /// The tag names a Kubernetes pre-release, but wrongly (`-rc1`): an
    /// error even where other tags are just "not a release".
    pub malformed_prerelease: bool,
}

const HELP: &str = "use `vMAJOR.MINOR.PATCH`, optionally `-alpha.N`, `-beta.N` or `-rc.N`, and a comment after `/` or `-`, e.g. `v1.33.6`, `v1.34.0-rc.1`, `v1.33.6/runc-1.2.6` or `v1.33.6-runc-v1.2.9`";

/// The Kubernetes pre-release kinds.
const PRE_KINDS: &[&str] = &["alpha", "beta", "rc"];

impl Release {
    pub fn parse(tag: &str) -> Result<Self, ReleaseError> {
        let fail = |reason: String| ReleaseError {
            tag: tag.escape_debug().to_string(),
            reason,
            help: HELP,
            malformed_prerelease: false,
        };
        if tag.is_empty() {
            return Err(fail("it is empty".into()));
        }
        if let Some(c) = tag.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(fail(format!("it contains the character {c:?}")));
        }
        if tag.contains("..") {
            return Err(fail("it contains `..`".into()));
        }
        let (version, slash_comment) = match tag.split_once('/') {
            Some((v, c)) => (v, Some(c)),
            None => (tag, None),
        };
        if slash_comment == Some("") {
            return Err(fail("the comment after `/` is empty".into()));
        }
        let Some(rest) = version.strip_prefix('v') else {
            return Err(fail("it must start with `v`".into()));
        };
        if rest.contains('+') {
            return Err(fail(
                "build metadata (`+...`) cannot appear in image tags".into(),
            ));
        }
        let (core, suffix) = match rest.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (rest, None),
        };
        let nums: Vec<&str> = core.split('.').collect();
        let [major, minor, patch] = nums.as_slice() else {
            return Err(fail(format!("`{core}` is not MAJOR.MINOR.PATCH")));
        };
        let number = |s: &str| -> Result<u64, ReleaseError> {
            let ok = !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_digit())
                && (s == "0" || !s.starts_with('0'));
            if !ok {
                return Err(fail(format!("`{s}` is not a version number")));
            }
            s.parse().map_err(|_| fail(format!("`{s}` is too large")))
        };
        let (major, minor, patch) = (number(major)?, number(minor)?, number(patch)?);
        let (pre, dash_comment) = match suffix {
            None => (None, None),
            Some("") => return Err(fail("nothing follows the `-`".into())),
            Some(s) => split_pre(s).map_err(|(reason, pre)| ReleaseError {
                malformed_prerelease: pre,
                ..fail(reason)
            })?,
        };
        let comment = match (dash_comment, slash_comment) {
            (Some(d), Some(s)) => Some(format!("{d}/{s}")),
            (d, s) => d.or(s).map(str::to_owned),
        };
        if let Some(c) = &comment
            && (c.ends_with('/')
                || c.contains("//")
                || c.contains('\\')
                || c.ends_with(".lock")
                || c.contains("@{"))
        {
            return Err(fail(format!(
                "the comment `{c}` is not a valid git ref name"
            )));
        }
        Ok(Self {
            tag: tag.to_owned(),
            major,
            minor,
            patch,
            pre,
            comment,
        })
    }

    /// `v1.33.6` or `v1.34.0-rc.1`: the `{kubernetes}` placeholder.
    pub fn kubernetes(&self) -> String {
        match &self.pre {
            Some(p) => format!("v{}.{}.{}-{p}", self.major, self.minor, self.patch),
            None => format!("v{}.{}.{}", self.major, self.minor, self.patch),
        }
    }

    /// Semantic-version precedence: `v1.33.6 < v1.33.7`, `v1.34.0-rc.1 < v1.34.0`,
    /// `rc.2 < rc.10`; the comment after `/` does not count.
    pub fn precedence(&self, other: &Self) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        let core =
            (self.major, self.minor, self.patch).cmp(&(other.major, other.minor, other.patch));
        if core != Ordering::Equal {
            return core;
        }
        match (&self.pre, &other.pre) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => {
                let ids = |s: &str| -> Vec<(bool, u64, String)> {
                    s.split('.')
                        .map(|id| match id.parse::<u64>() {
                            // Numeric identifiers sort before alphanumeric ones.
                            Ok(n) => (false, n, String::new()),
                            Err(_) => (true, 0, id.to_owned()),
                        })
                        .collect()
                };
                ids(a).cmp(&ids(b))
            }
        }
    }

    /// The component versions the comment names: `runc-v1.2.9` →
    /// (`runc`, `1.2.9`); `containerd-2.0.4/runc-1.2.6` → both.
    pub fn named_versions(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for part in self.comment.iter().flat_map(|c| c.split(['/', ','])) {
            let tokens: Vec<&str> = part.split('-').collect();
            for (i, pair) in tokens.windows(2).enumerate() {
                let (name, value) = (pair[0], pair[1].strip_prefix('v').unwrap_or(pair[1]));
                let is_name = name.starts_with(|c: char| c.is_ascii_lowercase())
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
                let is_version = value.starts_with(|c: char| c.is_ascii_digit())
                    && value.bytes().all(|b| b.is_ascii_digit() || b == b'.');
                if !is_name || !is_version {
                    continue;
                }
                let mut version = value.to_owned();
                if let Some(pre) = tokens.get(i + 2)
                    && split_pre(pre).is_ok_and(|(p, _)| p.is_some())
                {
                    version = format!("{version}-{pre}");
                }
                out.push((name.to_owned(), version));
            }
        }
        out
    }

    pub fn is_prerelease(&self) -> bool {
        self.pre.is_some()
    }

    /// `v1.33`: the `{kubernetes_series}` placeholder.
    pub fn series(&self) -> String {
        format!("v{}.{}", self.major, self.minor)
    }

    /// The pkgs.k8s.io Debian package version: `1.33.6-1.1`, `1.34.0~rc.1-1.1`.
    pub fn deb_version(&self) -> String {
        match &self.pre {
            Some(p) => format!("{}.{}.{}~{p}-1.1", self.major, self.minor, self.patch),
            None => format!("{}.{}.{}-1.1", self.major, self.minor, self.patch),
        }
    }
}

/// A pre-release and the comment after it.
type PreAndComment<'a> = (Option<String>, Option<&'a str>);

/// Splits what follows the first `-` into a Kubernetes pre-release
/// (`rc.1`) and a comment: `rc.1` → (rc.1, none), `rc.1-runc-1.2.9` →
/// (rc.1, runc-1.2.9), `runc-v1.2.9` → (none, runc-v1.2.9). A suffix that
/// looks like a pre-release but is not one (`rc1`, `beta`, `RC.1`) is an
/// error, never a comment: it would silently make a release of `vX.Y.Z`.
fn split_pre(s: &str) -> Result<PreAndComment<'_>, (String, bool)> {
    let (head, rest) = match s.split_once('-') {
        Some((h, r)) => (h, Some(r)),
        None => (s, None),
    };
    if rest == Some("") {
        return Err((format!("nothing follows the `-` after `{head}`"), false));
    }
    let word: String = head
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect::<String>()
        .to_ascii_lowercase();
    let looks_pre = PRE_KINDS.iter().any(|k| word == *k)
        || (PRE_KINDS.iter().any(|k| word.starts_with(k)) && head.len() > word.len());
    let exact = head.split_once('.').is_some_and(|(kind, n)| {
        PRE_KINDS.contains(&kind)
            && !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && (n == "0" || !n.starts_with('0'))
    });
    if exact {
        return Ok((Some(head.to_owned()), rest));
    }
    if looks_pre {
        return Err((
            format!(
                "`-{head}` looks like a pre-release but is not one: Kubernetes pre-releases are `-alpha.N`, `-beta.N` and `-rc.N` (lower case, a dot, a number)"
            ),
            true,
        ));
    }
    Ok((None, Some(s)))
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.kubernetes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_documented_forms() {
        let r = Release::parse("v1.33.6").unwrap();
        assert_eq!(
            (r.kubernetes(), r.series(), r.deb_version()),
            ("v1.33.6".into(), "v1.33".into(), "1.33.6-1.1".into())
        );
        let r = Release::parse("v1.34.0-rc.1").unwrap();
        assert_eq!(
            (r.kubernetes(), r.series(), r.deb_version()),
            (
                "v1.34.0-rc.1".into(),
                "v1.34".into(),
                "1.34.0~rc.1-1.1".into()
            )
        );
        let r = Release::parse("v1.33.6/runc-1.2.6").unwrap();
        assert_eq!(r.kubernetes(), "v1.33.6");
        assert_eq!(r.tag, "v1.33.6/runc-1.2.6");
        assert_eq!(
            Release::parse("v1.33.6/a/b").unwrap().kubernetes(),
            "v1.33.6"
        );
        // Outscale's tags: a `-` comment, not a pre-release.
        let r = Release::parse("v1.33.6-runc-v1.2.9").unwrap();
        assert_eq!(
            (r.kubernetes(), r.deb_version(), r.is_prerelease()),
            ("v1.33.6".into(), "1.33.6-1.1".into(), false)
        );
        assert_eq!(r.comment.as_deref(), Some("runc-v1.2.9"));
        let r = Release::parse("v1.35.0-rc.1-runc-1.3.0").unwrap();
        assert_eq!(
            (r.kubernetes(), r.comment.as_deref()),
            ("v1.35.0-rc.1".into(), Some("runc-1.3.0"))
        );
        let r = Release::parse("v1.33.6-containerd-2.0.4/runc-1.2.6").unwrap();
        assert_eq!(r.comment.as_deref(), Some("containerd-2.0.4/runc-1.2.6"));
        assert!(Release::parse("v1.34.0-beta.0").unwrap().is_prerelease());
    }

    #[test]
    fn comments_name_component_versions() {
        let named = |t: &str| Release::parse(t).unwrap().named_versions();
        assert_eq!(
            named("v1.33.6-runc-v1.2.9"),
            [("runc".into(), "1.2.9".into())]
        );
        assert_eq!(
            named("v1.33.6/containerd-2.0.4,runc-1.3.0-rc.1"),
            [
                ("containerd".into(), "2.0.4".into()),
                ("runc".into(), "1.3.0-rc.1".into())
            ]
        );
        assert!(named("v1.33.6/hotfix").is_empty());
        assert!(named("v1.33.6").is_empty());
    }

    #[test]
    fn a_malformed_pre_release_is_an_error_not_a_comment() {
        for bad in [
            "v1.33.6-rc1",
            "v1.33.6-beta",
            "v1.33.6-RC.1",
            "v1.33.6-rc.01",
            "v1.33.6-alpha1-runc-1.2.9",
            "v1.33.6-rc.1.2",
            "v1.33.6-runc-",
        ] {
            let err = Release::parse(bad).expect_err(bad).to_string();
            assert!(
                err.contains("pre-release") || err.contains("nothing follows"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn rejects_malformed_tags() {
        for bad in [
            "1.33.6",
            "v1.33",
            "v1.33.x",
            "v1.33.6/",
            "../x",
            "v1.33.6/../x",
            "v1.33.6 ",
            "v1.33.6\n",
            "v 1.33.6",
            "",
            "v",
            "v1.33.06",
            "v1.33.6-",
            "v1.33.6-rc..1",
            "v1.33.6+build",
            "v1.33.6.1",
            "V1.33.6",
            "v1.33.6-rc_1",
            "v1.33.6/x\u{7}",
        ] {
            let err = Release::parse(bad).expect_err(bad);
            assert!(
                err.to_string().contains("v1.33.6"),
                "message names the fix: {err}"
            );
        }
    }

    proptest! {
        #[test]
        fn well_formed_tags_round_trip(
            major in 0u64..100, minor in 0u64..100, patch in 0u64..100,
            pre in proptest::option::of("(alpha|beta|rc)\\.(0|[1-9][0-9]?)"),
            dash in proptest::option::of("(runc|containerd|cri-o)-v?[0-9]\\.[0-9]{1,2}\\.[0-9]{1,2}"),
            comment in proptest::option::of("[a-z0-9][a-z0-9.-]{0,20}"),
        ) {
            prop_assume!(comment.as_deref().is_none_or(|c| !c.contains("..") && !c.ends_with(".lock")));
            let mut tag = format!("v{major}.{minor}.{patch}");
            if let Some(p) = &pre { tag.push('-'); tag.push_str(p); }
            let k8s = tag.clone();
            if let Some(d) = &dash { tag.push('-'); tag.push_str(d); }
            if let Some(c) = &comment { tag.push('/'); tag.push_str(c); }
            let r = Release::parse(&tag).unwrap();
            prop_assert_eq!(r.kubernetes(), k8s);
            prop_assert_eq!(r.is_prerelease(), pre.is_some());
            prop_assert_eq!(r.series(), format!("v{major}.{minor}"));
            prop_assert!(crate::template::is_valid_tag(&r.kubernetes()));
        }

        #[test]
        fn arbitrary_strings_never_panic_and_accepted_ones_are_sane(s in "\\PC{0,40}") {
            if let Ok(r) = Release::parse(&s) {
                prop_assert!(s.starts_with('v'));
                prop_assert!(!s.contains(".."));
                prop_assert!(!s.chars().any(char::is_whitespace));
                prop_assert!(crate::template::is_valid_tag(&r.kubernetes()));
            }
        }

        #[test]
        fn whitespace_anywhere_is_rejected(pos in 0usize..8, ws in "[ \t\r\n]") {
            let mut tag = String::from("v1.33.6");
            tag.insert_str(pos.min(tag.len()), &ws);
            prop_assert!(Release::parse(&tag).is_err());
        }
    }
}

#[cfg(test)]
mod precedence_tests {
    use super::Release;

    #[test]
    fn semver_precedence() {
        let order = [
            "v1.33.6",
            "v1.33.7/runc-1.2.6",
            "v1.34.0-alpha.1",
            "v1.34.0-rc.1",
            "v1.34.0-rc.2",
            "v1.34.0-rc.10",
            "v1.34.0",
            "v1.34.1",
            "v2.0.0",
        ];
        for (i, a) in order.iter().enumerate() {
            for (j, b) in order.iter().enumerate() {
                let (a, b) = (Release::parse(a).unwrap(), Release::parse(b).unwrap());
                assert_eq!(a.precedence(&b), i.cmp(&j), "{a} vs {b}");
            }
        }
    }
}
