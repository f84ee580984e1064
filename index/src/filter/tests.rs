//! Tests of the filter language: its parser and its evaluation.

use super::*;
use serde_json::json;

fn parse(value: Value) -> Filter {
    match Filter::from_json(&value) {
        Ok(filter) => filter,
        Err(e) => panic!("{value} should parse: {e}"),
    }
}

fn parse_err(value: Value) -> FilterError {
    match Filter::from_json(&value) {
        Ok(filter) => panic!("{value} should not parse, got {filter:?}"),
        Err(e) => e,
    }
}

fn assert_err(value: Value, path: &str, message: &str) {
    let err = parse_err(value);
    assert_eq!(err.path, path, "{err}");
    assert_eq!(err.message, message, "{err}");
}

fn cond(key: &str, op: Op) -> Filter {
    Filter::Condition(Condition {
        key: key.to_string(),
        op,
    })
}

fn s(v: &str) -> Scalar {
    Scalar::String(v.to_string())
}

fn payload(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("payload must be an object, got {other}"),
    }
}

fn matches(filter: Value, doc: Value) -> bool {
    parse(filter).matches(&payload(doc))
}

const JAN_15: i64 = 1_705_276_800_000_000; // 2024-01-15T00:00:00Z

// ---- parser ----------------------------------------------------------------------------

#[test]
fn parses_each_operator() {
    assert_eq!(parse(json!({"a": {"$eq": "x"}})), cond("a", Op::Eq(s("x"))));
    assert_eq!(
        parse(json!({"a": {"$ne": 3}})),
        cond("a", Op::Ne(Scalar::Number(3.0)))
    );
    assert_eq!(
        parse(json!({"a": {"$in": ["x", 1, true]}})),
        cond(
            "a",
            Op::In(vec![s("x"), Scalar::Number(1.0), Scalar::Bool(true)])
        )
    );
    assert_eq!(
        parse(json!({"a": {"$nin": ["x"]}})),
        cond("a", Op::Nin(vec![s("x")]))
    );
    assert_eq!(
        parse(json!({"a": {"$exists": false}})),
        cond("a", Op::Exists(false))
    );
    for (name, expected) in [
        (
            "$gt",
            Range {
                gt: Some(Bound::Number(1.5)),
                ..Range::default()
            },
        ),
        (
            "$gte",
            Range {
                gte: Some(Bound::Number(1.5)),
                ..Range::default()
            },
        ),
        (
            "$lt",
            Range {
                lt: Some(Bound::Number(1.5)),
                ..Range::default()
            },
        ),
        (
            "$lte",
            Range {
                lte: Some(Bound::Number(1.5)),
                ..Range::default()
            },
        ),
    ] {
        assert_eq!(
            parse(json!({"a": {name: 1.5}})),
            cond("a", Op::Range(expected))
        );
    }
}

#[test]
fn parses_shorthand_eq() {
    assert_eq!(parse(json!({"a": "x"})), cond("a", Op::Eq(s("x"))));
    assert_eq!(
        parse(json!({"a": 2})),
        cond("a", Op::Eq(Scalar::Number(2.0)))
    );
    assert_eq!(
        parse(json!({"a.b": false})),
        cond("a.b", Op::Eq(Scalar::Bool(false)))
    );
}

#[test]
fn parses_implicit_and() {
    assert_eq!(parse(json!({})), Filter::And(vec![]));
    let filter = parse(json!({"a": 1, "b": "x"}));
    assert_eq!(
        filter,
        Filter::And(vec![
            cond("a", Op::Eq(Scalar::Number(1.0))),
            cond("b", Op::Eq(s("x"))),
        ])
    );
}

#[test]
fn merges_range_operators_and_ands_the_others() {
    assert_eq!(
        parse(json!({"p": {"$gt": 1, "$lte": 5}})),
        cond(
            "p",
            Op::Range(Range {
                gt: Some(Bound::Number(1.0)),
                lte: Some(Bound::Number(5.0)),
                ..Range::default()
            })
        )
    );
    let filter = parse(json!({"p": {"$gte": 1, "$lt": 5, "$ne": 3}}));
    let Filter::And(children) = filter else {
        panic!("expected an and, got {filter:?}");
    };
    assert_eq!(children.len(), 2);
    assert!(children.contains(&cond("p", Op::Ne(Scalar::Number(3.0)))));
    assert!(children.contains(&cond(
        "p",
        Op::Range(Range {
            gte: Some(Bound::Number(1.0)),
            lt: Some(Bound::Number(5.0)),
            ..Range::default()
        })
    )));
}

