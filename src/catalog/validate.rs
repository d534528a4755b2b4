//! Semantic checks over a decoded catalog: what the YAML types cannot say.

use std::collections::HashMap;

use globset::Glob;

use super::diag::{Diagnostics, Span, suggestion};
use super::model::{Catalog, Image, Spanned, TargetKind};
use crate::context::TagValues;
use crate::template::{self, PLACEHOLDERS, RenderError, Template};

pub fn check(c: &Catalog, d: &mut Diagnostics) {
    variables(c, d);
    targets(c, d);
    let target_names: Vec<&str> = c.targets.iter().map(|t| t.name.as_str()).collect();
    unique(c.images.iter().map(|i| &i.name), "image", d);
    for image in &c.images {
        image_checks(c, image, &target_names, d);
    }
    if c.images.is_empty() && !d.is_empty() {
        return;
    }
    if let Some(r) = &c.retention {
        for g in r
            .protect
            .iter()
            .chain(r.git.iter().flat_map(|g| g.branches.iter().chain(&g.paths)))
        {
            if let Err(e) = Glob::new(g) {
                d.error(
                    g.span,
                    format!("`{}` is not a valid glob: {}", g.value, e.kind()),
                    "use `*`, `**`, `?`, `[abc]` and `{a,b}` patterns",
                );
            }
        }
    }
}

fn variables(c: &Catalog, d: &mut Diagnostics) {
    unique(c.variables.iter().map(|v| &v.name), "variable", d);
    for v in &c.variables {
        let ok = v
            .name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
            && v.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            d.error(
                v.name.span,
                format!("variable name `{}` is not a placeholder name", v.name.value),
                "use lowercase letters, digits and `_`, e.g. `cni_version`",
            );
        } else if PLACEHOLDERS.contains(&v.name.as_str())
            && !matches!(v.name.as_str(), "runc" | "containerd")
        {
            d.error(
                v.name.span,
                format!(
                    "variable `{}` shadows the built-in placeholder `{{{}}}`",
                    v.name.value, v.name.value
                ),
                "rename the variable",
            );
        }
        if let Some(env) = &v.env {
            let ok = env
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_uppercase() || b == b'_')
                && env
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                d.error(
                    v.name.span,
                    format!("`env: {env}` is not an environment variable name"),
                    "use uppercase letters, digits and `_`, e.g. `RUNC_VERSION`",
                );
            }
        }
    }
}

fn targets(c: &Catalog, d: &mut Diagnostics) {
    unique(c.targets.iter().map(|t| &t.name), "target", d);
    for t in &c.targets {
        if let TargetKind::Registry {
            namespace: Some(ns),
            ..
        } = &t.kind
            && !template::is_valid_repo_path(ns)
        {
            d.error(t.span, format!("namespace `{ns}` of target `{}` is not a valid repository path", t.name.value), "use lowercase letters, digits and single `.`, `_`, `-` between them, `/` between parts");
        }
    }
}

fn unique<'a>(names: impl Iterator<Item = &'a Spanned<String>>, what: &str, d: &mut Diagnostics) {
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for n in names {
        if let Some(first) = seen.get(n.as_str()) {
            d.error(
                n.span,
                format!("duplicate {what} name `{}`", n.value),
                format!(
                    "it is first defined at line {}; give each {what} a unique name",
                    first.line
                ),
            );
        } else {
            seen.insert(n.as_str(), n.span);
        }
    }
}

/// Where a templated value is reported: its own place, or, for a value from
/// `defaults` (which has none of its own), the image that uses it.
fn located(image: &Image, s: &Spanned<String>) -> Span {
    if s.span == Span::default() {
        image.span
    } else {
        s.span
    }
}

/// Parses a template (`what` names it in the error); an unknown placeholder
/// is reported with the nearest known one, other errors with `usage`.
fn parse_template(
    raw: &Spanned<String>,
    vars: &[&str],
    span: Span,
    (what, usage): (&str, &str),
    d: &mut Diagnostics,
) -> Option<Template> {
    Template::parse(raw, vars)
        .map_err(|e| {
            let help = match &e {
                template::TemplateError::Unknown { name } => {
                    let all: Vec<&str> = PLACEHOLDERS
                        .iter()
                        .copied()
                        .chain(vars.iter().copied())
                        .collect();
                    suggestion(name, &all)
                }
                _ => usage.into(),
            };
            d.error(span, format!("{what} `{}`: {e}", raw.value), help);
        })
        .ok()
}

/// Release-only placeholders in a template of an image not built per release.
fn release_only(
    image: &Image,
    t: &Template,
    what: &str,
    raw: &str,
    span: Span,
    d: &mut Diagnostics,
) {
    if image.kubernetes {
        return;
    }
    for p in ["kubernetes", "kubernetes_series"] {
        if t.uses(p) {
            d.error(
                span,
                format!(
                    "{what} `{raw}` uses `{{{p}}}` but image `{}` is not built per release",
                    image.name.value
                ),
                "set `kubernetes: true` on the image, or remove the placeholder",
            );
        }
    }
}

