//! Tests of the payload indexes: each kind of field, the bounds they give, and a property test against the filter.

use super::*;
use proptest::prelude::*;
use serde_json::json;

fn payload(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("payload must be an object, got {other}"),
    }
}

fn filter(value: Value) -> Filter {
    match Filter::from_json(&value) {
        Ok(filter) => filter,
        Err(e) => panic!("{value} should parse: {e}"),
    }
}

fn bitmap(slots: &[Slot]) -> RoaringBitmap {
    slots.iter().copied().collect()
}

fn declared() -> Vec<(String, FieldType)> {
    [
        ("kw", FieldType::Keyword),
        ("int", FieldType::Integer),
        ("flt", FieldType::Float),
        ("dt", FieldType::Datetime),
        ("m.k", FieldType::Keyword),
    ]
    .into_iter()
    .map(|(name, t)| (name.to_string(), t))
    .collect()
}

fn index_of(payloads: &[Value]) -> PayloadIndex {
    let mut index = PayloadIndex::new(&declared());
    for (slot, doc) in payloads.iter().enumerate() {
        index.insert(slot as Slot, &payload(doc.clone()));
    }
    index
}

fn candidates(index: &PayloadIndex, f: Value) -> Option<RoaringBitmap> {
    index.candidates(&filter(f))
}

#[test]
fn bounds_are_exact_when_indexes_answer_every_condition_whole() {
    let index = index_of(&[
        json!({"kw": "a", "int": 1, "dt": "2024-01-15", "free": 1}),
        json!({"kw": ["a", "b"], "int": 5, "free": 2}),
        json!({"kw": "c", "flt": 2.5}),
    ]);
    let exact = |f: Value| index.bound(&filter(f)).map(|b| b.exact);
    assert_eq!(exact(json!({"kw": "a"})), Some(true));
    assert_eq!(exact(json!({"kw": {"$in": ["a", "c"]}})), Some(true));
    assert_eq!(exact(json!({"int": {"$gte": 1, "$lt": 5}})), Some(true));
    assert_eq!(exact(json!({"dt": {"$gte": "2024-01-01"}})), Some(true));
    assert_eq!(
        exact(json!({"$or": [{"kw": "c"}, {"flt": {"$gt": 2}}]})),
        Some(true)
    );
    assert_eq!(exact(json!({"kw": "a", "int": 5})), Some(true));
    // a bound of the other kind is ignored by the index, so the filter must still be tested
    assert_eq!(
        exact(json!({"int": {"$gte": 1, "$lt": "2024-01-01"}})),
        Some(false)
    );
    // an unindexed child of an `And` leaves its part to the filter
    assert_eq!(exact(json!({"kw": "a", "free": 1})), Some(false));
    assert_eq!(exact(json!({"free": 1})), None);
    assert_eq!(exact(json!({"$or": [{"kw": "a"}, {"free": 1}]})), None);
    assert_eq!(
        index
            .bound(&filter(json!({"kw": "a", "int": 5})))
            .map(|b| b.slots),
        Some(bitmap(&[1]))
    );
}

#[test]
fn field_type_names_round_trip() {
    for t in [
        FieldType::Keyword,
        FieldType::Integer,
        FieldType::Float,
        FieldType::Datetime,
    ] {
        assert_eq!(t.to_string().parse::<FieldType>(), Ok(t));
        assert_eq!(
            serde_json::to_value(t).ok(),
            Some(Value::String(t.to_string()))
        );
    }
    let err = "text".parse::<FieldType>().unwrap_err();
    assert_eq!(
        err,
        "unknown field type `text`: expected one of keyword, integer, float, datetime"
    );
}

#[test]
fn declares_fields_in_order_and_later_types_win() {
    let index = PayloadIndex::new(&[
        ("a".to_string(), FieldType::Keyword),
        ("b".to_string(), FieldType::Float),
        ("a".to_string(), FieldType::Integer),
    ]);
    assert_eq!(
        index.fields(),
        vec![
            ("a".to_string(), FieldType::Integer),
            ("b".to_string(), FieldType::Float)
        ]
    );
    assert!(PayloadIndex::default().fields().is_empty());
}

