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

    /// Adds (`insert`) or removes the slot under the value(s) `payload` holds at `name`: each
    /// element of an array, or the one value.
    fn update_from(&mut self, name: &str, slot: Slot, payload: &Map<String, Value>, insert: bool) {
        match filter::lookup(payload, name) {
            Some(Value::Array(items)) => {
                for item in items {
                    self.update(item, slot, insert);
                }
            }
            Some(value) => self.update(value, slot, insert),
            None => {}
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
        if let Some((name, field)) = self.fields.iter_mut().find(|(n, _)| n == name) {
            field.update_from(name, slot, payload, true);
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
            field.update_from(name, slot, payload, insert);
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
mod tests;
