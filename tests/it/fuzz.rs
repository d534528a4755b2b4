//! Random and mutated catalogs never panic the parser or the validator.

use std::path::Path;

use imagepipe::catalog::{self, diag::Diagnostics};
use proptest::prelude::*;

use crate::common::basic_catalog;

fn check(text: &str) {
    let path = Path::new("images.yml");
    let mut d = Diagnostics::new(path);
    let parsed = catalog::parse(path, text, &mut d);
    // Every failure is explained.
    if parsed.is_none() {
        assert!(
            !d.is_empty() || text.trim().is_empty(),
            "no catalog and no diagnostic for {text:?}"
        );
    }
    for diag in d.into_sorted() {
        assert!(diag.line >= 1 && diag.column >= 1, "{diag:?}");
        assert!(!diag.message.is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_text(s in "\\PC{0,200}") {
        check(&s);
    }

    #[test]
    fn yaml_like_text(s in "([a-z_]{1,8}: (\\[|\\{|\"|'|-|[a-z0-9{}:. ]){0,12}\n( {0,6}- )?){0,12}") {
        check(&s);
    }

    #[test]
    fn mutated_catalogs(cuts in proptest::collection::vec((0usize..2000, 0usize..8, "\\PC{0,6}"), 1..6)) {
        let mut text = basic_catalog();
        for (pos, del, ins) in cuts {
            let mut at = pos % (text.len() + 1);
            while !text.is_char_boundary(at) { at -= 1; }
            let mut end = (at + del).min(text.len());
            while !text.is_char_boundary(end) { end -= 1; }
            text.replace_range(at..end.max(at), &ins);
        }
        check(&text);
    }
}
