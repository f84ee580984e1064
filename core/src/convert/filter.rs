//! Filters of a request: the typed tree (`pb::Filter`) or its JSON form, into the index's
//! [`Filter`], each part checked and named by its path.

use super::*;

/// The filter of a request: the typed tree or the JSON form, at most one of them.
pub fn request_filter(typed: Option<&pb::Filter>, json: &str) -> Result<Option<Filter>> {
    let filter = match (typed, json.trim().is_empty()) {
        (Some(_), false) => {
            return Err(invalid(
                "filter",
                "set either filter or filter_json, not both",
            ))
        }
        (Some(f), true) => typed_filter("filter", f, 0)?,
        (None, false) => Filter::from_json_str(json).map_err(|e| {
            let at = if e.path.is_empty() {
                "filter_json".to_string()
            } else {
                format!("filter_json.{}", e.path)
            };
            invalid(at, e.message)
        })?,
        (None, true) => return Ok(None),
    };
    filter
        .validate()
        .map_err(|e| invalid("filter", e.to_string()))?;
    Ok(Some(filter))
}

fn typed_filter(field: &str, f: &pb::Filter, depth: usize) -> Result<Filter> {
    if depth > quiver_index::filter::MAX_FILTER_DEPTH {
        return Err(invalid(
            field,
            format!(
                "filter nests deeper than {} levels",
                quiver_index::filter::MAX_FILTER_DEPTH
            ),
        ));
    }
    let mut all = Vec::new();
    for (i, m) in f.must.iter().enumerate() {
        all.push(typed_filter(&format!("{field}.must[{i}]"), m, depth + 1)?);
    }
    if !f.should.is_empty() {
        let any = f
            .should
            .iter()
            .enumerate()
            .map(|(i, s)| typed_filter(&format!("{field}.should[{i}]"), s, depth + 1))
            .collect::<Result<Vec<_>>>()?;
        all.push(Filter::Or(any));
    }
    for (i, m) in f.must_not.iter().enumerate() {
        let inner = typed_filter(&format!("{field}.must_not[{i}]"), m, depth + 1)?;
        all.push(Filter::Not(Box::new(inner)));
    }
    if let Some(c) = &f.condition {
        all.push(Filter::Condition(condition(
            &format!("{field}.condition"),
            c,
        )?));
    }
    Ok(if all.len() == 1 {
        all.pop().unwrap_or(Filter::And(Vec::new()))
    } else {
        Filter::And(all)
    })
}

fn condition(field: &str, c: &pb::Condition) -> Result<Condition> {
    use pb::condition::Test;
    if c.key.is_empty() {
        return Err(invalid(format!("{field}.key"), "must not be empty"));
    }
    let op = match &c.test {
        None => {
            return Err(invalid(
                field,
                "missing test (eq, ne, in, not_in, range or exists)",
            ))
        }
        Some(Test::Eq(v)) => Op::Eq(scalar(&format!("{field}.eq"), v)?),
        Some(Test::Ne(v)) => Op::Ne(scalar(&format!("{field}.ne"), v)?),
        Some(Test::In(vs)) => Op::In(scalars(&format!("{field}.in"), vs)?),
        Some(Test::NotIn(vs)) => Op::Nin(scalars(&format!("{field}.not_in"), vs)?),
        Some(Test::Exists(b)) => Op::Exists(*b),
        Some(Test::Range(r)) => {
            let f = format!("{field}.range");
            let range = Range {
                gt: bound(&format!("{f}.gt"), r.gt.as_ref())?,
                gte: bound(&format!("{f}.gte"), r.gte.as_ref())?,
                lt: bound(&format!("{f}.lt"), r.lt.as_ref())?,
                lte: bound(&format!("{f}.lte"), r.lte.as_ref())?,
            };
            if range.is_unbounded() {
                return Err(invalid(f, "range has no bounds"));
            }
            Op::Range(range)
        }
    };
    Ok(Condition {
        key: c.key.clone(),
        op,
    })
}

fn scalar(field: &str, v: &pb::FilterValue) -> Result<Scalar> {
    use pb::filter_value::Kind as K;
    match &v.kind {
        Some(K::String(s)) => Ok(Scalar::String(s.clone())),
        Some(K::Number(n)) if n.is_finite() => Ok(Scalar::Number(*n)),
        Some(K::Number(n)) => Err(invalid(field, format!("{n} is not a finite number"))),
        Some(K::Boolean(b)) => Ok(Scalar::Bool(*b)),
        None => Err(invalid(field, "missing value")),
    }
}

fn scalars(field: &str, vs: &pb::FilterValues) -> Result<Vec<Scalar>> {
    if vs.values.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    vs.values
        .iter()
        .enumerate()
        .map(|(i, v)| scalar(&format!("{field}[{i}]"), v))
        .collect()
}

fn bound(field: &str, b: Option<&pb::RangeBound>) -> Result<Option<Bound>> {
    use pb::range_bound::Kind as K;
    match b.and_then(|b| b.kind.as_ref()) {
        None => Ok(None),
        Some(K::Number(n)) if n.is_finite() => Ok(Some(Bound::Number(*n))),
        Some(K::Number(n)) => Err(invalid(field, format!("{n} is not a finite number"))),
        Some(K::Datetime(s)) => quiver_index::filter::parse_datetime(s)
            .map(|t| Some(Bound::DateTime(t)))
            .ok_or_else(|| invalid(field, format!("`{s}` is not an RFC 3339 datetime"))),
    }
}
