//! Linearizability checking for histories of single-key registers.
//!
//! This is the Wing & Gong search with Lowe's memoization, in the form used by
//! [Porcupine](https://github.com/anishathalye/porcupine):
//!
//! 1. Every operation becomes a *call* entry (at its invoke time) and a
//!    *return* entry (at its completion time). Entries are sorted by time,
//!    calls before returns at equal times, and kept in a doubly linked list.
//! 2. The search walks the list. At a call entry it tries to linearize that
//!    operation now: if the register allows it, and the pair
//!    (set of linearized operations, register value) was not seen before, the
//!    operation is *lifted* out of the list and pushed on a stack.
//! 3. Reaching a return entry means that operation had to be linearized
//!    already: the search pops the last choice, *unlifts* it and tries the
//!    next candidate. An empty stack at that point means no linearization
//!    exists.
//!
//! Register semantics: `Put(v)` sets the value to `v`; `Get` returns the
//! current value (`None` = absent). Before the search:
//!
//! * `Failed` operations are dropped (they did not take effect);
//! * `Unknown` gets are dropped (they carry no information);
//! * `Unknown` puts are kept with an infinite completion time, so they may
//!   take effect at any point after their invoke. If no get ever returned the
//!   value of such a put, it is dropped too: it could always be linearized
//!   last, so it cannot change the verdict, and keeping it only widens the
//!   search.

use crate::history::{Event, Op, Outcome};
use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// Completion time of operations that may take effect at any later time.
const INFINITY: u128 = u128::MAX;
/// "No node" in the linked list.
const NIL: usize = usize::MAX;
/// How many events of each kind a [`Violation`] keeps for display.
const EXCERPT: usize = 6;