/// A check's `expect` uses placeholders that exist (and, for release-only
/// ones, an image built per release).
fn verify_checks(
    image: &Image,
    defaults: &crate::catalog::Defaults,
    vars: &[&str],
    d: &mut Diagnostics,
) {
    let Some(v) = image.verification(defaults) else {
        return;
    };
    for expect in v.checks.iter().filter_map(|c| c.expect.as_ref()) {
        let span = located(image, expect);
        let usage = "write placeholders as `{name}`; other text is matched literally";
        if let Some(t) = parse_template(expect, vars, span, ("check expect", usage), d) {
            release_only(image, &t, "check expect", &expect.value, span, d);
        }
    }
}

fn image_checks(c: &Catalog, image: &Image, target_names: &[&str], d: &mut Diagnostics) {
    let name = &image.name;
    if !template::is_valid_repo_path(name) {
        d.error(name.span, format!("image name `{}` is not a valid OCI repository name", name.value), "use lowercase letters, digits and single `.`, `_`, `-` between them, e.g. `ubuntu-2204`");
    }
    if let Some(ts) = &image.targets {
        for t in ts {
            if !target_names.contains(&t.as_str()) {
                d.error(
                    t.span,
                    format!("image `{}` names unknown target `{}`", name.value, t.value),
                    suggestion(t, target_names),
                );
            }
        }
    }
    if image.format == crate::catalog::Format::MachineImage {
        if image.platforms.len() > 1
            || !image
                .platforms
                .iter()
                .all(|p| matches!(p.source, crate::catalog::Source::Packer(_)))
        {
            d.error(
                image.span,
                format!("machine image `{}` needs one `packer` source", name.value),
                "build machine images with `source: { packer: { template: ... } }`",
            );
        }
        if !c.targets.iter().any(|t| image.goes_to(t)) {
            d.error(
                image.span,
                format!("machine image `{}` has no cloud target", name.value),
                "add a target with `cloud:` and `region:`",
            );
        }
    } else if image.targets.as_ref().is_some_and(|ts| {
        ts.iter()
            .any(|t| c.target(t).is_some_and(|t| t.kind.is_cloud()))
    }) {
        d.error(image.span, format!("image `{}` is an OCI image but names a cloud target", name.value), "cloud targets receive `format: machine-image` images; remove the target or change the format");
    }
    let mut platforms: Vec<String> = image
        .platforms
        .iter()
        .map(|p| p.platform.to_string())
        .collect();
    platforms.sort();
    if platforms.windows(2).any(|w| w[0] == w[1]) {
        d.error(
            image.span,
            format!("image `{}` lists a platform twice", name.value),
            "give each platform one source",
        );
    }
    let var_names: Vec<&str> = c.variables.iter().map(|v| v.name.as_str()).collect();
    verify_checks(image, &c.defaults, &var_names, d);
    let templates = image.tag_templates(&c.defaults);
    for p in image.prerelease_templates(&c.defaults) {
        if !templates.iter().skip(1).any(|t| t.value == p.value) {
            d.error(
                located(image, p),
                format!(
                    "`prerelease_tags` lists `{}`, which is not one of image `{}`'s mutable tags",
                    p.value, name.value
                ),
                "list templates exactly as they appear after the first entry of `tags`",
            );
        }
    }
    let defaults = c
        .variables
        .iter()
        .map(|v| (v.name.value.clone(), v.default.clone()))
        .collect();
    let values = TagValues::sample(defaults, &image.facts());
    for (i, raw) in templates.iter().enumerate() {
        let span = located(image, raw);
        let usage = "write placeholders as `{name}`, `{hash:12}`";
        let Some(t) = parse_template(raw, &var_names, span, ("tag template", usage), d) else {
            continue;
        };
        if i == 0 && !t.uses("hash") {
            d.error(span, format!("the immutable tag `{}` does not contain `{{hash}}`", raw.value), "the first tag is immutable: add `{hash}` so different contents never share it, e.g. `{name}-{hash}`");
        }
        if i == 0 && image.kubernetes && !t.uses("kubernetes") {
            d.error(span, format!("image `{}` is built per Kubernetes release but its immutable tag `{}` does not contain `{{kubernetes}}`", name.value, raw.value), "add `{kubernetes}` so each release gets its own tag, e.g. `{name}-{kubernetes}-{hash}`");
        }
        release_only(image, &t, "tag", &raw.value, span, d);
        match t.render(|p| values.lookup(p)) {
            Ok(_) => {}
            Err(RenderError::Missing { name: p, why }) => {
                d.error(
                    span,
                    format!("tag `{}`: `{{{p}}}` has no value: {why}", raw.value),
                    format!("declare it under `variables:` or remove `{{{p}}}`"),
                );
            }
            Err(e @ RenderError::InvalidTag { .. }) => d.error(
                span,
                format!(
                    "tag template `{}` renders to an invalid tag: {e}",
                    raw.value
                ),
                "keep literal parts to letters, digits, `_`, `.` and `-`",
            ),
        }
    }
}
