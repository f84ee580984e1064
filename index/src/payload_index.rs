//! Per-field payload indexes, used by the query planner to bound the candidate slots of a
//! [`Filter`] before evaluating it exactly.
//!
//! A [`PayloadIndex`] holds one index per declared field, each mapping values to the bitmap of
//! the slots holding them (a field whose value is an array is indexed under each element):
//!
//! - [`FieldType::Keyword`]: strings, in a hash map.
//! - [`FieldType::Integer`]: integers (JSON integers within `i64`, and floats with an exact `i64`
//!   value such as `3.0`), ordered by value. Other numbers (fractions, integers beyond `i64`) go
//!   to a side map ordered by their `f64` value, so numeric lookups still see them.
//! - [`FieldType::Float`]: every number, ordered by its `f64` value (`-0.0` is stored as `0.0`).
//! - [`FieldType::Datetime`]: strings that [`parse_datetime`](crate::filter::parse_datetime)
//!   accepts, and numbers taken as seconds since the epoch, ordered by microseconds since the
//!   epoch: exactly the values a datetime range of the filter language can match.
//!
//! Other values are not indexed; they can never satisfy the conditions the index answers (a
//! keyword `$eq` only matches strings, a numeric range only numbers, and so on).
//!
//! # Invariant
//!
//! [`PayloadIndex::candidates`] returns a superset of the slots whose payload
//! [`Filter::matches`] the filter, among the slots inserted and not removed; `None` means the
//! indexes cannot bound the filter. Range bounds are kept exact (`$gt` excludes its bound,
//! `$gte` includes it) and compare exactly as the filter does: integer keys are converted to
//! `f64` before being compared with a number bound, as [`Filter::matches`] does with JSON numbers.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Bound as Edge;
use std::str::FromStr;

use roaring::RoaringBitmap;
use serde_json::{Map, Number, Value};

use crate::filter::{self, Bound, Condition, Filter, Op, Range, Scalar, MAX_FILTER_DEPTH};
use crate::Slot;

/// The kind of index declared for a payload field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// Exact string values.
    Keyword,
    /// Integer values, ordered.
    Integer,
    /// Any number, ordered.
    Float,
    /// Datetime strings (and numbers as seconds since the epoch), ordered in time.
    Datetime,
}

impl FieldType {
    /// The lowercase name used in configuration and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Keyword => "keyword",
            FieldType::Integer => "integer",
            FieldType::Float => "float",
            FieldType::Datetime => "datetime",
        }
    }
}

impl FromStr for FieldType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "keyword" => Ok(FieldType::Keyword),
            "integer" => Ok(FieldType::Integer),
            "float" => Ok(FieldType::Float),
            "datetime" => Ok(FieldType::Datetime),
            other => Err(format!(
                "unknown field type `{other}`: expected one of keyword, integer, float, datetime"
            )),
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An `f64` that is never NaN and never `-0.0`, totally ordered.
#[derive(Debug, Clone, Copy)]
struct FloatKey(f64);

impl FloatKey {
    /// `None` for NaN; `-0.0` becomes `0.0` so that it equals `0.0` as in the filter.
    fn new(x: f64) -> Option<FloatKey> {
        if x.is_nan() {
            None
        } else if x == 0.0 {
            Some(FloatKey(0.0))
        } else {
            Some(FloatKey(x))
        }
    }
}

impl PartialEq for FloatKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for FloatKey {}

impl PartialOrd for FloatKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for FloatKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Values to slots for ordered keys.
type Postings<K> = BTreeMap<K, RoaringBitmap>;

/// The index of one field.
#[derive(Debug)]
enum FieldIndex {
    Keyword(HashMap<String, RoaringBitmap>),
    Integer {
        /// Numbers with an exact `i64` value.
        ints: Postings<i64>,
        /// Other numbers (fractions, integers beyond `i64`).
        others: Postings<FloatKey>,
    },
    Float(Postings<FloatKey>),
    Datetime(Postings<i64>),
}

