use super::*;

fn user() -> Entity {
    Entity {
        name: "user".into(),
        join_keys: vec![JoinKey {
            name: "user_id".into(),
            value_type: ValueType::Int64,
        }],
        ..Entity::default()
    }
}

fn stats(fields: &[(&str, ValueType)]) -> FeatureView {
    FeatureView {
        name: "user_stats".into(),
        entities: vec!["user".into()],
        fields: fields
            .iter()
            .map(|(n, t)| Field {
                name: n.to_string(),
                value_type: *t,
            })
            .collect(),
        ttl_seconds: 3600,
        ..FeatureView::default()
    }
}

fn first_set() -> DefinitionSet {
    DefinitionSet {
        entities: vec![user()],
        feature_views: vec![stats(&[("clicks", ValueType::Int64)])],
        feature_services: vec![FeatureService {
            name: "s1".into(),
            features: vec!["user_stats:clicks".into()],
            ..FeatureService::default()
        }],
    }
}

fn actions(plan: &Plan) -> Vec<(&str, PlanAction, u64)> {
    plan.iter()
        .map(|p| (p.name.as_str(), p.action, p.version))
        .collect()
}

#[test]
fn a_set_is_created_then_unchanged_when_applied_again() {
    let mut registry = Registry::default();
    let set = first_set();
    set.validate().unwrap();
    let plan = registry.apply(&set, 7).unwrap();
    assert_eq!(
        actions(&plan),
        [
            ("user", PlanAction::Created, 1),
            ("user_stats", PlanAction::Created, 1),
            ("s1", PlanAction::Created, 1)
        ]
    );
    assert_eq!(registry.view("user_stats").unwrap().id, 7);
    let before = registry.clone();
    let again = registry.apply(&set, 9).unwrap();
    assert!(again.iter().all(|p| p.action == PlanAction::Unchanged));
    assert_eq!(registry, before);
}

#[test]
fn a_change_names_the_version_it_replaces_or_is_refused() {
    let mut registry = Registry::default();
    registry.apply(&first_set(), 1).unwrap();
    let mut changed = first_set();
    changed.feature_views[0].fields.push(Field {
        name: "spend".into(),
        value_type: ValueType::Float64,
    });
    // Not naming a version: refused, nothing changes.
    let before = registry.clone();
    let err = registry.apply(&changed, 2).unwrap_err();
    assert!(matches!(err, FeatureError::Conflict(_)), "{err}");
    assert_eq!(registry, before);
    // Two writers read version 1; the first wins, the second is refused.
    changed.feature_views[0].version = 1;
    let plan = registry.apply(&changed, 3).unwrap();
    assert_eq!(plan[1].action, PlanAction::Changed);
    assert_eq!(plan[1].changes, ["fields"]);
    let mut other = first_set();
    other.feature_views[0].ttl_seconds = 60;
    other.feature_views[0].version = 1;
    let err = registry.apply(&other, 4).unwrap_err();
    assert!(err.to_string().contains("version 2, not 1"), "{err}");
    assert_eq!(registry.view("user_stats").unwrap().version, 2);
}

#[test]
fn a_schema_change_is_a_new_version_that_reads_may_pin() {
    let mut registry = Registry::default();
    registry.apply(&first_set(), 1).unwrap();
    let mut v2 = first_set();
    v2.feature_views[0] = stats(&[("clicks", ValueType::Int64), ("spend", ValueType::Float64)]);
    v2.feature_views[0].version = 1;
    registry.apply(&v2, 2).unwrap();
    let mut v3 = v2.clone();
    v3.feature_views[0].description = "only words change".into();
    v3.feature_views[0].version = 2;
    registry.apply(&v3, 3).unwrap();
    let view = registry.view("user_stats").unwrap();
    assert_eq!(view.version, 3);
    assert_eq!(view.id, 1, "a view keeps its id across versions");
    assert_eq!(view.at(Some(1)).unwrap().fields.len(), 1);
    assert_eq!(view.at(Some(2)).unwrap().fields.len(), 2);
    assert_eq!(view.at(Some(3)).unwrap().version, 2, "v3 changed no schema");
    assert!(view.at(Some(4)).is_err());
    // rows stored at one version read at another: a feature the row lacks is null
    let current = view.current().fields;
    assert_eq!(
        view.project(1, &[Value::Int64(5)], &current),
        [Value::Int64(5), Value::Null]
    );
    let v1 = view.at(Some(1)).unwrap().fields;
    assert_eq!(
        view.project(2, &[Value::Int64(5), Value::Float64(1.5)], &v1),
        [Value::Int64(5)]
    );
    let pinned = registry
        .select("features", &["user_stats@v1:clicks".into()], None)
        .unwrap();
    assert_eq!(pinned[0].label, "user_stats@v1");
    let err = registry
        .select("features", &["user_stats@v1:spend".into()], None)
        .unwrap_err();
    assert!(err.to_string().contains("no feature `spend`"), "{err}");
}

