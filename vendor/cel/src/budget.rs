//! connres patch: a step budget per evaluation (see PATCHED.md).
//!
//! Every expression evaluated costs one step plus the size of the value it gives: a
//! list's or map's length, a string's or bytes' length in 64-byte units. Whatever an
//! operation does, its inputs were values some expression gave, so the steps spent bound
//! the work done. [`run`] evaluates with a budget; once spent, every further expression
//! fails with [`budget_error`], so no `||`, `&&` or comprehension can absorb the error
//! and go on.

use std::cell::Cell;

use crate::common::types::{CelBytes, CelList, CelMap, CelString};
use crate::common::value::Val;
use crate::ExecutionError;

thread_local! {
    /// Steps left in this thread's evaluation; `u64::MAX` outside [`run`].
    static LEFT: Cell<u64> = const { Cell::new(u64::MAX) };
    /// Whether a step was refused since [`run`] started.
    static SPENT: Cell<bool> = const { Cell::new(false) };
}

/// What an evaluation under [`run`] spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spent {
    /// Steps taken (at most the budget).
    pub steps: u64,
    /// True when the budget ran out: the result is then an error.
    pub exhausted: bool,
}

/// Runs `f` (an evaluation on this thread) with at most `steps` steps.
pub fn run<T>(steps: u64, f: impl FnOnce() -> T) -> (T, Spent) {
    let outer = (LEFT.replace(steps), SPENT.replace(false));
    let result = f();
    let left = LEFT.replace(outer.0);
    let exhausted = SPENT.replace(outer.1);
    (
        result,
        Spent {
            steps: steps - left,
            exhausted,
        },
    )
}

/// The error of an evaluation that ran out of steps.
pub fn budget_error() -> ExecutionError {
    ExecutionError::function_error("budget", "evaluation ran out of steps")
}

/// Takes `n` steps, or fails (and keeps failing) when fewer are left.
#[inline(always)]
pub(crate) fn charge(n: u64) -> Result<(), ExecutionError> {
    let left = LEFT.get();
    if left >= n {
        LEFT.set(left - n);
        Ok(())
    } else {
        LEFT.set(0);
        SPENT.set(true);
        Err(budget_error())
    }
}

/// The steps a value costs beyond the one of the expression that gave it.
#[inline(always)]
pub(crate) fn weight(value: &dyn Val) -> u64 {
    if let Some(list) = value.downcast_ref::<CelList>() {
        list.inner().len() as u64
    } else if let Some(map) = value.downcast_ref::<CelMap>() {
        map.inner().len() as u64
    } else if let Some(s) = value.downcast_ref::<CelString>() {
        (s.inner().len() / 64) as u64
    } else if let Some(b) = value.downcast_ref::<CelBytes>() {
        (b.inner().len() / 64) as u64
    } else {
        0
    }
}