/// The key of a number in an integer index.
enum IntegerKey {
    Int(i64),
    Other(FloatKey),
}

/// 2^63 as an `f64`: the first value beyond `i64::MAX`.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

fn integer_key(n: &Number) -> Option<IntegerKey> {
    if let Some(i) = n.as_i64() {
        return Some(IntegerKey::Int(i));
    }
    let x = n.as_f64()?;
    if x.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(&x) {
        Some(IntegerKey::Int(x as i64))
    } else {
        FloatKey::new(x).map(IntegerKey::Other)
    }
}

fn add<K: Ord>(map: &mut Postings<K>, key: K, slot: Slot) {
    map.entry(key).or_default().insert(slot);
}

fn remove<K: Ord>(map: &mut Postings<K>, key: &K, slot: Slot) {
    if let Some(bitmap) = map.get_mut(key) {
        bitmap.remove(slot);
        if bitmap.is_empty() {
            map.remove(key);
        }
    }
}

impl FieldIndex {
    fn new(field_type: FieldType) -> Self {
        match field_type {
            FieldType::Keyword => FieldIndex::Keyword(HashMap::new()),
            FieldType::Integer => FieldIndex::Integer {
                ints: BTreeMap::new(),
                others: BTreeMap::new(),
            },
            FieldType::Float => FieldIndex::Float(BTreeMap::new()),
            FieldType::Datetime => FieldIndex::Datetime(BTreeMap::new()),
        }
    }

    fn field_type(&self) -> FieldType {
        match self {
            FieldIndex::Keyword(_) => FieldType::Keyword,
            FieldIndex::Integer { .. } => FieldType::Integer,
            FieldIndex::Float(_) => FieldType::Float,
            FieldIndex::Datetime(_) => FieldType::Datetime,
        }
    }

    /// Adds (`insert`) or removes the slot under one scalar value; values of the wrong type are
    /// ignored.
    fn update(&mut self, value: &Value, slot: Slot, insert: bool) {
        match self {
            FieldIndex::Keyword(map) => {
                let Value::String(s) = value else { return };
                if insert {
                    map.entry(s.clone()).or_default().insert(slot);
                } else if let Some(bitmap) = map.get_mut(s) {
                    bitmap.remove(slot);
                    if bitmap.is_empty() {
                        map.remove(s);
                    }
                }
            }
            FieldIndex::Integer { ints, others } => {
                let Value::Number(n) = value else { return };
                match (integer_key(n), insert) {
                    (Some(IntegerKey::Int(i)), true) => add(ints, i, slot),
                    (Some(IntegerKey::Int(i)), false) => remove(ints, &i, slot),
                    (Some(IntegerKey::Other(k)), true) => add(others, k, slot),
                    (Some(IntegerKey::Other(k)), false) => remove(others, &k, slot),
                    (None, _) => {}
                }
            }
            FieldIndex::Float(map) => {
                let Some(key) = value.as_f64().and_then(FloatKey::new) else {
                    return;
                };
                if insert {
                    add(map, key, slot);
                } else {
                    remove(map, &key, slot);
                }
            }
            FieldIndex::Datetime(map) => {
                let Some(micros) = filter::value_micros(value) else {
                    return;
                };
                if insert {
                    add(map, micros, slot);
                } else {
                    remove(map, &micros, slot);
                }
            }
        }
    }

    /// Slots whose value may `$eq` the scalar, or `None` when this index can't tell.
    fn eq_slots(&self, scalar: &Scalar) -> Option<RoaringBitmap> {
        match (self, scalar) {
            (FieldIndex::Keyword(map), Scalar::String(s)) => {
                Some(map.get(s).cloned().unwrap_or_default())
            }
            (FieldIndex::Integer { .. } | FieldIndex::Float(_), Scalar::Number(x)) => {
                self.number_range([None, Some(*x), None, Some(*x)])
            }
            _ => None,
        }
    }