#[test]
fn a_field_added_later_bounds_nothing_until_built() {
    let docs = [
        json!({"late": "x"}),
        json!({"late": "y"}),
        json!({"late": "x"}),
    ];
    let mut index = PayloadIndex::default();
    for (slot, doc) in docs.iter().enumerate() {
        index.insert(slot as Slot, &payload(doc.clone()));
    }
    let first = index.add_building("late", FieldType::Keyword).unwrap();
    assert!(
        index.add_building("late", FieldType::Keyword).is_none(),
        "added once"
    );
    // A slot written while the field builds is indexed at once ...
    index.insert(3, &payload(json!({"late": "x"})));
    // ... but the field bounds nothing until the older slots are in.
    assert_eq!(candidates(&index, json!({"late": "x"})), None);
    for (slot, doc) in docs.iter().enumerate() {
        index.insert_field("late", slot as Slot, &payload(doc.clone()));
    }
    index.insert_field("late", 3, &payload(json!({"late": "x"})));
    // A build of the same name started before a drop cannot finish a later one.
    index.drop_field("late");
    let second = index.add_building("late", FieldType::Keyword).unwrap();
    index.mark_built("late", first);
    assert!(index.is_building("late"));
    for (slot, doc) in docs.iter().enumerate() {
        index.insert_field("late", slot as Slot, &payload(doc.clone()));
    }
    index.insert_field("late", 3, &payload(json!({"late": "x"})));
    index.mark_built("late", second);
    let x = candidates(&index, json!({"late": "x"})).unwrap();
    assert_eq!(x.iter().collect::<Vec<_>>(), vec![0, 2, 3]);
    index.drop_field("late");
    assert_eq!(candidates(&index, json!({"late": "x"})), None);
    assert!(index.fields().is_empty());
}

#[test]
fn keyword_eq_and_in() {
    let index = index_of(&[
        json!({"kw": "a"}),
        json!({"kw": ["a", "b"]}),
        json!({"kw": "c", "m": {"k": "a"}}),
        json!({"kw": 1}),
    ]);
    assert_eq!(
        candidates(&index, json!({"kw": "a"})),
        Some(bitmap(&[0, 1]))
    );
    assert_eq!(candidates(&index, json!({"kw": "zzz"})), Some(bitmap(&[])));
    assert_eq!(
        candidates(&index, json!({"kw": {"$in": ["b", "c"]}})),
        Some(bitmap(&[1, 2]))
    );
    assert_eq!(candidates(&index, json!({"m.k": "a"})), Some(bitmap(&[2])));
    // Type mismatches and negations are not bounded.
    assert_eq!(candidates(&index, json!({"kw": 1})), None);
    assert_eq!(candidates(&index, json!({"kw": {"$in": ["a", 1]}})), None);
    assert_eq!(candidates(&index, json!({"kw": {"$gt": 1}})), None);
    assert_eq!(candidates(&index, json!({"kw": {"$ne": "a"}})), None);
    assert_eq!(candidates(&index, json!({"kw": {"$nin": ["a"]}})), None);
    assert_eq!(candidates(&index, json!({"kw": {"$exists": true}})), None);
    assert_eq!(candidates(&index, json!({"$not": {"kw": "a"}})), None);
    assert_eq!(candidates(&index, json!({"other": "a"})), None);
}

#[test]
fn numeric_ranges_keep_strictness() {
    let index = index_of(&[
        json!({"int": 1, "flt": 1.0}),
        json!({"int": 2, "flt": 2.5}),
        json!({"int": 3, "flt": -0.0}),
        json!({"int": [4, 10], "flt": [4.0, 10.5]}),
    ]);
    let cases = [
        (json!({"int": {"$gt": 2}}), vec![2, 3]),
        (json!({"int": {"$gte": 2}}), vec![1, 2, 3]),
        (json!({"int": {"$lt": 2}}), vec![0]),
        (json!({"int": {"$lte": 2}}), vec![0, 1]),
        (json!({"int": {"$gt": 1.5, "$lt": 3.5}}), vec![1, 2]),
        (json!({"int": {"$gte": 2, "$gt": 2}}), vec![2, 3]),
        (json!({"int": {"$gt": 3, "$lt": 4}}), vec![]),
        (json!({"int": {"$gt": 5, "$lt": 2}}), vec![]),
        (json!({"int": {"$gte": 3, "$lte": 3}}), vec![2]),
        (json!({"int": 2.0}), vec![1]),
        (json!({"int": 2.5}), vec![]),
        (json!({"int": {"$in": [1, 10]}}), vec![0, 3]),
        (json!({"flt": {"$gt": 1}}), vec![1, 3]),
        (json!({"flt": {"$gte": 1}}), vec![0, 1, 3]),
        (json!({"flt": {"$lt": 1}}), vec![2]),
        (json!({"flt": {"$lte": 0}}), vec![2]),
        (json!({"flt": 0}), vec![2]),
        (json!({"flt": 1}), vec![0]),
        (json!({"flt": {"$gt": 2.5, "$lte": 2.5}}), vec![]),
        (json!({"flt": {"$gt": 10, "$lt": 11}}), vec![3]),
    ];
    for (f, expected) in cases {
        assert_eq!(
            candidates(&index, f.clone()),
            Some(bitmap(&expected)),
            "{f}"
        );
    }
    // Datetime bounds on numeric fields and number eq on keyword fields are not bounded.
    assert_eq!(
        candidates(&index, json!({"int": {"$gt": "2024-01-01"}})),
        None
    );
    assert_eq!(candidates(&index, json!({"flt": "x"})), None);
}

