//! `variables:`: pinned component versions and their environment overrides.

use super::*;

pub(super) fn variables(node: &Node, d: &mut Diagnostics) -> Vec<Variable> {
    let NodeKind::Map(entries) = &node.kind else {
        d.error(
            node.span,
            "`variables` must be a mapping of name to `{ default, env }`",
            "write `runc: { default: \"1.2.6\", env: RUNC_VERSION }`",
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in entries {
        let Some(name) = string(k, d) else { continue };
        // Shorthand: `runc: "1.2.6"` is a default without an override.
        if let NodeKind::Scalar { .. } = v.kind {
            if let Some(default) = string(v, d) {
                out.push(Variable {
                    name,
                    default: default.value,
                    env: None,
                });
            }
            continue;
        }
        let Some(f) = Fields::of(v, &format!("variable `{}`", name.value), VARIABLE_KEYS, d) else {
            continue;
        };
        let default = f.required_string(
            "default",
            &format!("variable `{}`", name.value),
            d,
            "give the pinned value, e.g. `default: \"1.2.6\"`",
        );
        let env = f.get("env").and_then(|n| string(n, d)).map(|s| s.value);
        if let Some(default) = default {
            out.push(Variable {
                name,
                default: default.value,
                env,
            });
        }
    }
    out
}