/// Evidence that a key's history is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key whose history failed.
    pub key: u64,
    /// Number of operations checked (after dropping failed ops, unknown gets
    /// and unobserved unknown puts).
    pub checked: usize,
    /// Length of the longest linearizable prefix the search found.
    pub linearized: usize,
    /// Register value after that prefix.
    pub state: Option<i64>,
    /// The last few operations of that prefix, in linearization order, as
    /// (index in the caller's slice, event).
    pub prefix_tail: Vec<(usize, Event)>,
    /// The operation whose response could not be explained after the prefix,
    /// as (index in the caller's slice, event). Boxed to keep `Result` small.
    pub stuck: Box<(usize, Event)>,
    /// Other operations already invoked, but not linearized, at that point.
    pub pending: Vec<(usize, Event)>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = |v: Option<i64>| v.map_or("absent".to_string(), |v| v.to_string());
        writeln!(
            f,
            "key {}: history is not linearizable ({} ops checked)",
            self.key, self.checked
        )?;
        writeln!(
            f,
            "  longest linearizable prefix: {} ops, leaving register = {}",
            self.linearized,
            value(self.state)
        )?;
        if self.linearized > self.prefix_tail.len() {
            writeln!(f, "    ...")?;
        }
        for (i, e) in &self.prefix_tail {
            writeln!(f, "    #{i} {e}")?;
        }
        writeln!(f, "  no linearization explains:")?;
        writeln!(f, "    #{} {}", self.stuck.0, self.stuck.1)?;
        if !self.pending.is_empty() {
            writeln!(f, "  other ops pending at that point:")?;
            for (i, e) in &self.pending {
                writeln!(f, "    #{i} {e}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Violation {}

/// Checks every key of a history separately, each starting absent.
/// Returns the violation of the first failing key (in key order).
pub fn check_all(events: &[Event]) -> Result<(), Violation> {
    let mut by_key: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        by_key.entry(e.key).or_default().push(i);
    }
    for (key, indices) in by_key {
        check_indices(key, events, &indices, None)?;
    }
    Ok(())
}

/// Checks the history of ONE key, starting from `initial`.
/// All events are assumed to be on the same key (the first one's is
/// reported). Indices in a [`Violation`] refer to `events`.
pub fn check_register(events: &[Event], initial: Option<i64>) -> Result<(), Violation> {
    let key = events.first().map_or(0, |e| e.key);
    let indices: Vec<usize> = (0..events.len()).collect();
    check_indices(key, events, &indices, initial)
}

/// An operation kept for the search.
struct Operation {
    /// Index of the event in the caller's slice.
    index: usize,
    op: Op,
    /// What a get returned (unused for puts).
    output: Option<i64>,
    call: u128,
    ret: u128,
}

/// The failure point of the search, in terms of positions in `ops`.
struct Failure {
    prefix: Vec<usize>,
    stuck: usize,
    state: Option<i64>,
}

fn check_indices(
    key: u64,
    events: &[Event],
    indices: &[usize],
    initial: Option<i64>,
) -> Result<(), Violation> {
    let ops = prepare(events, indices);
    let Err(fail) = search(&ops, initial) else {
        return Ok(());
    };

    let event = |pos: usize| (ops[pos].index, events[ops[pos].index].clone());
    let tail_start = fail.prefix.len().saturating_sub(EXCERPT);
    let in_prefix: HashSet<usize> = fail.prefix.iter().copied().collect();
    let deadline = ops[fail.stuck].ret;
    let pending = (0..ops.len())
        .filter(|&p| p != fail.stuck && !in_prefix.contains(&p) && ops[p].call <= deadline)
        .take(EXCERPT)
        .map(event)
        .collect();
    Err(Violation {
        key,
        checked: ops.len(),
        linearized: fail.prefix.len(),
        state: fail.state,
        prefix_tail: fail.prefix[tail_start..]
            .iter()
            .map(|&p| event(p))
            .collect(),
        stuck: Box::new(event(fail.stuck)),
        pending,
    })
}

/// Turns events into operations, applying the rules in the module doc.
fn prepare(events: &[Event], indices: &[usize]) -> Vec<Operation> {
    let mut ops = Vec::new();
    for &index in indices {
        let e = &events[index];
        let (output, ret) = match (e.op, e.outcome) {
            (_, Outcome::Failed) => continue,
            (Op::Get, Outcome::Value(v)) => (v, e.completed.unwrap_or(INFINITY)),
            // Unknown gets, or gets without a value, tell us nothing.
            (Op::Get, _) => continue,
            (Op::Put(_), Outcome::Unknown) => (None, INFINITY),
            (Op::Put(_), _) => (None, e.completed.unwrap_or(INFINITY)),
        };
        ops.push(Operation {
            index,
            op: e.op,
            output,
            call: e.invoked,
            ret: ret.max(e.invoked),
        });
    }

    let observed: HashSet<Option<i64>> = ops
        .iter()
        .filter(|o| o.op == Op::Get)
        .map(|o| o.output)
        .collect();
    ops.retain(|o| match o.op {
        Op::Put(v) => o.ret != INFINITY || observed.contains(&Some(v)),
        Op::Get => true,
    });
    ops
}

/// Applies `op` to the register; `None` if its output is impossible.
fn step(state: Option<i64>, op: &Operation) -> Option<Option<i64>> {
    match op.op {
        Op::Put(v) => Some(Some(v)),
        Op::Get => (op.output == state).then_some(state),
    }
}

/// A fixed-size set of operation positions.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(n: usize) -> Self {
        Bitset(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// The call/return entries as a doubly linked list over indices.
/// Node 0 is the head sentinel; the entries are nodes `1..`.
struct Entries {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Operation (position in `ops`) of each node.
    op: Vec<usize>,
    is_call: Vec<bool>,
    /// Return node of each operation.
    ret_node: Vec<usize>,
}

impl Entries {
    fn new(ops: &[Operation]) -> Self {
        let mut sorted: Vec<(u128, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, o) in ops.iter().enumerate() {
            sorted.push((o.call, false, i));
            sorted.push((o.ret, true, i));
        }
        // Calls sort before returns at equal times (`false < true`).
        sorted.sort_by_key(|&(time, is_ret, _)| (time, is_ret));

        let nodes = sorted.len() + 1;
        let mut list = Entries {
            next: (1..=nodes).collect(),
            prev: (0..nodes).map(|k| k.wrapping_sub(1)).collect(),
            op: vec![0; nodes],
            is_call: vec![false; nodes],
            ret_node: vec![0; ops.len()],
        };
        list.next[nodes - 1] = NIL;
        list.prev[0] = NIL;
        for (k, &(_, is_ret, i)) in sorted.iter().enumerate() {
            list.op[k + 1] = i;
            list.is_call[k + 1] = !is_ret;
            if is_ret {
                list.ret_node[i] = k + 1;
            }
        }
        list
    }

    /// Removes a call node and its return node from the list.
    fn lift(&mut self, call: usize) {
        let ret = self.ret_node[self.op[call]];
        let (p, n) = (self.prev[call], self.next[call]);
        self.next[p] = n;
        self.prev[n] = p; // a call is always followed by its return
        let (p, n) = (self.prev[ret], self.next[ret]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    /// Undoes [`Entries::lift`]; must be applied in reverse lift order.
    fn unlift(&mut self, call: usize) {
        let ret = self.ret_node[self.op[call]];
        let (p, n) = (self.prev[ret], self.next[ret]);
        self.next[p] = ret;
        if n != NIL {
            self.prev[n] = ret;
        }
        let (p, n) = (self.prev[call], self.next[call]);
        self.next[p] = call;
        self.prev[n] = call;
    }
}

/// The search itself; on failure reports the longest linearizable prefix.
fn search(ops: &[Operation], initial: Option<i64>) -> Result<(), Failure> {
    let mut list = Entries::new(ops);
    let mut state = initial;
    let mut linearized = Bitset::new(ops.len());
    let mut cache: HashSet<(Bitset, Option<i64>)> = HashSet::new();
    // Lifted call nodes, with the register value before each.
    let mut calls: Vec<(usize, Option<i64>)> = Vec::new();
    let mut best: Option<Failure> = None;

    let mut entry = list.next[0];
    while list.next[0] != NIL {
        let op = list.op[entry];
        if list.is_call[entry] {
            if let Some(new_state) = step(state, &ops[op]) {
                let mut seen = linearized.clone();
                seen.set(op);
                if cache.insert((seen, new_state)) {
                    calls.push((entry, state));
                    state = new_state;
                    linearized.set(op);
                    list.lift(entry);
                    entry = list.next[0];
                    continue;
                }
            }
            entry = list.next[entry];
        } else {
            // `op` returned without being linearized: backtrack.
            if best.as_ref().is_none_or(|b| calls.len() > b.prefix.len()) {
                best = Some(Failure {
                    prefix: calls.iter().map(|&(node, _)| list.op[node]).collect(),
                    stuck: op,
                    state,
                });
            }
            let Some((node, before)) = calls.pop() else {
                return Err(best.expect("recorded just above"));
            };
            state = before;
            linearized.clear(list.op[node]);
            list.unlift(node);
            entry = list.next[node];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn put(client: usize, v: i64, invoked: u128, completed: u128) -> Event {
        Event {
            client,
            key: 0,
            op: Op::Put(v),
            outcome: Outcome::Ok,
            invoked,
            completed: Some(completed),
        }
    }

    fn get(client: usize, v: Option<i64>, invoked: u128, completed: u128) -> Event {
        Event {
            client,
            key: 0,
            op: Op::Get,
            outcome: Outcome::Value(v),
            invoked,
            completed: Some(completed),
        }
    }

    fn with(mut e: Event, outcome: Outcome) -> Event {
        e.outcome = outcome;
        e
    }

    #[test]
    fn sequential_history_passes() {
        let h = [
            get(0, None, 0, 5),
            put(0, 1, 10, 20),
            get(1, Some(1), 30, 40),
            put(1, 2, 50, 60),
            get(0, Some(2), 70, 80),
            get(0, Some(2), 80, 90), // touching intervals are fine
        ];
        assert_eq!(check_register(&h, None), Ok(()));
        assert_eq!(check_all(&h), Ok(()));
    }

    #[test]
    fn initial_value_is_used() {
        let h = [get(0, Some(9), 0, 5)];
        assert!(check_register(&h, Some(9)).is_ok());
        assert!(check_register(&h, None).is_err());
    }

    #[test]
    fn concurrent_get_may_see_either_value() {
        for seen in [1, 2] {
            let h = [
                put(0, 1, 0, 10),
                put(1, 2, 20, 50),
                get(2, Some(seen), 30, 40),
            ];
            assert!(check_register(&h, None).is_ok(), "get saw {seen}");
        }
        // Once a get saw the new value, a later get cannot see the old one.
        let h = [
            put(0, 1, 0, 10),
            put(1, 2, 20, 100),
            get(2, Some(2), 30, 40),
            get(2, Some(1), 50, 60),
        ];
        assert!(check_register(&h, None).is_err());
    }

    #[test]
    fn stale_read_fails() {
        let h = [put(0, 1, 0, 10), put(1, 2, 20, 30), get(2, Some(1), 40, 50)];
        let v = check_register(&h, None).unwrap_err();
        assert_eq!(v.stuck.0, 2);
        assert_eq!(v.linearized, 2);
        assert_eq!(v.state, Some(2));
        let text = v.to_string();
        assert!(text.contains("get -> 1"), "{text}");
        assert!(text.contains("register = 2"), "{text}");
    }

    #[test]
    fn value_never_written_fails() {
        let h = [put(0, 1, 0, 10), get(1, Some(7), 20, 30)];
        assert!(check_register(&h, None).is_err());
        let h = [put(0, 1, 0, 10), get(1, None, 20, 30)];
        assert!(check_register(&h, None).is_err());
    }

    #[test]
    fn unknown_put_may_take_effect_later() {
        let h = [
            put(0, 1, 0, 10),
            with(put(1, 2, 20, 25), Outcome::Unknown),
            get(2, Some(1), 30, 40),
            get(2, Some(2), 50, 60),
            get(0, Some(2), 70, 80),
        ];
        assert!(check_register(&h, None).is_ok());

        // ... but not before it was invoked,
        let mut early = h.clone();
        early[2] = get(2, Some(2), 12, 15);
        assert!(check_register(&early, None).is_err());
        // ... and only once.
        let mut twice = h.clone();
        twice[4] = get(0, Some(1), 70, 80);
        assert!(check_register(&twice, None).is_err());
    }

    #[test]
    fn unknown_put_never_observed_passes() {
        let mut never_completed = put(1, 2, 20, 0);
        never_completed.outcome = Outcome::Unknown;
        never_completed.completed = None;
        let h = [
            put(0, 1, 0, 10),
            never_completed,
            with(put(2, 3, 20, 30), Outcome::Unknown),
            get(2, Some(1), 30, 40),
            get(0, Some(1), 500, 600),
        ];
        assert!(check_register(&h, None).is_ok());
    }

    #[test]
    fn failed_put_must_not_be_observed() {
        let h = [
            put(0, 1, 0, 10),
            with(put(1, 2, 20, 30), Outcome::Failed),
            get(2, Some(1), 40, 50),
        ];
        assert!(check_register(&h, None).is_ok());
        let h = [
            put(0, 1, 0, 10),
            with(put(1, 2, 20, 30), Outcome::Failed),
            get(2, Some(2), 40, 50),
        ];
        let v = check_register(&h, None).unwrap_err();
        assert_eq!(v.stuck.0, 2);
    }

    #[test]
    fn unknown_and_failed_gets_are_ignored() {
        let h = [
            put(0, 1, 0, 10),
            with(get(1, Some(99), 20, 30), Outcome::Unknown),
            with(get(1, Some(98), 20, 30), Outcome::Failed),
            get(2, Some(1), 40, 50),
        ];
        assert!(check_register(&h, None).is_ok());
    }

    #[test]
    fn check_all_splits_by_key() {
        let mut other = get(1, None, 20, 30);
        other.key = 5;
        let h = vec![put(0, 1, 0, 10), other.clone(), get(2, Some(1), 40, 50)];
        assert!(check_all(&h).is_ok());

        let mut bad = h.clone();
        bad[1].outcome = Outcome::Value(Some(1));
        let v = check_all(&bad).unwrap_err();
        assert_eq!(v.key, 5);
        assert_eq!(v.stuck.0, 1);
    }

    /// Tiny xorshift64 PRNG, deterministic per seed.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: u64) -> u128 {
            (self.next() % n) as u128
        }
    }

    /// Simulates a real register shared by `clients` clients issuing `total`
    /// operations on `key`: each client runs one op at a time, each op takes
    /// effect at a random instant inside its interval, so the result is
    /// linearizable. A few puts fail (no effect) or time out (unknown: they
    /// take effect at some later instant, or never); a few gets time out.
    fn random_history(seed: u64, key: u64, clients: usize, total: usize) -> Vec<Event> {
        let mut rng = XorShift(seed);
        let mut clock = vec![0u128; clients];
        // (event, instant it takes effect, if ever)
        let mut planned: Vec<(Event, Option<u128>)> = Vec::new();
        for n in 0..total {
            let client = n % clients;
            let invoked = clock[client] + rng.below(50);
            let effect = invoked + rng.below(100);
            let completed = effect + rng.below(100);
            clock[client] = completed + 1;
            let op = if rng.below(2) == 0 {
                Op::Put(n as i64 + 1) // unique values
            } else {
                Op::Get
            };
            let (outcome, effect) = match (rng.below(100), op) {
                (0..=2, Op::Put(_)) => (Outcome::Failed, None),
                (3..=5, Op::Put(_)) => {
                    let later = invoked + rng.below(1000);
                    (Outcome::Unknown, (rng.below(2) == 0).then_some(later))
                }
                (0..=2, Op::Get) => (Outcome::Unknown, Some(effect)),
                _ => (Outcome::Ok, Some(effect)),
            };
            let event = Event {
                client,
                key,
                op,
                outcome,
                invoked,
                completed: Some(completed),
            };
            planned.push((event, effect));
        }

        // Apply the effects in time order to a real register.
        let mut order: Vec<usize> = (0..planned.len()).collect();
        order.sort_by_key(|&i| planned[i].1);
        let mut value = None;
        for i in order {
            let (event, effect) = &mut planned[i];
            if effect.is_none() {
                continue;
            }
            match event.op {
                Op::Put(v) => value = Some(v),
                Op::Get if event.outcome == Outcome::Ok => event.outcome = Outcome::Value(value),
                Op::Get => {}
            }
        }
        planned.into_iter().map(|(e, _)| e).collect()
    }

    /// Makes a get from the second half of `h` return a value that was
    /// certainly overwritten before the get was invoked. Returns its index.
    fn inject_stale_read(h: &mut [Event]) -> usize {
        let ok_put = |e: &Event| matches!((e.op, e.outcome), (Op::Put(_), Outcome::Ok));
        for g in h.len() / 2..h.len() {
            if !matches!(h[g].outcome, Outcome::Value(_)) {
                continue;
            }
            let start = h[g].invoked;
            // The last put known to finish before the get started ...
            let Some(p2) = (0..h.len())
                .filter(|&i| ok_put(&h[i]) && h[i].completed.unwrap() < start)
                .max_by_key(|&i| h[i].invoked)
            else {
                continue;
            };
            // ... overwrote a put that finished before it started.
            let Some(p1) =
                (0..h.len()).find(|&i| ok_put(&h[i]) && h[i].completed.unwrap() < h[p2].invoked)
            else {
                continue;
            };
            let Op::Put(old) = h[p1].op else {
                unreachable!()
            };
            h[g].outcome = Outcome::Value(Some(old));
            return g;
        }
        panic!("no place to inject a stale read");
    }

    #[test]
    fn random_linearizable_history_passes_and_stale_read_fails() {
        let mut h = random_history(0x9E37_79B9_7F4A_7C15, 0, 8, 2000);
        let started = Instant::now();
        let result = check_register(&h, None);
        let took = started.elapsed();
        eprintln!("2000-op history, 8 clients: checked in {took:?}");
        assert_eq!(result, Ok(()));
        assert!(took.as_secs() < 10, "too slow: {took:?}");

        let g = inject_stale_read(&mut h);
        let started = Instant::now();
        let v = check_register(&h, None).unwrap_err();
        eprintln!(
            "with a stale read: rejected in {:?}\n{v}",
            started.elapsed()
        );
        // The search cannot get past the corrupted get.
        assert!(v.stuck.1.invoked <= h[g].completed.unwrap());
    }

    #[test]
    fn random_histories_with_several_keys() {
        let mut h = Vec::new();
        for key in 0..4 {
            h.extend(random_history(key + 1, key, 4, 500));
        }
        assert_eq!(check_all(&h), Ok(()));
    }
}