#[test]
fn integer_index_handles_fractions_and_huge_numbers() {
    let index = index_of(&[
        json!({"int": 2.5}),
        json!({"int": 3.0}),
        json!({"int": u64::MAX}),
        json!({"int": i64::MAX}),
        json!({"int": i64::MIN}),
    ]);
    assert_eq!(candidates(&index, json!({"int": 3})), Some(bitmap(&[1])));
    assert_eq!(
        candidates(&index, json!({"int": {"$gt": 2, "$lt": 3}})),
        Some(bitmap(&[0]))
    );
    // i64::MAX and u64::MAX both round to 2^63 (and beyond) as floats.
    assert_eq!(
        candidates(&index, json!({"int": {"$gte": 9.223372036854776e18}})),
        Some(bitmap(&[2, 3]))
    );
    assert_eq!(
        candidates(&index, json!({"int": {"$lt": -1e30}})),
        Some(bitmap(&[]))
    );
    assert_eq!(
        candidates(&index, json!({"int": {"$lte": -9.223372036854776e18}})),
        Some(bitmap(&[4]))
    );
}

#[test]
fn nan_and_infinite_bounds() {
    let index = index_of(&[json!({"int": 1, "flt": 1.5})]);
    let range_on = |key: &str, range: Range| {
        Filter::Condition(Condition {
            key: key.to_string(),
            op: Op::Range(range),
        })
    };
    for key in ["int", "flt"] {
        let lt_nan = Range {
            lt: Some(Bound::Number(f64::NAN)),
            ..Range::default()
        };
        assert_eq!(index.candidates(&range_on(key, lt_nan)), Some(bitmap(&[])));
        let eq_nan = Filter::Condition(Condition {
            key: key.to_string(),
            op: Op::Eq(Scalar::Number(f64::NAN)),
        });
        assert_eq!(index.candidates(&eq_nan), Some(bitmap(&[])));
        let all = Range {
            gt: Some(Bound::Number(f64::NEG_INFINITY)),
            lt: Some(Bound::Number(f64::INFINITY)),
            ..Range::default()
        };
        assert_eq!(index.candidates(&range_on(key, all)), Some(bitmap(&[0])));
    }
}

#[test]
fn datetime_ranges() {
    let index = index_of(&[
        json!({"dt": "2024-01-15"}),
        json!({"dt": "2024-01-15T10:00:00+02:00"}),
        json!({"dt": 1_705_276_800}), // 2024-01-15T00:00:00Z in seconds
        json!({"dt": ["2020-01-01", "not a date"]}),
        json!({"dt": "not a date"}),
    ]);
    let cases = [
        (json!({"dt": {"$gt": "2024-01-15"}}), vec![1]),
        (json!({"dt": {"$gte": "2024-01-15"}}), vec![0, 1, 2]),
        (
            json!({"dt": {"$lt": "2024-01-15T08:00:00Z"}}),
            vec![0, 2, 3],
        ),
        (
            json!({"dt": {"$lte": "2024-01-15T08:00:00Z"}}),
            vec![0, 1, 2, 3],
        ),
        (
            json!({"dt": {"$gt": "2019-12-31", "$lt": "2021-01-01"}}),
            vec![3],
        ),
        (json!({"dt": {"$gt": "2030-01-01"}}), vec![]),
    ];
    for (f, expected) in cases {
        assert_eq!(
            candidates(&index, f.clone()),
            Some(bitmap(&expected)),
            "{f}"
        );
    }
    assert_eq!(candidates(&index, json!({"dt": {"$gt": 0}})), None);
    assert_eq!(candidates(&index, json!({"dt": "2024-01-15"})), None);
}

