//! The figment provider for `QUIVER_*` environment overrides, built from explicit `(name, value)`
//! pairs rather than the process environment so that it can be tested and reused without
//! touching global state.

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

use crate::{ENV_IGNORED, ENV_PREFIX};

/// One `QUIVER_*` variable, already split into its key path.
struct Var {
    /// The variable's full name, for error messages.
    name: String,
    /// The lowercased key path, e.g. `["limits", "max_batch_points"]`.
    path: Vec<String>,
    /// The raw value.
    value: String,
}

/// Configuration overrides from `QUIVER_*` variables: `QUIVER_SECTION__KEY=value` sets
/// `section.key`. Names not starting with [`ENV_PREFIX`], and those in [`ENV_IGNORED`], are
/// skipped; keys the config does not have are left in so that extraction rejects them.
pub(crate) struct EnvPairs {
    vars: Vec<Var>,
}

impl EnvPairs {
    /// Keeps the pairs that are configuration overrides, sorted by name so that results do not
    /// depend on the environment's order.
    pub(crate) fn new(env: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut vars: Vec<Var> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX) && !ENV_IGNORED.contains(&&**name))
            .map(|(name, value)| {
                let path = name[ENV_PREFIX.len()..]
                    .split("__")
                    .map(|segment| segment.to_ascii_lowercase())
                    .collect();
                Var { name, path, value }
            })
            .collect();
        vars.sort_by(|a, b| a.name.cmp(&b.name));
        EnvPairs { vars }
    }
}

impl Provider for EnvPairs {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("{ENV_PREFIX}* environment variables")).interpolater(
            |_: &Profile, keys: &[&str]| {
                let keys: Vec<String> = keys.iter().map(|k| k.to_ascii_uppercase()).collect();
                format!("{ENV_PREFIX}{}", keys.join("__"))
            },
        )
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut root = Dict::new();
        for var in &self.vars {
            if var.path.iter().any(|segment| segment.is_empty()) {
                return Err(format!(
                    "environment variable {}: empty key between `__` separators",
                    var.name
                )
                .into());
            }
            // `Value`'s parser is infallible: it falls back to the raw string.
            let value: Value = var.value.parse().unwrap_or_else(|never| match never {});
            insert(&mut root, &var.path, value).map_err(|()| {
                figment::Error::from(format!(
                    "environment variable {}: another {ENV_PREFIX} variable sets {} to a value, \
                     so it cannot also set keys inside it",
                    var.name,
                    var.path[..var.path.len() - 1].join(".")
                ))
            })?;
        }
        Ok(Profile::Default.collect(root))
    }
}

/// Sets `path` (non-empty) in `dict` to `value`, creating tables along the way. Fails if a
/// prefix of `path` already holds a non-table value; a later leaf replaces an earlier one.
fn insert(dict: &mut Dict, path: &[String], value: Value) -> Result<(), ()> {
    match path {
        [] => Ok(()),
        [leaf] => {
            dict.insert(leaf.clone(), value);
            Ok(())
        }
        [head, rest @ ..] => {
            let entry = dict
                .entry(head.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            match entry {
                Value::Dict(_, inner) => insert(inner, rest, value),
                _ => Err(()),
            }
        }
    }
}