    /// Slots with a value in the range, or `None` when this index can't tell; exact unless a
    /// bound of the other kind was ignored.
    fn range_slots(&self, range: &Range) -> Option<IndexBound> {
        let (slots, edges) = match self {
            FieldIndex::Keyword(_) => return None,
            FieldIndex::Integer { .. } | FieldIndex::Float(_) => {
                let edges = range_edges(range, |bound| match bound {
                    Bound::Number(x) => Some(x),
                    Bound::DateTime(_) => None,
                })?;
                (self.number_range(edges)?, edges.iter().flatten().count())
            }
            FieldIndex::Datetime(map) => {
                let edges = range_edges(range, |bound| match bound {
                    Bound::DateTime(micros) => Some(micros),
                    Bound::Number(_) => None,
                })?;
                let count = edges.iter().flatten().count();
                (Interval::from_edges(edges).union_over(map), count)
            }
        };
        let present = [range.gt, range.gte, range.lt, range.lte]
            .iter()
            .flatten()
            .count();
        Some(IndexBound {
            slots,
            exact: edges == present,
        })
    }

    /// Slots with a number satisfying the `[gt, gte, lt, lte]` bounds, on numeric indexes.
    fn number_range(&self, edges: [Option<f64>; 4]) -> Option<RoaringBitmap> {
        let floats = float_interval(edges);
        match self {
            FieldIndex::Integer { ints, others } => {
                let mut slots = int_interval(edges).union_over(ints);
                slots |= floats.union_over(others);
                Some(slots)
            }
            FieldIndex::Float(map) => Some(floats.union_over(map)),
            _ => None,
        }
    }
}

/// The `[gt, gte, lt, lte]` bounds of a range that `pick` keeps, or `None` when it keeps none.
fn range_edges<T>(range: &Range, pick: impl Fn(Bound) -> Option<T>) -> Option<[Option<T>; 4]> {
    let edges = [range.gt, range.gte, range.lt, range.lte].map(|b| b.and_then(&pick));
    if edges.iter().all(Option::is_none) {
        None
    } else {
        Some(edges)
    }
}

/// A set of keys between two edges; `empty` when some bound excludes every key.
#[derive(Debug, Clone, Copy)]
struct Interval<K> {
    lo: Edge<K>,
    hi: Edge<K>,
    empty: bool,
}

impl<K: Ord + Copy> Interval<K> {
    fn all() -> Self {
        Interval {
            lo: Edge::Unbounded,
            hi: Edge::Unbounded,
            empty: false,
        }
    }

    fn nothing() -> Self {
        Interval {
            empty: true,
            ..Interval::all()
        }
    }

    /// The interval of `[gt, gte, lt, lte]` bounds.
    fn from_edges([gt, gte, lt, lte]: [Option<K>; 4]) -> Self {
        let mut interval = Interval::all();
        if let Some(k) = gt {
            interval.raise_lo(Edge::Excluded(k));
        }
        if let Some(k) = gte {
            interval.raise_lo(Edge::Included(k));
        }
        if let Some(k) = lt {
            interval.lower_hi(Edge::Excluded(k));
        }
        if let Some(k) = lte {
            interval.lower_hi(Edge::Included(k));
        }
        interval
    }

    /// Keeps the tighter of the current lower edge and `edge`.
    fn raise_lo(&mut self, edge: Edge<K>) {
        self.lo = match (self.lo, edge) {
            (Edge::Unbounded, e) | (e, Edge::Unbounded) => e,
            (Edge::Included(a), Edge::Included(b)) => Edge::Included(a.max(b)),
            (Edge::Excluded(a), Edge::Excluded(b)) => Edge::Excluded(a.max(b)),
            (Edge::Included(i), Edge::Excluded(e)) | (Edge::Excluded(e), Edge::Included(i)) => {
                if i > e {
                    Edge::Included(i)
                } else {
                    Edge::Excluded(e)
                }
            }
        };
    }