#[test]
fn parses_logical_nesting() {
    let filter = parse(json!({
        "$or": [
            {"$and": [{"a": 1}, {"b": {"$exists": true}}]},
            {"$not": {"c": "x"}}
        ]
    }));
    assert_eq!(
        filter,
        Filter::Or(vec![
            Filter::And(vec![
                cond("a", Op::Eq(Scalar::Number(1.0))),
                cond("b", Op::Exists(true)),
            ]),
            Filter::Not(Box::new(cond("c", Op::Eq(s("x"))))),
        ])
    );
}

#[test]
fn parses_datetime_bounds() {
    assert_eq!(
        parse(json!({"t": {"$gte": "2024-01-15", "$lt": "2024-01-15T10:00:00+02:00"}})),
        cond(
            "t",
            Op::Range(Range {
                gte: Some(Bound::DateTime(JAN_15)),
                lt: Some(Bound::DateTime(JAN_15 + 8 * 3_600_000_000)),
                ..Range::default()
            })
        )
    );
}

#[test]
fn parses_json_strings() {
    assert_eq!(
        Filter::from_json_str(r#"{"a": {"$in": ["x"]}}"#),
        Ok(cond("a", Op::In(vec![s("x")])))
    );
    let err = Filter::from_json_str("{\"a\": \n  }").unwrap_err();
    assert_eq!(err.path, "");
    assert!(err.message.contains("line 2 column 3"), "{err}");
    assert!(err.message.starts_with("invalid JSON: "), "{err}");
}

// ---- parse errors ----------------------------------------------------------------------

#[test]
fn rejects_non_object_filters() {
    assert_err(json!([1]), "", "expected a filter object, got an array");
    assert_err(json!("x"), "", "expected a filter object, got \"x\"");
    assert_err(
        json!({"$and": [{"a": 1}, 2]}),
        "$and[1]",
        "expected a filter object, got 2",
    );
    assert_err(
        json!({"$not": [1]}),
        "$not",
        "expected a filter object, got an array",
    );
}

#[test]
fn rejects_bad_logical_arrays() {
    assert_err(
        json!({"$and": []}),
        "$and",
        "expected a non-empty array of filters, got an empty array",
    );
    assert_err(
        json!({"$or": {"a": 1}}),
        "$or",
        "expected a non-empty array of filters, got an object",
    );
}

#[test]
fn rejects_bad_bounds_with_exact_paths() {
    assert_err(
        json!({"$and": [{"a": 1}, {"price": {"$gt": "abc"}}]}),
        "$and[1].price.$gt",
        "expected a number or an RFC 3339 datetime, got \"abc\"",
    );
    assert_err(
        json!({"price": {"$lte": true}}),
        "price.$lte",
        "expected a number or an RFC 3339 datetime, got true",
    );
    assert_err(
        json!({"price": {"$lt": null}}),
        "price.$lt",
        "expected a number or an RFC 3339 datetime, got null",
    );
}

#[test]
fn rejects_unknown_operators() {
    assert_err(
        json!({"a": {"$foo": 1}}),
        "a.$foo",
        "unknown operator `$foo`",
    );
    assert_err(json!({"$foo": 1}), "$foo", "unknown operator `$foo`");
    assert_err(
        json!({"$or": [{"$nor": []}]}),
        "$or[0].$nor",
        "unknown operator `$nor`",
    );
    assert_err(
        json!({"a": {"$and": [{"b": 1}]}}),
        "a.$and",
        "logical operator `$and` cannot be used inside a field condition",
    );
    assert_err(
        json!({"a": {"b": 1}}),
        "a.b",
        "expected an operator, got `b` (address nested fields with a dotted key such as `a.b`)",
    );
}

#[test]
fn rejects_null_and_nested_values() {
    assert_err(
        json!({"a": null}),
        "a",
        "expected a string, number or bool, got null",
    );
    assert_err(
        json!({"a": {"$eq": null}}),
        "a.$eq",
        "expected a string, number or bool, got null",
    );
    assert_err(
        json!({"a": [1, 2]}),
        "a",
        "expected a string, number or bool, got an array",
    );
    assert_err(
        json!({"a": {"$ne": {"b": 1}}}),
        "a.$ne",
        "expected a string, number or bool, got an object",
    );
    assert_err(
        json!({"a": {"$in": [1, [2]]}}),
        "a.$in[1]",
        "expected a string, number or bool, got an array",
    );
    assert_err(
        json!({"a": {"$nin": [null]}}),
        "a.$nin[0]",
        "expected a string, number or bool, got null",
    );
    assert_err(
        json!({"a": {"$in": []}}),
        "a.$in",
        "expected a non-empty array of values, got an empty array",
    );
    assert_err(
        json!({"a": {"$nin": "x"}}),
        "a.$nin",
        "expected a non-empty array of values, got \"x\"",
    );
    assert_err(
        json!({"a": {"$exists": 1}}),
        "a.$exists",
        "expected a bool, got 1",
    );
    assert_err(
        json!({"a": {}}),
        "a",
        "expected a scalar or an object of operators, got an empty object",
    );
}

#[test]
fn rejects_bad_keys() {
    assert_err(json!({"": 1}), "", "empty field key");
    assert_err(json!({"$or": [{"": 1}]}), "$or[0]", "empty field key");
    assert_err(
        json!({"a..b": 1}),
        "a..b",
        "field key `a..b` has an empty path segment",
    );
    assert_err(
        json!({"$not": {".a": 1}}),
        "$not..a",
        "field key `.a` has an empty path segment",
    );
    assert_err(
        json!({"a.": {"$exists": true}}),
        "a.",
        "field key `a.` has an empty path segment",
    );
}

#[test]
fn truncates_long_values_in_messages() {
    let long = "x".repeat(200);
    let err = parse_err(json!({"a": {"$gt": long}}));
    assert!(err.message.chars().count() < 140, "{err}");
    assert!(err.message.ends_with('…'), "{err}");
}

/// `{"$not": {"$not": ... {"a": 1}}}`, built in linear time (`json!` would copy `value`).
fn wrap_in_nots(mut value: Value, levels: usize) -> Value {
    for _ in 0..levels {
        let mut map = Map::new();
        map.insert("$not".to_string(), value);
        value = Value::Object(map);
    }
    value
}

fn nested_nots(levels: usize) -> Value {
    wrap_in_nots(json!({"a": 1}), levels)
}

#[test]
fn accepts_the_maximum_depth_and_rejects_one_more() {
    // 31 `$not`s above a condition: depth 32.
    assert!(Filter::from_json(&nested_nots(MAX_FILTER_DEPTH - 1)).is_ok());
    let err = parse_err(nested_nots(MAX_FILTER_DEPTH));
    assert_eq!(err.message, "filter nests deeper than 32 levels");
    assert_eq!(err.path, ["$not"; MAX_FILTER_DEPTH].join("."));

    // Implicit ands count as levels too.
    let value = wrap_in_nots(json!({"a": 1, "b": 2}), MAX_FILTER_DEPTH - 2);
    assert!(Filter::from_json(&value).is_ok());
    let err = parse_err(wrap_in_nots(value, 1));
    assert_eq!(err.message, "filter nests deeper than 32 levels");

    // So do the ands of several operators on one field.
    let value = wrap_in_nots(
        json!({"a": {"$ne": 1, "$exists": true}}),
        MAX_FILTER_DEPTH - 2,
    );
    assert!(Filter::from_json(&value).is_ok());
    let err = parse_err(wrap_in_nots(value, 1));
    assert_eq!(err.path, ["$not"; MAX_FILTER_DEPTH - 1].join(".") + ".a");
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    // The 10,000-level value is built and dropped on a thread with a large stack (serde_json
    // drops values recursively), but parsed on one with a small stack: the parser must stop
    // after MAX_FILTER_DEPTH levels, as the error path also shows.
    let handle = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(|| {
            let value = nested_nots(10_000);
            let err = std::thread::scope(|scope| {
                std::thread::Builder::new()
                    .stack_size(256 << 10)
                    .spawn_scoped(scope, || Filter::from_json(&value).map(|_| ()))
                    .expect("spawn parser thread")
                    .join()
                    .expect("parser thread")
            });
            let text = "{\"$not\":".repeat(10_000) + "{}" + &"}".repeat(10_000);
            let from_str = Filter::from_json_str(&text).map(|_| ());
            (err, from_str)
        })
        .expect("spawn test thread");
    let (err, from_str) = handle.join().expect("test thread");
    let err = err.unwrap_err();
    assert_eq!(err.message, "filter nests deeper than 32 levels");
    assert_eq!(err.path, ["$not"; MAX_FILTER_DEPTH].join("."));
    assert_eq!(from_str.unwrap_err().path, "");

    // Within serde_json's own nesting limit, the depth check reports it.
    let text = "{\"$not\":".repeat(100) + "{}" + &"}".repeat(100);
    let err = Filter::from_json_str(&text).unwrap_err();
    assert_eq!(err.message, "filter nests deeper than 32 levels");
}

// ---- validate --------------------------------------------------------------------------

#[test]
fn validate_checks_trees_built_in_code() {
    assert_eq!(Filter::And(vec![]).validate(), Ok(()));
    let mut deep = cond("a", Op::Exists(true));
    for _ in 0..MAX_FILTER_DEPTH - 1 {
        deep = Filter::Not(Box::new(deep));
    }
    assert_eq!(deep.validate(), Ok(()));
    let deeper = Filter::Or(vec![deep]);
    let err = deeper.validate().unwrap_err();
    assert_eq!(err.message, "filter nests deeper than 32 levels");
    // A too-deep filter matches nothing instead of recursing without bound.
    assert!(!deeper.matches(&payload(json!({"a": 1}))));

    let err = Filter::And(vec![
        cond("a", Op::Exists(true)),
        cond("", Op::Exists(true)),
    ])
    .validate()
    .unwrap_err();
    assert_eq!(
        (err.path.as_str(), err.message.as_str()),
        ("$and[1]", "empty field key")
    );

    let err = Filter::Not(Box::new(cond("x..y", Op::Exists(true))))
        .validate()
        .unwrap_err();
    assert_eq!(err.path, "$not.x..y");

    let err = cond("$x", Op::Exists(true)).validate().unwrap_err();
    assert_eq!(err.path, "$x");

    let err = Filter::Or(vec![]).validate().unwrap_err();
    assert_eq!(err.path, "$or");

    let err = Filter::Or(vec![cond("a", Op::Nin(vec![]))])
        .validate()
        .unwrap_err();
    assert_eq!(err.path, "$or[0].a.$nin");

    let err = cond("a", Op::Range(Range::default()))
        .validate()
        .unwrap_err();
    assert_eq!(
        (err.path.as_str(), err.message.as_str()),
        ("a", "range has no bounds")
    );
}

// ---- evaluation ------------------------------------------------------------------------

#[test]
fn eq_compares_by_type_and_numerically() {
    let doc = json!({"s": "x", "n": 3, "f": 2.5, "b": true});
    assert!(matches(json!({"s": "x"}), doc.clone()));
    assert!(!matches(json!({"s": "X"}), doc.clone()));
    assert!(matches(json!({"n": 3.0}), doc.clone()));
    assert!(matches(json!({"f": 2.5}), doc.clone()));
    assert!(!matches(json!({"n": "3"}), doc.clone()));
    assert!(matches(json!({"b": true}), doc.clone()));
    assert!(!matches(json!({"b": 1}), doc.clone()));
    assert!(!matches(json!({"missing": "x"}), doc));
}

#[test]
fn arrays_match_when_any_element_does() {
    let doc = json!({"tags": ["a", "b", 7], "nums": [1, 5, 9]});
    assert!(matches(json!({"tags": "b"}), doc.clone()));
    assert!(matches(json!({"tags": 7}), doc.clone()));
    assert!(!matches(json!({"tags": "c"}), doc.clone()));
    assert!(!matches(json!({"tags": {"$ne": "a"}}), doc.clone()));
    assert!(matches(json!({"tags": {"$in": ["z", "a"]}}), doc.clone()));
    assert!(matches(json!({"tags": {"$nin": ["z", "y"]}}), doc.clone()));
    assert!(!matches(json!({"tags": {"$nin": ["z", "b"]}}), doc.clone()));
    assert!(matches(json!({"nums": {"$gt": 4, "$lt": 6}}), doc.clone()));
    assert!(!matches(json!({"nums": {"$gt": 5, "$lt": 9}}), doc));
}

#[test]
fn an_explicit_null_counts_as_absent() {
    for doc in [json!({"a": null}), json!({})] {
        assert!(
            !matches(json!({"a": {"$exists": true}}), doc.clone()),
            "{doc}"
        );
        assert!(
            matches(json!({"a": {"$exists": false}}), doc.clone()),
            "{doc}"
        );
        assert!(matches(json!({"a": {"$ne": 1}}), doc.clone()), "{doc}");
        assert!(
            matches(json!({"a": {"$nin": [1, 2]}}), doc.clone()),
            "{doc}"
        );
        assert!(!matches(json!({"a": {"$gte": 0}}), doc.clone()), "{doc}");
    }
    assert!(matches(json!({"a": {"$exists": true}}), json!({"a": 0})));
    assert!(matches(json!({"a": {"$exists": true}}), json!({"a": []})));
}

#[test]
fn nested_keys_follow_objects() {
    let doc = json!({"meta": {"author": {"name": "ann", "age": 40}}, "flat": 1});
    assert!(matches(json!({"meta.author.name": "ann"}), doc.clone()));
    assert!(matches(
        json!({"meta.author.age": {"$gte": 40}}),
        doc.clone()
    ));
    assert!(!matches(
        json!({"meta.author.name.first": "ann"}),
        doc.clone()
    ));
    assert!(!matches(json!({"flat.x": {"$exists": true}}), doc.clone()));
    assert!(matches(
        json!({"meta.author": {"$exists": true}}),
        doc.clone()
    ));
    let doc = payload(doc);
    assert_eq!(lookup(&doc, "meta.author.name"), Some(&json!("ann")));
    assert_eq!(lookup(&doc, "meta.nobody"), None);
    assert_eq!(lookup(&doc, ""), None);
}

#[test]
fn absent_and_null_fields() {
    let doc = json!({"a": null, "b": 1});
    for key in ["a", "missing"] {
        assert!(!matches(json!({key: {"$exists": true}}), doc.clone()));
        assert!(matches(json!({key: {"$exists": false}}), doc.clone()));
        assert!(matches(json!({key: {"$ne": 1}}), doc.clone()));
        assert!(matches(json!({key: {"$nin": [1]}}), doc.clone()));
        assert!(!matches(json!({key: {"$in": [1]}}), doc.clone()));
        assert!(!matches(json!({key: {"$gte": 0}}), doc.clone()));
    }
    assert!(matches(json!({"b": {"$exists": true}}), doc.clone()));
    assert!(!matches(json!({"b": {"$exists": false}}), doc));
}

#[test]
fn logical_operators() {
    let doc = json!({"a": 1, "b": "x"});
    assert!(matches(json!({}), doc.clone()));
    assert!(matches(json!({"a": 1, "b": "x"}), doc.clone()));
    assert!(!matches(json!({"a": 1, "b": "y"}), doc.clone()));
    assert!(matches(json!({"$or": [{"a": 2}, {"b": "x"}]}), doc.clone()));
    assert!(!matches(
        json!({"$or": [{"a": 2}, {"b": "y"}]}),
        doc.clone()
    ));
    assert!(matches(json!({"$not": {"a": 2}}), doc.clone()));
    assert!(!matches(
        json!({"$and": [{"a": 1}, {"$not": {"b": "x"}}]}),
        doc
    ));
}

#[test]
fn ranges_respect_strictness_and_types() {
    let doc = json!({"n": 5, "s": "5"});
    assert!(matches(json!({"n": {"$gte": 5}}), doc.clone()));
    assert!(!matches(json!({"n": {"$gt": 5}}), doc.clone()));
    assert!(matches(json!({"n": {"$lte": 5}}), doc.clone()));
    assert!(!matches(json!({"n": {"$lt": 5}}), doc.clone()));
    assert!(matches(json!({"n": {"$gt": 4.5, "$lt": 5.5}}), doc.clone()));
    assert!(!matches(json!({"s": {"$gte": 0}}), doc));
}

#[test]
fn datetime_ranges() {
    let doc = json!({
        "t": "2024-01-15T10:00:00+02:00", // 08:00Z
        "d": "2024-01-15",
        "epoch": 1_705_276_800, // 2024-01-15T00:00:00Z in seconds
        "bad": "yesterday",
        "many": ["2020-01-01", "2024-06-01T00:00:00Z"]
    });
    assert!(matches(
        json!({"t": {"$gt": "2024-01-15T07:59:59Z"}}),
        doc.clone()
    ));
    assert!(matches(
        json!({"t": {"$lte": "2024-01-15T08:00:00Z"}}),
        doc.clone()
    ));
    assert!(!matches(
        json!({"t": {"$lt": "2024-01-15T08:00:00Z"}}),
        doc.clone()
    ));
    assert!(matches(
        json!({"t": {"$gte": "2024-01-15T09:00:00+01:00"}}),
        doc.clone()
    ));
    assert!(matches(
        json!({"t": {"$gt": "2024-01-15T07:59:59.999999Z"}}),
        doc.clone()
    ));
    assert!(matches(
        json!({"d": {"$gte": "2024-01-15T00:00:00Z"}}),
        doc.clone()
    ));
    assert!(!matches(json!({"d": {"$gt": "2024-01-15"}}), doc.clone()));
    assert!(matches(
        json!({"epoch": {"$gte": "2024-01-15"}}),
        doc.clone()
    ));
    assert!(!matches(
        json!({"epoch": {"$gt": "2024-01-15"}}),
        doc.clone()
    ));
    assert!(!matches(json!({"bad": {"$gt": "2000-01-01"}}), doc.clone()));
    assert!(matches(json!({"many": {"$gt": "2024-01-01"}}), doc.clone()));
    assert!(!matches(
        json!({"many": {"$gt": "2025-01-01"}}),
        doc.clone()
    ));
    // A datetime string never compares with a number bound.
    assert!(!matches(json!({"d": {"$gt": 0}}), doc));
}

#[test]
fn parse_datetime_forms() {
    assert_eq!(parse_datetime("2024-01-15"), Some(JAN_15));
    assert_eq!(parse_datetime("2024-01-15T00:00:00Z"), Some(JAN_15));
    assert_eq!(parse_datetime("2024-01-15T02:00:00+02:00"), Some(JAN_15));
    assert_eq!(parse_datetime("2024-01-14T19:00:00-05:00"), Some(JAN_15));
    assert_eq!(
        parse_datetime("2024-01-15T00:00:00.25Z"),
        Some(JAN_15 + 250_000)
    );
    assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_datetime("1969-12-31"), Some(-86_400_000_000));
    for bad in [
        "",
        "2024-1-15",
        "2024-02-30",
        "2024-01-15T10:00:00",
        "2024-01-15 10:00",
        "yesterday",
        "+2024-01-1",
        "２０２４-01-15",
    ] {
        assert_eq!(parse_datetime(bad), None, "{bad}");
    }
}

#[test]
fn nan_never_matches() {
    let doc = payload(json!({"n": 1.0, "tags": [1, 2]}));
    assert!(!cond("n", Op::Eq(Scalar::Number(f64::NAN))).matches(&doc));
    assert!(!cond("n", Op::In(vec![Scalar::Number(f64::NAN)])).matches(&doc));
    assert!(cond("n", Op::Ne(Scalar::Number(f64::NAN))).matches(&doc));
    for range in [
        Range {
            gt: Some(Bound::Number(f64::NAN)),
            ..Range::default()
        },
        Range {
            lte: Some(Bound::Number(f64::NAN)),
            ..Range::default()
        },
    ] {
        assert!(!cond("n", Op::Range(range)).matches(&doc));
        assert!(!cond("tags", Op::Range(range)).matches(&doc));
    }
}

#[test]
fn seconds_convert_to_micros() {
    assert_eq!(seconds_to_micros(1.5), Some(1_500_000));
    assert_eq!(seconds_to_micros(-1.0), Some(-1_000_000));
    assert_eq!(seconds_to_micros(f64::NAN), None);
    assert_eq!(seconds_to_micros(1e300), None);
    assert_eq!(value_micros(&json!(true)), None);
}