#[test]
fn and_or_combine_children() {
    let index = index_of(&[
        json!({"kw": "a", "int": 1}),
        json!({"kw": "a", "int": 2}),
        json!({"kw": "b", "int": 2}),
    ]);
    assert_eq!(
        candidates(&index, json!({"kw": "a", "int": 2})),
        Some(bitmap(&[1]))
    );
    assert_eq!(
        candidates(&index, json!({"kw": "a", "free": 2})),
        Some(bitmap(&[0, 1]))
    );
    assert_eq!(candidates(&index, json!({"free": 2, "x": 1})), None);
    assert_eq!(candidates(&index, json!({})), None);
    assert_eq!(
        candidates(&index, json!({"$or": [{"kw": "b"}, {"int": 1}]})),
        Some(bitmap(&[0, 2]))
    );
    assert_eq!(
        candidates(&index, json!({"$or": [{"kw": "b"}, {"free": 1}]})),
        None
    );
    assert_eq!(
        candidates(
            &index,
            json!({"$and": [{"$or": [{"kw": "b"}, {"int": 1}]}, {"$not": {"kw": "a"}}]})
        ),
        Some(bitmap(&[0, 2]))
    );
}

#[test]
fn too_deep_filters_are_unbounded() {
    let index = index_of(&[json!({"kw": "a"})]);
    let mut deep = filter(json!({"kw": "a"}));
    for _ in 0..MAX_FILTER_DEPTH {
        deep = Filter::And(vec![deep]);
    }
    assert_eq!(index.candidates(&deep), None);
}

#[test]
fn insert_and_remove() {
    let docs = [
        json!({"kw": ["a", "b"], "int": 1, "flt": 0.5, "dt": "2024-01-01"}),
        json!({"kw": "a", "int": [1, 2.5], "flt": 0.5, "dt": 1_704_067_200}),
    ];
    let mut index = index_of(&docs);
    assert_eq!(
        candidates(&index, json!({"kw": "a"})),
        Some(bitmap(&[0, 1]))
    );
    assert_eq!(candidates(&index, json!({"int": 1})), Some(bitmap(&[0, 1])));
    assert_eq!(
        candidates(&index, json!({"dt": {"$gte": "2024-01-01"}})),
        Some(bitmap(&[0, 1]))
    );

    index.remove(0, &payload(docs[0].clone()));
    assert_eq!(candidates(&index, json!({"kw": "a"})), Some(bitmap(&[1])));
    assert_eq!(candidates(&index, json!({"kw": "b"})), Some(bitmap(&[])));
    assert_eq!(candidates(&index, json!({"int": 1})), Some(bitmap(&[1])));
    assert_eq!(candidates(&index, json!({"flt": 0.5})), Some(bitmap(&[1])));
    assert_eq!(
        candidates(&index, json!({"dt": {"$lte": "2024-01-01"}})),
        Some(bitmap(&[1]))
    );

    index.remove(1, &payload(docs[1].clone()));
    // Emptied postings are dropped.
    for (_, field) in &index.fields {
        let empty = match field {
            FieldIndex::Keyword(map) => map.is_empty(),
            FieldIndex::Integer { ints, others } => ints.is_empty() && others.is_empty(),
            FieldIndex::Float(map) => map.is_empty(),
            FieldIndex::Datetime(map) => map.is_empty(),
        };
        assert!(empty, "{field:?}");
    }
    // Removing again, or a slot never inserted, is harmless.
    index.remove(1, &payload(docs[1].clone()));
    index.remove(7, &payload(docs[0].clone()));
    assert_eq!(candidates(&index, json!({"kw": "a"})), Some(bitmap(&[])));
}

#[test]
fn first_i64_finds_the_boundary() {
    assert_eq!(first_i64(|k| k >= 17), Some(17));
    assert_eq!(first_i64(|_| true), Some(i64::MIN));
    assert_eq!(first_i64(|_| false), None);
    assert_eq!(first_i64(|k| k == i64::MAX), Some(i64::MAX));
}

// ---- property: candidates is a superset of the matching slots ---------------------------

static KEYS: [&str; 6] = ["kw", "int", "flt", "dt", "m.k", "free"];
static STRINGS: [&str; 7] = [
    "a",
    "b",
    "2024-01-01",
    "2024-01-01T00:00:00Z",
    "2024-01-01T12:00:00+02:00",
    "2024-01-02T00:00:00.5Z",
    "2023-12-31",
];
static NUMBERS: [f64; 12] = [
    -1.5,
    -0.0,
    0.0,
    0.5,
    1.0,
    2.0,
    2.5,
    1_704_067_200.0,
    1_704_067_200.5,
    9.223372036854776e18,
    -9.223372036854776e18,
    1e300,
];