    /// Keeps the tighter of the current upper edge and `edge`.
    fn lower_hi(&mut self, edge: Edge<K>) {
        self.hi = match (self.hi, edge) {
            (Edge::Unbounded, e) | (e, Edge::Unbounded) => e,
            (Edge::Included(a), Edge::Included(b)) => Edge::Included(a.min(b)),
            (Edge::Excluded(a), Edge::Excluded(b)) => Edge::Excluded(a.min(b)),
            (Edge::Included(i), Edge::Excluded(e)) | (Edge::Excluded(e), Edge::Included(i)) => {
                if i < e {
                    Edge::Included(i)
                } else {
                    Edge::Excluded(e)
                }
            }
        };
    }

    /// Whether no key can lie between the edges (checked before `BTreeMap::range`, which
    /// panics on reversed bounds).
    fn is_empty(&self) -> bool {
        if self.empty {
            return true;
        }
        match (self.lo, self.hi) {
            (Edge::Included(a), Edge::Included(b)) => a > b,
            (Edge::Included(a) | Edge::Excluded(a), Edge::Included(b) | Edge::Excluded(b)) => {
                a >= b
            }
            _ => false,
        }
    }

    /// The union of the bitmaps of the keys inside the interval.
    fn union_over(&self, map: &Postings<K>) -> RoaringBitmap {
        let mut slots = RoaringBitmap::new();
        if !self.is_empty() {
            for (_, bitmap) in map.range((self.lo, self.hi)) {
                slots |= bitmap;
            }
        }
        slots
    }
}

/// The float keys satisfying `[gt, gte, lt, lte]` number bounds; a NaN bound admits nothing.
fn float_interval(edges: [Option<f64>; 4]) -> Interval<FloatKey> {
    if edges.iter().flatten().any(|x| x.is_nan()) {
        return Interval::nothing();
    }
    Interval::from_edges(edges.map(|x| x.and_then(FloatKey::new)))
}

