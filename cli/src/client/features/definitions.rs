//! A definitions file (YAML or JSON) as `quiver features apply` reads it, in Feast's names:
//!
//! ```yaml
//! entities:
//!   - name: user
//!     join_keys: [user_id]        # or [{name: user_id, type: int64}]
//!     value_type: int64           # the type of join keys named without one
//! feature_views:
//!   - name: user_stats
//!     entities: [user]
//!     ttl: 1d                     # 86400, 86400s, 1440m, 24h, 1d
//!     schema:                     # or `fields`; `type` or Feast's `dtype`
//!       - {name: clicks, dtype: Int64}
//!       - {name: embedding, type: "float32[]"}
//! feature_services:
//!   - name: ranker
//!     features: [user_stats:clicks, user_stats]
//! ```
//!
//! A view's schema may list its entities' join keys, as Feast's does: they are keys, not
//! features, and give the type of a join key named without one. An object that exists already
//! is changed as of the version the cluster held when the file was read, unless the file names
//! one (`version: 3`): a change made by someone else meanwhile is refused, not overwritten.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use quiver_proto::v1 as pb;
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    entities: Vec<EntityDef>,
    #[serde(default)]
    feature_views: Vec<ViewDef>,
    #[serde(default)]
    feature_services: Vec<ServiceDef>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum KeyDef {
    Name(String),
    Typed {
        name: String,
        #[serde(alias = "dtype", alias = "value_type")]
        r#type: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntityDef {
    name: String,
    #[serde(default)]
    join_keys: Vec<KeyDef>,
    #[serde(default)]
    value_type: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    version: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldDef {
    name: String,
    #[serde(alias = "dtype")]
    r#type: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Ttl {
    Seconds(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ViewDef {
    name: String,
    #[serde(default)]
    entities: Vec<String>,
    #[serde(default, alias = "fields")]
    schema: Vec<FieldDef>,
    #[serde(default)]
    ttl: Option<Ttl>,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    transformation: String,
    #[serde(default)]
    version: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceDef {
    name: String,
    #[serde(default)]
    features: Vec<String>,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    version: Option<u64>,
}

fn tags(map: BTreeMap<String, String>) -> HashMap<String, String> {
    map.into_iter().collect()
}

/// Reads `path` (`.json` as JSON, anything else as YAML, of which JSON is a part).
fn read(path: &Path) -> anyhow::Result<File> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let file: File = if is_json {
        serde_json::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?
    } else {
        serde_yaml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?
    };
    Ok(file)
}

/// The apply request `path` describes, with each existing object's version taken from
/// `current` unless the file names one.
pub fn request(
    path: &Path,
    current: &pb::FeatureDefinitions,
    dry_run: bool,
) -> anyhow::Result<pb::ApplyFeaturesRequest> {
    let file = read(path)?;
    // Join keys of each entity, as the file names them, to find them in views' schemas.
    let mut key_names: HashMap<&str, Vec<&str>> = HashMap::new();
    for e in &file.entities {
        let names = e
            .join_keys
            .iter()
            .map(|k| match k {
                KeyDef::Name(n) | KeyDef::Typed { name: n, .. } => n.as_str(),
            })
            .collect();
        key_names.insert(e.name.as_str(), names);
    }
    for e in &current.entities {
        key_names
            .entry(e.name.as_str())
            .or_insert_with(|| e.join_keys.iter().map(|k| k.name.as_str()).collect());
    }
    // Types of join keys that views' schemas list.
    let mut key_types: HashMap<&str, &str> = HashMap::new();
    for v in &file.feature_views {
        for entity in &v.entities {
            for key in key_names.get(entity.as_str()).into_iter().flatten() {
                if let Some(f) = v.schema.iter().find(|f| f.name == *key) {
                    key_types.entry(key).or_insert(f.r#type.as_str());
                }
            }
        }
    }
    let version_of = |given: Option<u64>, stored: Option<u64>| given.or(stored).unwrap_or(0);

    let mut req = pb::ApplyFeaturesRequest {
        dry_run,
        request_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    };
    for (i, e) in file.entities.iter().enumerate() {
        let mut join_keys = Vec::new();
        for (k, key) in e.join_keys.iter().enumerate() {
            let (name, r#type) = match key {
                KeyDef::Typed { name, r#type } => (name.clone(), r#type.clone()),
                KeyDef::Name(name) => {
                    let stored = current
                        .entities
                        .iter()
                        .find(|c| c.name == e.name)
                        .and_then(|c| c.join_keys.iter().find(|j| &j.name == name))
                        .map(|j| j.r#type.clone());
                    let t = e
                        .value_type
                        .clone()
                        .or_else(|| key_types.get(name.as_str()).map(|t| t.to_string()))
                        .or(stored)
                        .ok_or_else(|| {
                            anyhow!(
                                "{}: entities[{i}].join_keys[{k}]: `{name}` has no type: give \
                                 the entity a value_type (int64 or string), write \
                                 {{name: {name}, type: int64}}, or list it in a view's schema",
                                path.display()
                            )
                        })?;
                    (name.clone(), t)
                }
            };
            join_keys.push(pb::JoinKey { name, r#type });
        }
        let stored = current.entities.iter().find(|c| c.name == e.name);
        req.entities.push(pb::Entity {
            name: e.name.clone(),
            join_keys,
            description: e.description.clone(),
            tags: tags(e.tags.clone()),
            version: version_of(e.version, stored.map(|s| s.version)),
        });
    }
    for (i, v) in file.feature_views.into_iter().enumerate() {
        let keys: Vec<&str> = v
            .entities
            .iter()
            .flat_map(|e| key_names.get(e.as_str()).cloned().unwrap_or_default())
            .collect();
        let fields = v
            .schema
            .iter()
            .filter(|f| !keys.contains(&f.name.as_str()))
            .map(|f| pb::FeatureField {
                name: f.name.clone(),
                r#type: f.r#type.clone(),
            })
            .collect();
        let ttl_seconds = match &v.ttl {
            None => 0,
            Some(Ttl::Seconds(s)) => *s,
            Some(Ttl::Text(t)) => quiver_features::value::parse_duration(t).ok_or_else(|| {
                anyhow!(
                    "{}: feature_views[{i}].ttl: `{t}` is not a duration (86400, 86400s, 24h, 1d)",
                    path.display()
                )
            })?,
        };
        let stored = current.feature_views.iter().find(|c| c.name == v.name);
        req.feature_views.push(pb::FeatureView {
            name: v.name,
            entities: v.entities,
            fields,
            ttl_seconds,
            owner: v.owner,
            description: v.description,
            tags: tags(v.tags),
            transformation: v.transformation,
            version: version_of(v.version, stored.map(|s| s.version)),
            history: Vec::new(),
        });
    }
    for s in file.feature_services {
        let stored = current.feature_services.iter().find(|c| c.name == s.name);
        req.feature_services.push(pb::FeatureService {
            version: version_of(s.version, stored.map(|c| c.version)),
            name: s.name,
            features: s.features,
            owner: s.owner,
            description: s.description,
            tags: tags(s.tags),
        });
    }
    if req.entities.is_empty() && req.feature_views.is_empty() && req.feature_services.is_empty() {
        bail!(
            "{}: defines nothing (expected entities, feature_views or feature_services)",
            path.display()
        );
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn a_feast_style_file_becomes_typed_definitions() {
        let (_dir, path) = write(
            "defs.yaml",
            "entities:\n  - name: driver\n    join_keys: [driver_id]\nfeature_views:\n  - name: \
             stats\n    entities: [driver]\n    ttl: 2h\n    schema:\n      - {name: driver_id, \
             dtype: Int64}\n      - {name: rate, dtype: Float32}\n",
        );
        let req = request(&path, &pb::FeatureDefinitions::default(), false).unwrap();
        assert_eq!(req.entities[0].join_keys[0].r#type, "Int64");
        assert_eq!(
            req.feature_views[0].fields.len(),
            1,
            "the key is not a feature"
        );
        assert_eq!(req.feature_views[0].ttl_seconds, 7200);
        assert_eq!(req.feature_views[0].version, 0);
        // an existing view is changed as of the version read
        let current = pb::FeatureDefinitions {
            feature_views: vec![pb::FeatureView {
                name: "stats".into(),
                version: 4,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            request(&path, &current, false).unwrap().feature_views[0].version,
            4
        );
    }

    #[test]
    fn mistakes_in_a_file_are_named() {
        for (text, says) in [
            (
                "entities:\n  - name: u\n    join_keys: [id]\n",
                "has no type",
            ),
            (
                "feature_views:\n  - name: v\n    ttl: soon\n",
                "feature_views[0].ttl",
            ),
            ("entitys: []\n", "unknown field `entitys`"),
            ("{}\n", "defines nothing"),
        ] {
            let (_dir, path) = write("defs.yaml", text);
            let e = request(&path, &pb::FeatureDefinitions::default(), true).unwrap_err();
            assert!(e.to_string().contains(says), "{text}: {e}");
        }
    }
}