fn leaf_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        proptest::sample::select(&STRINGS[..]).prop_map(|s| json!(s)),
        (-3i64..4).prop_map(|i| json!(i)),
        proptest::sample::select(&NUMBERS[..]).prop_map(|x| json!(x)),
        Just(json!(i64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(u64::MAX)),
        Just(json!(1_704_067_200i64)),
        any::<bool>().prop_map(|b| json!(b)),
        Just(Value::Null),
    ]
}

fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => leaf_value(),
        1 => proptest::collection::vec(leaf_value(), 0..4).prop_map(Value::Array),
        1 => leaf_value().prop_map(|v| json!({ "k": v })),
    ]
}

fn payload_strategy() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::vec(
        (
            proptest::sample::select(vec!["kw", "int", "flt", "dt", "m", "free"]),
            field_value(),
        ),
        0..6,
    )
    .prop_map(|entries| {
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    })
}

fn scalar() -> impl Strategy<Value = Scalar> {
    prop_oneof![
        proptest::sample::select(&STRINGS[..]).prop_map(|s| Scalar::String(s.to_string())),
        (-3i64..4).prop_map(|i| Scalar::Number(i as f64)),
        proptest::sample::select(&NUMBERS[..]).prop_map(Scalar::Number),
        Just(Scalar::Number(f64::NAN)),
        any::<bool>().prop_map(Scalar::Bool),
    ]
}

fn bound() -> impl Strategy<Value = Option<Bound>> {
    let datetime = proptest::sample::select(&STRINGS[2..])
        .prop_flat_map(|s| {
            let micros = filter::parse_datetime(s).unwrap_or(0);
            prop_oneof![Just(micros - 1), Just(micros), Just(micros + 1)]
        })
        .prop_map(Bound::DateTime);
    prop_oneof![
        2 => Just(None),
        2 => (-3i64..4).prop_map(|i| Some(Bound::Number(i as f64))),
        2 => proptest::sample::select(&NUMBERS[..]).prop_map(|x| Some(Bound::Number(x))),
        1 => proptest::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY])
            .prop_map(|x| Some(Bound::Number(x))),
        3 => datetime.prop_map(Some),
    ]
}

fn condition() -> impl Strategy<Value = Filter> {
    let op = prop_oneof![
        scalar().prop_map(Op::Eq),
        scalar().prop_map(Op::Ne),
        proptest::collection::vec(scalar(), 1..4).prop_map(Op::In),
        proptest::collection::vec(scalar(), 1..4).prop_map(Op::Nin),
        (bound(), bound(), bound(), bound()).prop_map(|(gt, gte, lt, lte)| Op::Range(Range {
            gt,
            gte,
            lt,
            lte
        })),
        any::<bool>().prop_map(Op::Exists),
    ];
    (proptest::sample::select(&KEYS[..]), op).prop_map(|(key, op)| {
        Filter::Condition(Condition {
            key: key.to_string(),
            op,
        })
    })
}

fn filter_strategy() -> impl Strategy<Value = Filter> {
    condition().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Filter::And),
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Filter::Or),
            inner.prop_map(|f| Filter::Not(Box::new(f))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn candidates_contain_every_match_and_exact_ones_no_other(
        payloads in proptest::collection::vec(payload_strategy(), 0..24),
        removed in proptest::collection::vec(any::<bool>(), 24),
        filters in proptest::collection::vec(filter_strategy(), 1..8),
    ) {
        let mut index = PayloadIndex::new(&declared());
        for (slot, doc) in payloads.iter().enumerate() {
            index.insert(slot as Slot, doc);
        }
        let mut live = RoaringBitmap::new();
        for (slot, doc) in payloads.iter().enumerate() {
            if removed[slot] {
                index.remove(slot as Slot, doc);
            } else {
                live.insert(slot as Slot);
            }
        }
        for f in &filters {
            let Some(IndexBound { slots: found, exact }) = index.bound(f) else { continue };
            prop_assert!(found.is_subset(&live), "{f:?}: {found:?} has removed slots");
            if exact {
                for slot in &found {
                    prop_assert!(
                        f.matches(&payloads[slot as usize]),
                        "{f:?} is bounded exactly by {found:?}, but slot {slot} ({:?}) does not match",
                        payloads[slot as usize]
                    );
                }
            }
            for slot in &live {
                if f.matches(&payloads[slot as usize]) {
                    prop_assert!(
                        found.contains(slot),
                        "{f:?} matches slot {slot} ({:?}) but candidates are {found:?}",
                        payloads[slot as usize]
                    );
                }
            }
        }
    }
}