#[test]
fn references_must_resolve_and_keys_cannot_change_under_views() {
    let mut registry = Registry::default();
    let mut set = first_set();
    set.entities.clear();
    let err = registry.apply(&set, 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "feature_views[0].entities[0]: entity `user` is not defined"
    );
    let mut set = first_set();
    set.feature_services[0].features = vec!["user_stats:nope".into()];
    let err = registry.apply(&set, 1).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("feature_services[0].features[0]"),
        "{err}"
    );
    registry.apply(&first_set(), 1).unwrap();
    let mut rekeyed = first_set();
    rekeyed.entities[0].join_keys[0].value_type = ValueType::String;
    rekeyed.entities[0].version = 1;
    let err = registry.apply(&rekeyed, 2).unwrap_err();
    assert!(err.to_string().contains("cannot change"), "{err}");
    let mut field_is_key = first_set();
    field_is_key.feature_views[0].fields[0].name = "user_id".into();
    field_is_key.feature_views[0].version = 1;
    assert!(registry.apply(&field_is_key, 3).is_err());
}

#[test]
fn malformed_definitions_name_the_field() {
    let cases: Vec<(Box<dyn Fn(&mut DefinitionSet)>, &str)> = vec![
        (
            Box::new(|s| s.entities[0].name = "bad name".into()),
            "entities[0].name",
        ),
        (
            Box::new(|s| s.entities[0].join_keys.clear()),
            "entities[0].join_keys",
        ),
        (
            Box::new(|s| s.entities[0].join_keys[0].value_type = ValueType::Float64),
            "entities[0].join_keys[0].type",
        ),
        (
            Box::new(|s| s.feature_views[0].fields[0].name = "event_timestamp".into()),
            "feature_views[0].fields[0].name",
        ),
        (
            Box::new(|s| {
                let f = s.feature_views[0].fields[0].clone();
                s.feature_views[0].fields.push(f);
            }),
            "feature_views[0].fields[1]",
        ),
        (
            Box::new(|s| s.feature_views[0].entities.clear()),
            "feature_views[0].entities",
        ),
        (
            Box::new(|s| s.feature_services[0].features = vec!["@v2:x".into()]),
            "feature_services[0].features[0]",
        ),
        (
            Box::new(|s| {
                let v = s.feature_views[0].clone();
                s.feature_views.push(v);
            }),
            "feature_views[1]",
        ),
    ];
    for (change, field) in cases {
        let mut set = first_set();
        change(&mut set);
        match set.validate() {
            Err(FeatureError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn selections_group_features_by_view_and_name_them() {
    let mut registry = Registry::default();
    let mut set = first_set();
    set.feature_views[0] = stats(&[("clicks", ValueType::Int64), ("spend", ValueType::Float64)]);
    registry.apply(&set, 1).unwrap();
    let chosen = registry
        .select(
            "features",
            &["user_stats:spend".into(), "user_stats".into()],
            None,
        )
        .unwrap();
    assert_eq!(chosen.len(), 1);
    let names: Vec<_> = chosen[0].features.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["spend", "clicks"]);
    assert_eq!(chosen[0].output_name("spend", true), "user_stats__spend");
    assert_eq!(chosen[0].reference("spend"), "user_stats:spend");
    let by_service = registry.select("features", &[], Some("s1")).unwrap();
    assert_eq!(by_service[0].features.len(), 1);
    assert!(matches!(
        registry.select("features", &[], Some("nope")),
        Err(FeatureError::NotFound(_))
    ));
    assert!(registry.select("features", &[], None).is_err());
}
