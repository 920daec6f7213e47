//! What the ownership protocol decided, in the log: `RUST_LOG=connres=debug` for the
//! partition-level actions (lease writes, installs, resets, losses), `trace` for every
//! message it placed (applied, dropped and why, forwarded), with subject and payload.

use crate::ownership::Action;
use crate::service::route::Received;

/// What the protocol decided, for `RUST_LOG=connres=debug` (partition-level actions)
/// and `trace` (every message placed).
pub(super) fn action(action: &Action<Received>) {
    let (name, msg) = match action {
        Action::Apply { msg: (_, _, msg) } => ("apply", msg),
        Action::ApplyLate { msg: (_, _, msg) } => ("apply late", msg),
        Action::Drop {
            msg: (_, _, msg),
            why,
        } => {
            tracing::trace!(why = ?why, subject = %msg.subject, payload = %String::from_utf8_lossy(&msg.payload), "ownership: drop");
            return;
        }
        Action::Forward {
            msg: (_, _, msg), ..
        } => ("forward", msg),
        Action::Heartbeat(_) | Action::Probe { .. } => return,
        Action::WriteLease {
            p,
            op,
            value,
            expect,
        } => {
            tracing::debug!(partition = p, op, ?value, ?expect, "ownership: write lease");
            return;
        }
        // Logged with its units when installed (`steps.rs`).
        Action::Install { .. } => return,
        Action::Confirm { p, conns } | Action::Doubt { p, conns } => {
            tracing::debug!(
                partition = p,
                conns = conns.len(),
                kind = if matches!(action, Action::Confirm { .. }) {
                    "confirm"
                } else {
                    "doubt"
                },
                "ownership"
            );
            return;
        }
        Action::Unconfirm { p }
        | Action::Reset { p }
        | Action::Recall { p, .. }
        | Action::Load { p, .. }
        | Action::Drain { p }
        | Action::Forget { p }
        | Action::ReadLease { p } => {
            tracing::debug!(partition = p, action = action_name(action), "ownership");
            return;
        }
        _ => {
            tracing::debug!(action = action_name(action), "ownership");
            return;
        }
    };
    tracing::trace!(subject = %msg.subject, payload = %String::from_utf8_lossy(&msg.payload), "ownership: {name}");
}

/// A message the protocol let through as it arrived, for `trace`.
pub(super) fn placed(partition: Option<u32>, late: bool, msg: &async_nats::Message) {
    tracing::trace!(partition, late, subject = %msg.subject, payload = %String::from_utf8_lossy(&msg.payload), "ownership: placed");
}

fn action_name<M>(action: &Action<M>) -> &'static str {
    match action {
        Action::Unconfirm { .. } => "unconfirm",
        Action::Reset { .. } => "reset",
        Action::Recall { .. } => "recall",
        Action::Load { .. } => "load",
        Action::Drain { .. } => "drain",
        Action::Forget { .. } => "forget",
        Action::ReadLease { .. } => "read lease",
        Action::ResetAll => "reset all",
        Action::Goodbye => "goodbye",
        Action::Refuse { .. } => "refuse",
        Action::Left => "left",
        _ => "other",
    }
}