/// The smallest `i64` satisfying a predicate that is false and then true along the `i64` line,
/// or `None` when it is never true.
fn first_i64(pred: impl Fn(i64) -> bool) -> Option<i64> {
    if !pred(i64::MAX) {
        return None;
    }
    // The answer lies in [lo, hi] and pred(hi) holds.
    let (mut lo, mut hi) = (i64::MIN, i64::MAX);
    while lo < hi {
        let mid = (i128::from(lo) + i128::from(hi)).div_euclid(2) as i64;
        if pred(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(lo)
}

/// The `i64` keys `k` such that `k as f64` satisfies `[gt, gte, lt, lte]` number bounds, which
/// is how the filter compares an integer with a number bound. Exact because `k as f64` is
/// monotone in `k`.
fn int_interval([gt, gte, lt, lte]: [Option<f64>; 4]) -> Interval<i64> {
    if [gt, gte, lt, lte].iter().flatten().any(|x| x.is_nan()) {
        return Interval::nothing();
    }
    let mut interval = Interval::all();
    // Lower bounds: the first key satisfying them.
    for (bound, strict) in [(gt, true), (gte, false)] {
        let Some(x) = bound else { continue };
        match first_i64(|k| if strict { k as f64 > x } else { k as f64 >= x }) {
            Some(k) => interval.raise_lo(Edge::Included(k)),
            None => return Interval::nothing(),
        }
    }
    // Upper bounds: the key before the first one violating them.
    for (bound, strict) in [(lt, true), (lte, false)] {
        let Some(x) = bound else { continue };
        match first_i64(|k| if strict { k as f64 >= x } else { k as f64 > x }) {
            Some(i64::MIN) => return Interval::nothing(),
            Some(k) => interval.lower_hi(Edge::Included(k - 1)),
            None => {}
        }
    }
    interval
}

/// Indexes over declared payload fields, used by the query planner to bound the candidate slots
/// of a filter.
#[derive(Debug, Default)]
pub struct PayloadIndex {
    /// Declared fields in declaration order, each with its index; names are unique.
    fields: Vec<(String, FieldIndex)>,
    /// Fields added to a collection that already had points, until [`PayloadIndex::mark_built`]:
    /// kept up to date by inserts and removals, but not used to bound filters while the slots
    /// from before they were added are still being indexed. Each with its build's generation.
    building: Vec<(String, u64)>,
    /// Builds started so far.
    generation: u64,
}

impl PayloadIndex {
    /// An empty index over the declared fields (dotted paths). When a name is declared twice,
    /// the later type wins.
    pub fn new(fields: &[(String, FieldType)]) -> Self {
        let mut index = PayloadIndex::default();
        for (name, field_type) in fields {
            let field = FieldIndex::new(*field_type);
            match index.fields.iter_mut().find(|(n, _)| n == name) {
                Some(existing) => existing.1 = field,
                None => index.fields.push((name.clone(), field)),
            }
        }
        index
    }

    /// Adds an index over `name` that bounds no filter until [`PayloadIndex::mark_built`]; the
    /// caller indexes the existing slots with [`PayloadIndex::insert_field`] meanwhile. Returns
    /// the build's generation, which [`PayloadIndex::mark_built`] must be given back (so a build
    /// of a field dropped and added again meanwhile cannot finish the new one), or None (and
    /// changes nothing) if `name` is indexed already.
    pub fn add_building(&mut self, name: &str, field_type: FieldType) -> Option<u64> {
        if self.fields.iter().any(|(n, _)| n == name) {
            return None;
        }
        self.generation += 1;
        self.fields
            .push((name.to_string(), FieldIndex::new(field_type)));
        self.building.push((name.to_string(), self.generation));
        Some(self.generation)
    }

    /// Indexes one slot's payload under field `name` only (inserting a slot twice is harmless).
    pub fn insert_field(&mut self, name: &str, slot: Slot, payload: &Map<String, Value>) {
        let Some((_, field)) = self.fields.iter_mut().find(|(n, _)| n == name) else {
            return;
        };
        match filter::lookup(payload, name) {
            Some(Value::Array(items)) => {
                for item in items {
                    field.update(item, slot, true);
                }
            }
            Some(value) => field.update(value, slot, true),
            None => {}
        }
    }

    /// The build `generation` of field `name` indexed every slot: the field bounds filters from
    /// now on. A generation that is no longer building changes nothing.
    pub fn mark_built(&mut self, name: &str, generation: u64) {
        self.building
            .retain(|(n, g)| !(n == name && *g == generation));
    }

    /// Whether field `name` is still being built.
    pub fn is_building(&self, name: &str) -> bool {
        self.building.iter().any(|(n, _)| n == name)
    }

    /// Whether build `generation` of field `name` is the one still running.
    pub fn is_building_generation(&self, name: &str, generation: u64) -> bool {
        self.building
            .iter()
            .any(|(n, g)| n == name && *g == generation)
    }

    /// Drops the index over `name`, if any.
    pub fn drop_field(&mut self, name: &str) {
        self.fields.retain(|(n, _)| n != name);
        self.building.retain(|(n, _)| n != name);
    }

    /// The indexed fields and their types, in declaration order.
    pub fn fields(&self) -> Vec<(String, FieldType)> {
        self.fields
            .iter()
            .map(|(name, field)| (name.clone(), field.field_type()))
            .collect()
    }

    /// Indexes the payload of a live slot.
    pub fn insert(&mut self, slot: Slot, payload: &Map<String, Value>) {
        self.update(slot, payload, true);
    }

    /// Removes a slot (pass the same payload it was inserted with).
    pub fn remove(&mut self, slot: Slot, payload: &Map<String, Value>) {
        self.update(slot, payload, false);
    }

    fn update(&mut self, slot: Slot, payload: &Map<String, Value>, insert: bool) {
        for (name, field) in &mut self.fields {
            match filter::lookup(payload, name) {
                Some(Value::Array(items)) => {
                    for item in items {
                        field.update(item, slot, insert);
                    }
                }
                Some(value) => field.update(value, slot, insert),
                None => {}
            }
        }
    }

    /// A superset of the slots matching `filter`, computed from indexed fields only, or `None`
    /// when the indexes cannot bound the filter (every slot may match).
    ///
    /// Conditions bounded: `$eq`/`$in` with strings on keyword fields and with numbers on
    /// integer and float fields, ranges with number bounds on integer and float fields and with
    /// datetime bounds on datetime fields (bounds of the other kind are ignored, which only
    /// widens the result). `And` intersects the children that are bounded (`None` if none is),
    /// `Or` unites its children when all are bounded; everything else is `None`.
    pub fn candidates(&self, filter: &Filter) -> Option<RoaringBitmap> {
        self.bound(filter).map(|bound| bound.slots)
    }

    /// [`PayloadIndex::candidates`], and whether they are exactly the slots matching `filter`
    /// (then the filter need not be tested on them). A bound is exact when every condition
    /// under it is answered by an index with all its bounds, and no `And` child is left
    /// unbounded.
    pub fn bound(&self, filter: &Filter) -> Option<IndexBound> {
        self.bound_at(filter, 1)
    }

    fn bound_at(&self, filter: &Filter, depth: usize) -> Option<IndexBound> {
        if depth > MAX_FILTER_DEPTH {
            return None;
        }
        match filter {
            Filter::And(children) => {
                let mut bound: Option<IndexBound> = None;
                let mut exact = true;
                for child in children {
                    match self.bound_at(child, depth + 1) {
                        Some(child) => {
                            bound = Some(match bound {
                                Some(b) => IndexBound {
                                    slots: b.slots & child.slots,
                                    exact: b.exact && child.exact,
                                },
                                None => child,
                            })
                        }
                        None => exact = false,
                    }
                }
                bound.map(|b| IndexBound {
                    exact: b.exact && exact,
                    ..b
                })
            }
            Filter::Or(children) => {
                let mut slots = RoaringBitmap::new();
                let mut exact = true;
                for child in children {
                    let child = self.bound_at(child, depth + 1)?;
                    slots |= child.slots;
                    exact &= child.exact;
                }
                Some(IndexBound { slots, exact })
            }
            Filter::Not(_) => None,
            Filter::Condition(condition) => self.condition_bound(condition),
        }
    }

    fn condition_bound(&self, condition: &Condition) -> Option<IndexBound> {
        if self.is_building(&condition.key) {
            return None;
        }
        let (_, field) = self.fields.iter().find(|(n, _)| *n == condition.key)?;
        match &condition.op {
            Op::Eq(scalar) => field.eq_slots(scalar).map(IndexBound::exact),
            Op::In(scalars) => {
                let mut slots = RoaringBitmap::new();
                for scalar in scalars {
                    slots |= field.eq_slots(scalar)?;
                }
                Some(IndexBound::exact(slots))
            }
            Op::Range(range) => field.range_slots(range),
            Op::Ne(_) | Op::Nin(_) | Op::Exists(_) => None,
        }
    }
}

/// Slots that may match a filter, from the payload indexes.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexBound {
    pub slots: RoaringBitmap,
    /// Whether these are exactly the slots that match.
    pub exact: bool,
}

impl IndexBound {
    fn exact(slots: RoaringBitmap) -> Self {
        IndexBound { slots, exact: true }
    }
}

#[cfg(test)]
mod tests {
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
        let op =
            prop_oneof![
                scalar().prop_map(Op::Eq),
                scalar().prop_map(Op::Ne),
                proptest::collection::vec(scalar(), 1..4).prop_map(Op::In),
                proptest::collection::vec(scalar(), 1..4).prop_map(Op::Nin),
                (bound(), bound(), bound(), bound())
                    .prop_map(|(gt, gte, lt, lte)| Op::Range(Range { gt, gte, lt, lte })),
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
}
