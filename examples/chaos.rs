//! Chaos driver for the shared store (`state.store: nats`): plays gateway, auth service
//! and backend against several `connres serve` processes while `scripts/chaos.sh`
//! kills, pauses and restarts them and the nats-server, records everything on the wire,
//! and checks invariants from that record. It is black-box: it knows connres only by
//! the RES protocol, the backend write API and token events, never by its internals.
//!
//! ```text
//! chaos config [--bucket B] [--partitions P] [--lease 2s]     # the YAML the run needs
//! chaos schedule --seed S --duration 20s --instances 3        # the fault schedule
//! chaos run --nats URL --seed S --duration 20s [--cids 40] [--rate 800]
//!           [--faults FIFO] [--ready-file PATH] [--history PATH]
//! ```
//!
//! `scripts/chaos.sh` runs the whole thing: `scripts/chaos.sh` (short run, under a
//! minute), `DURATION=10m scripts/chaos.sh` (long run), `SEED=7` to pick a seed.
//!
//! # The config
//!
//! `chaos config` prints it: `session.user.{cid}` (`id`, `name`, `role`, `user`, every
//! field `from` the token) and `session.prefs.{cid}` (`theme`, `fontSize` with defaults,
//! never written; `text` and `shared`, writable strings of at most 64 characters; `note`,
//! a string only the backend may write; `reset: {on_logout: false}`, so logouts leave
//! them), with the seed's access rules (`set` needs `token != null`), and the presence
//! list `chaos.room.{room}.members` (`member: "{{token.member}}"`, `join: token !=
//! null`, `ttl: 3s`; `get: "true"`, `call: token != null`), whose name belongs to one
//! partition while its members' connections belong to theirs.
//!
//! # Traffic
//!
//! The connection IDs are `c0` .. `c<K-1>`. Four NATS connections publish, each a
//! "publisher" whose send order is recorded:
//!
//! - `gw` (gateway) sends `get.<rid>`, `access.<rid>` and `call.session.prefs.<cid>.set`
//!   for the other cids; `auth` sends `conn.<cid>.token` for them; `backend` sends
//!   `connres.set.session.prefs.<cid>` (`{"values": {...}}`);
//! - `mixed` sends all of those kinds for every fourth cid (`c3`, `c7`, ...), on one
//!   connection, so its order must hold across kinds.
//!
//! Messages go back to back at `--rate` per second, never waiting for replies. Every
//! message is a request with its own reply subject, token events too (connres answers a
//! token event sent as a request once its events are out; gateways ignore that reply).
//! Each write carries a value no other write has (`g123t`: publisher letter, request
//! number, field letter), so a value names its write; logins carry a unique `userId`.
//! The token a gateway puts in an access or call request is, as Resgate's, the one of
//! the last token event its connection received for the cid (`gw` hears `auth`'s
//! through the server, never before the server has them); `mixed` sends its cids' token
//! events itself, on the same connection, and puts the last one it sent. Client `set`s write `text`, `shared`
//! or both; about 3% of them give `text` 65 characters, which must be refused. Backend
//! writes set `note`, `shared` or both (for mixed cids also `text`). So, for the
//! normal cids, `text` has one publisher (`gw`), `note` one (`backend`) and `shared` two
//! (`gw` and `backend`); for mixed cids every field has one (`mixed`). Token events
//! (70% logins with a fresh token, 30% logouts) of a cid have one publisher, `auth` or
//! `mixed`. A login's token has a `member` claim, `p<userId mod 8>`, so members come and
//! go and often have several connections.
//!
//! Presence: 15% of the messages are about the list `chaos.room.r1.members`, sent by
//! the gateway the cid's client is on (`mixed` for mixed cids, `gw` otherwise) with the
//! token it puts in calls: `join` (7 in 15), `leave` (2), `ping` (5) and a get (1), back
//! to back with the token events of the same connections. The driver holds a cid
//! *joined* from a `join` it sent with a token giving a member (as the member of the
//! cid's last token sent or of the token the call carries: either may render it) until
//! it sends a `leave`, a token event giving another member or none, or a `join` or
//! `ping` of it is refused with nothing sent for the cid since (a refused `ping` takes
//! the connection off, or finds it off). A `join` without a reply keeps it held.
//!
//! # Gateway caches
//!
//! `gw` and `mixed` each keep a cache of every model as Resgate does: a get, then every
//! `event.<rid>.change` folded in; events arriving while the model's get is pending are
//! dropped; a `system.reset` naming the model under `resources` (patterns with `*` and a
//! trailing `>`) makes it get again (again after the pending reply, if a get is in
//! flight); a failed or timed-out (5 s) get is retried; a reconnect to NATS gets every
//! model again (the events missed while disconnected are gone). A reset naming a model
//! under `access` makes the gateway the cid's client is on (`mixed` for mixed cids, `gw`
//! otherwise) send an access request with the cid's token, as Resgate re-asks access.
//! So that replies keep their order with events, these two connections take replies on
//! subjects under `event._chaosreply.`, which their one `event.>` subscription receives
//! in wire order (async-nats gives each subscription its own queue, so the order
//! between a reply inbox and the events subscription would be lost).
//!
//! Each also keeps a copy of the presence list the same way: a get, then every `add`
//! inserted and `remove` taken out at its index; events while its get is pending are
//! dropped; a `system.reset` naming the list, or a reconnect, gets it again. An event
//! that does not fit the copy (an index past its end, an `add` of a member already in
//! it) leaves no copy until the next get.
//!
//! # The end of a run
//!
//! After `--duration` the traffic stops. The driver waits for the fault script to close
//! the `--faults` pipe (every process is back up), then until every model answers a get,
//! twice, a lease apart; then until every request has a reply or is older than 8 s;
//! then, for the presence list, until a `ttl` and 1.5 s (the sweep runs once a second)
//! have passed since the latest of: the end of the traffic, three leases after the
//! faults ended (a handover to a restarted instance loads the list again), and the
//! last `system.reset` naming the list on `gw`; then until both caches are idle (no get
//! in flight, nothing received for 1 s). It then
//! gets every model and the list once more (the final state; those that fail are asked
//! again, up to four times a lease apart), waits for the caches to be idle again, and
//! checks. From the end of the traffic until the check, every cid held joined pings the
//! list every 500 ms, as an open page does.
//!
//! # What is checked
//!
//! Terms.
//!
//! - A request is *acknowledged* when a reply carries `result`; *refused* when every
//!   reply is an error among `system.accessDenied`, `system.invalidParams`,
//!   `system.methodNotFound` and `system.notFound` (connres decided not to apply it);
//!   *unknown* otherwise: no reply, `system.internalError`, or a NATS "no responders"
//!   status (connres forwards a message to its partition's owner with the requester's
//!   reply subject, so that status can be about the forward, and such messages were seen
//!   to take effect).
//! - `seq` is a publisher's send order (one counter per connection, over every kind).
//! - A write *took effect*, with evidence at time `E(w)`, when it was acknowledged (`E` =
//!   its first reply) or its value was seen in a change event on either cache connection
//!   (`E` = the first such event; connres publishes events only after a write is
//!   stored), whichever is earlier.
//! - Tokens. The token of a cid is one field of its user model: a login is the write of
//!   its token (named by its unique `userId`), a logout the write of null. A token also
//!   reaches connres in access and call requests, which carry the token last sent for
//!   the cid, so a token seen in the model may have come with such a request; every
//!   message carrying a token was sent after that token's event and before the next
//!   one. For a mixed cid every such message is `mixed`'s; for the others, token events
//!   are `auth`'s and requests `gw`'s. An event showing the user model all null is
//!   credited to the earliest logout sent before the event and after the last token
//!   state seen.
//! - Times are the driver's monotonic clock: a send time is taken before the publish
//!   call, a receive time after the message is read, so every comparison below errs
//!   towards not reporting.
//!
//! The final state. For each field of each model the final get's value names a write,
//! the initial default (prefs), or for the user model all null (the initial state or
//! any logout: several candidates). It is a violation when no candidate passes all of:
//!
//! - **Per-publisher order** (invariant 1; `order`, for the token `token-order`): no
//!   write of the same publisher with a later `seq` took effect. So the final value is
//!   the last acknowledged write of its publisher to the field, or a later one whose
//!   outcome is unknown; and a logout that took effect and was the last token event of
//!   the cid leaves the user model all null (`a logout undone by an earlier login`).
//!   For the token this means that a message sent before a later token event (the
//!   earlier token event, or a request carrying the earlier token) was applied after
//!   the later one took effect, which the README rules out ("a stale request in flight
//!   can never log a user in or out").
//! - **No acknowledged write lost** (invariant 2; `lost`): no write of another publisher
//!   that took effect was sent after `E(final)` (real-time order across publishers:
//!   only `shared` of normal cids has two); the initial default only while no write to
//!   the field took effect.
//! - **Refused writes never take effect** (invariant 2; `refused`): the final value is
//!   not a refused write's (not for tokens, which can arrive in requests too). A value
//!   no write carried is `unknown-value`, as is a field nobody writes (`theme`,
//!   `fontSize`) away from its default.
//!
//! Along the way:
//!
//! - `event-order` (invariant 1): along the change events `gw` received, each field's
//!   values from one publisher go forward in `seq` (a write applied once publishes one
//!   event, so a value from an earlier write after a later one means it was applied
//!   after it, or its event was published late); for the token, the states seen go
//!   forward in the token events' order, and an all-null state needs a logout sent
//!   between the last state seen and the event. A refused write seen in an event is
//!   `refused`; a change putting a prefs field back to its default, or to a value
//!   nobody wrote, is `unknown-value`. Not a violation: such an event followed, before
//!   the model's next change event, by a `system.reset` naming the model under
//!   `resources` (the gateway re-fetches it). An owner that stopped serving (a pause)
//!   and lost its partition sends one for what it changed last, since events it had
//!   handed its NATS client before the pause go out when it resumes; counted apart.
//! - `call-order` (invariant 1, `mixed` across kinds): for each `set` of `mixed`, take
//!   the last token event `mixed` sent for the cid before it. If that was an
//!   acknowledged login, the `set` (which carries that token) is not answered
//!   `system.accessDenied`; if it was an acknowledged logout, or there was none (the
//!   `set` carries a null token), the `set` does not pass the access check (a `result`,
//!   or `system.invalidParams`, which comes after the access check).
//! - `cache` (invariant 3): each cache's copy of every model equals the final get;
//!   `unavailable`: a model that never answered the final get.
//! - `double-reply`, `stray-reply` (invariant 4): no request gets two replies, no reply
//!   names a request that was never sent. Requests without a reply are counted as timed
//!   out (`no reply`), as are replies after 8 s (`late`).
//!
//! The presence list:
//!
//! - `list-cache` (invariant 3): each cache's copy of the list (the get, its events,
//!   the re-fetch after each reset) equals the final get, members and order;
//!   `list-event`: an `add` or `remove` that did not fit the copy and that no
//!   `system.reset` naming the list followed; `unavailable`: no final get.
//! - `list-twice` (invariant 5): no get reply of the list (traffic, caches, final)
//!   lists a member twice.
//! - `list-missing` (invariant 5): a cid held joined whose last ping, sent after the
//!   traffic, was acknowledged before the final get was sent is listed (as a member it
//!   may be listed as): nothing removes a connection that pings while nothing fails.
//! - `list-ghost` (invariant 5): every member of the final get is one that a cid held
//!   joined when that get was sent may be listed as. A connection that left or logged
//!   out, or whose leave, logout or token event was lost, is not pinged any more, so
//!   docs/scaling.md has it gone within a `ttl` of its last ping or of the list's load
//!   by a new owner: before the final get the driver waits for that (above).
//!
//! Counted, not violations: cids whose last token event, an unacknowledged logout, did
//! not take effect (it may have been lost with an instance, which docs/scaling.md
//! allows), and writes answered with an error whose value was seen in an event.
//!
//! The exit code is 0 without violations, 1 with any, 2 when the run could not be made
//! (no connection, or connres never served every model at the start).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::Client;
use clap::{Parser, Subcommand};
use futures::StreamExt as _;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// A reply later than this counts as late; a request without one after this is given up
/// on when quiescing (its reply is still taken if it comes).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);
/// A cache get without a reply after this is sent again.
const CACHE_GET_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait before getting again after a failed cache get.
const CACHE_RETRY: Duration = Duration::from_millis(200);
/// Traffic and maintenance tick.
const TICK: Duration = Duration::from_millis(5);
/// Every fourth cid belongs to the mixed publisher.
const MIXED_EVERY: usize = 4;
/// Error codes that mean "not applied".
const REFUSING: [&str; 4] = [
    "system.accessDenied",
    "system.invalidParams",
    "system.methodNotFound",
    "system.notFound",
];
/// How a NATS "no responders" status is recorded. Not a refusal: connres forwards a
/// message to its partition's owner with the requester's reply subject, so the status
/// may be about the forward, and the message may still take effect.
const NO_RESPONDERS: &str = "no responders";
const ROLES: [&str; 3] = ["admin", "user", "guest"];
/// The presence list every connection may join (`chaos.room.{room}.members`).
const ROOM: &str = "chaos.room.r1.members";
/// Its `ttl`.
const PRESENCE_TTL: Duration = Duration::from_secs(3);
/// A login's `member` claim is `p<userId mod MEMBERS>`: members share connections.
const MEMBERS: u64 = 8;
/// How often the end of a run pings the connections it holds joined.
const END_PING_EVERY: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------------------
// Command line

#[derive(Parser)]
#[command(about = "chaos driver for connres's shared store (see the file's documentation)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the connres config the run is checked against.
    Config {
        #[arg(long, default_value = "chaos")]
        bucket: String,
        #[arg(long, default_value_t = 32)]
        partitions: u32,
        #[arg(long, default_value = "2s")]
        lease: String,
    },
    /// Print the fault schedule of a seed: `end <ms>`, then `<at ms> <kind> <slot> <ms>`.
    Schedule(ScheduleArgs),
    /// Send the traffic, record, quiesce and check.
    Run(RunArgs),
}

#[derive(Parser)]
struct ScheduleArgs {
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long the traffic runs (no fault starts after it).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long, default_value_t = 3)]
    instances: u32,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    lease: Duration,
    /// The shortest time between two faults' starts.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    min_gap: Duration,
    /// The longest time between two faults' starts.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    max_gap: Duration,
}

#[derive(Parser)]
struct RunArgs {
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long the traffic runs.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Connections (cids) the traffic covers; every fourth is the mixed publisher's.
    #[arg(long, default_value_t = 40)]
    cids: usize,
    /// Messages per second over all publishers.
    #[arg(long, default_value_t = 800)]
    rate: u64,
    /// The config's lease (the pause between the two readiness rounds at the end).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    lease: Duration,
    /// Fault lines to log, one per line; the end of the file means every fault is over
    /// and every process is up again (a FIFO from scripts/chaos.sh).
    #[arg(long)]
    faults: Option<PathBuf>,
    /// Created when the traffic starts.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Every message sent and received, as JSON lines.
    #[arg(long)]
    history: Option<PathBuf>,
    /// Violations shown per kind.
    #[arg(long, default_value_t = 5)]
    show: usize,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config {
            bucket,
            partitions,
            lease,
        } => {
            print!("{}", config_yaml(&bucket, partitions, &lease));
            std::process::ExitCode::SUCCESS
        }
        Command::Schedule(args) => {
            for line in schedule(&args) {
                println!("{line}");
            }
            std::process::ExitCode::SUCCESS
        }
        Command::Run(args) => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("chaos: cannot start a runtime: {e}");
                    return std::process::ExitCode::from(2);
                }
            };
            match runtime.block_on(run(args)) {
                Ok(0) => std::process::ExitCode::SUCCESS,
                Ok(_) => std::process::ExitCode::from(1),
                Err(e) => {
                    eprintln!("chaos: {e:#}");
                    std::process::ExitCode::from(2)
                }
            }
        }
    }
}

fn config_yaml(bucket: &str, partitions: u32, lease: &str) -> String {
    format!(
        r#"# The config of the chaos run (examples/chaos.rs): the seed's models, shared state.
version: 1
state:
  store: nats
  bucket: {bucket}
  partitions: {partitions}
  lease: {lease}
resources:
  session.user.{{cid}}:
    fields:
      id:   {{ type: integer, from: "{{{{token.userId}}}}" }}
      name: {{ type: string,  from: "{{{{token.name}}}}" }}
      role: {{ type: string,  from: "{{{{token.role}}}}", enum: [admin, user, guest] }}
      user: {{ type: ref,     from: "users.user.{{{{token.userId}}}}" }}
    access:
      get: cid == params.cid
  session.prefs.{{cid}}:
    fields:
      theme:    {{ type: string,  default: light, enum: [light, dark], writable: true }}
      fontSize: {{ type: integer, default: 14, min: 8, max: 32, writable: true }}
      text:     {{ type: string,  max_length: 64, writable: true }}
      shared:   {{ type: string,  max_length: 64, writable: true }}
      note:     {{ type: string,  max_length: 64 }}
    reset: {{ on_logout: false }}
    access:
      get: cid == params.cid
      call:
        set: cid == params.cid && token != null
        reset: cid == params.cid
  chaos.room.{{room}}.members:
    presence:
      member: "{{{{token.member}}}}"
      join: token != null
      ttl: {ttl}s
    access:
      get: "true"
      call: token != null
"#,
        ttl = PRESENCE_TTL.as_secs()
    )
}

// ---------------------------------------------------------------------------------------
// The seeded PRNG (xorshift64*, seeded through splitmix64)

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 1 } else { z })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// The fault stream is independent of the traffic stream of the same seed.
const FAULT_STREAM: u64 = 0x00FA_0017_5EED;

/// The fault schedule: first `end <traffic ms>`, then `<at ms> <kind> <slot> <param ms>`
/// lines. The first four faults are the four kinds in a seeded order (so a short run
/// sees each), then kill 3 : pause 3 : term 2 : nats 1. `kill`/`term` param: the delay
/// before the replacement starts; `pause`: how long the instance stays stopped (1 to 2
/// leases); `nats`: how long the server stays down. No fault starts in the last lease.
fn schedule(args: &ScheduleArgs) -> Vec<String> {
    let mut rng = Rng::new(args.seed ^ FAULT_STREAM);
    let duration = args.duration.as_millis() as u64;
    let lease = args.lease.as_millis() as u64;
    let mut kinds = ["kill", "pause", "term", "nats"];
    for i in (1..kinds.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        kinds.swap(i, j);
    }
    let mut out = vec![format!("end {duration}")];
    let mut at = 1500u64.min(duration / 4);
    let mut n = 0usize;
    while at + lease <= duration {
        let kind = if n < kinds.len() {
            kinds[n]
        } else {
            match rng.below(9) {
                0..=2 => "kill",
                3..=5 => "pause",
                6..=7 => "term",
                _ => "nats",
            }
        };
        let (slot, param) = match kind {
            "pause" => (
                rng.range(1, args.instances.into()),
                rng.range(lease, 2 * lease),
            ),
            "nats" => (0, rng.range(200, lease)),
            _ => (rng.range(1, args.instances.into()), rng.range(0, lease / 2)),
        };
        out.push(format!("{at} {kind} {slot} {param}"));
        n += 1;
        at += rng.range(
            args.min_gap.as_millis() as u64,
            args.max_gap.as_millis() as u64,
        );
    }
    out
}

// ---------------------------------------------------------------------------------------
// The run's vocabulary

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
enum Role {
    Gw = 0,
    Auth = 1,
    Backend = 2,
    Mixed = 3,
}

const ALL_ROLES: [Role; 4] = [Role::Gw, Role::Auth, Role::Backend, Role::Mixed];
/// The connections that keep a gateway cache.
const CACHES: [Role; 2] = [Role::Gw, Role::Mixed];

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Gw => "gw",
            Role::Auth => "auth",
            Role::Backend => "backend",
            Role::Mixed => "mixed",
        }
    }

    fn letter(self) -> char {
        match self {
            Role::Gw => 'g',
            Role::Auth => 'a',
            Role::Backend => 'b',
            Role::Mixed => 'm',
        }
    }

    /// Replies come on `<prefix>.<request id>`. The caching connections take them under
    /// `event.` so that their `event.>` subscription keeps them in order with events.
    fn reply_prefix(self) -> &'static str {
        match self {
            Role::Gw => "event._chaosreply.gw",
            Role::Mixed => "event._chaosreply.mixed",
            Role::Auth => "_INBOX.chaos.auth",
            Role::Backend => "_INBOX.chaos.backend",
        }
    }

    fn from_name(name: &str) -> Option<Role> {
        ALL_ROLES.into_iter().find(|r| r.name() == name)
    }

    fn cache(self) -> Option<usize> {
        CACHES.iter().position(|&r| r == self)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
enum Kind {
    Get,
    Access,
    Call,
    Api,
    Token,
    /// `join`, `leave` or `ping` on the presence list.
    Presence,
    CacheGet,
    /// A cache's get of the presence list.
    ListGet,
    CacheAccess,
    Probe,
    Final,
}

const ALL_KINDS: [Kind; 11] = [
    Kind::Get,
    Kind::Access,
    Kind::Call,
    Kind::Api,
    Kind::Token,
    Kind::Presence,
    Kind::CacheGet,
    Kind::ListGet,
    Kind::CacheAccess,
    Kind::Probe,
    Kind::Final,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Get => "get",
            Kind::Access => "access",
            Kind::Call => "call",
            Kind::Api => "api",
            Kind::Token => "token",
            Kind::Presence => "presence call",
            Kind::CacheGet => "cache get",
            Kind::ListGet => "list get",
            Kind::CacheAccess => "cache access",
            Kind::Probe => "probe get",
            Kind::Final => "final get",
        }
    }

    /// Traffic (as opposed to the driver's own gets and accesses).
    fn is_traffic(self) -> bool {
        matches!(
            self,
            Kind::Get | Kind::Access | Kind::Call | Kind::Api | Kind::Token | Kind::Presence
        )
    }
}

/// A written field: the token (of the user model) or a prefs field.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
enum Field {
    Token,
    Text,
    Shared,
    Note,
}

const PREFS_FIELDS: [Field; 3] = [Field::Text, Field::Shared, Field::Note];

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Token => "token",
            Field::Text => "text",
            Field::Shared => "shared",
            Field::Note => "note",
        }
    }

    fn letter(self) -> char {
        match self {
            Field::Token => 'k',
            Field::Text => 't',
            Field::Shared => 's',
            Field::Note => 'n',
        }
    }
}

/// A model: cid * 2 + 0 for the user model, + 1 for prefs.
fn rid_of(model: usize) -> String {
    let kind = if model.is_multiple_of(2) {
        "user"
    } else {
        "prefs"
    };
    format!("session.{kind}.c{}", model / 2)
}

fn is_user(model: usize) -> bool {
    model.is_multiple_of(2)
}

fn is_mixed(cid: usize) -> bool {
    cid % MIXED_EVERY == MIXED_EVERY - 1
}

/// Whether a `system.reset` pattern names a resource: `*` is one token, a trailing `>`
/// one or more.
fn pattern_matches(pattern: &str, rid: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let r: Vec<&str> = rid.split('.').collect();
    for (i, t) in p.iter().enumerate() {
        if *t == ">" {
            return i == p.len() - 1 && r.len() > i;
        }
        match r.get(i) {
            Some(x) if *t == "*" || t == x => {}
            _ => return false,
        }
    }
    p.len() == r.len()
}

/// The user model a token gives.
fn user_model(token: &Value) -> Value {
    if token.is_null() {
        return json!({"id": null, "name": null, "role": null, "user": null});
    }
    json!({
        "id": token["userId"],
        "name": token["name"],
        "role": token["role"],
        "user": {"rid": format!("users.user.{}", token["userId"])},
    })
}

/// The presence member a token gives (its `member` claim).
fn member_of(token: &Value) -> Option<String> {
    token["member"].as_str().map(str::to_string)
}

/// The members of a get reply of the presence list, when it is one.
fn collection(result: &Value) -> Option<Vec<Value>> {
    result["collection"].as_array().cloned()
}

/// A member listed more than once in `list`, if any.
fn listed_twice(list: &[Value]) -> Option<&Value> {
    list.iter()
        .enumerate()
        .find(|(i, v)| list[..*i].contains(v))
        .map(|(_, v)| v)
}

fn prefs_default(field: &str) -> Value {
    match field {
        "theme" => json!("light"),
        "fontSize" => json!(14),
        _ => Value::Null,
    }
}

/// One message a connection received (or a connection event, or a fault line).
enum Inbound {
    Msg {
        role: Role,
        at: Instant,
        subject: String,
        payload: bytes::Bytes,
        /// A NATS status (503: no responders).
        status: Option<u16>,
    },
    Conn {
        role: Role,
        at: Instant,
        what: String,
        connected: bool,
    },
    Fault {
        at: Instant,
        line: String,
    },
    FaultsDone,
}

struct Req {
    role: Role,
    kind: Kind,
    subject: String,
    model: Option<usize>,
    cid: usize,
    seq: u64,
    sent: Instant,
    replies: Vec<(Instant, Result<Value, String>)>,
    writes: Vec<usize>,
    /// For a presence call: its cid's presence epoch when it was sent.
    epoch: u64,
}

#[derive(Debug, Clone)]
enum Outcome {
    Acked(Instant),
    Refused(String),
    Unknown,
}

struct Write {
    field: Field,
    value: Value,
    role: Role,
    seq: u64,
    req: usize,
    sent: Instant,
    /// First change event that showed it (or, for a logout, was credited to it).
    event_at: Option<Instant>,
}

/// What a change event or the final state shows for a field.
#[derive(Clone, Debug)]
enum Shown {
    Write(usize),
    /// The user model all null (the initial state or a logout).
    LoggedOut,
    /// A prefs field at its default.
    Default,
    Unknown(Value),
}

#[derive(Default)]
struct Entry {
    model: Option<Map<String, Value>>,
    pending: Option<usize>,
    stale: bool,
    retry_at: Option<Instant>,
}

/// A gateway's copy of the presence list: a get, then every `add` and `remove` event
/// folded in at its index.
#[derive(Default)]
struct ListCache {
    /// None before the first get, after a failed get, or once an event did not fit.
    copy: Option<Vec<Value>>,
    pending: Option<usize>,
    stale: bool,
    retry_at: Option<Instant>,
    /// Events that did not fit the copy (an index out of range, an `add` of a member
    /// already listed), when received.
    misfits: Vec<Instant>,
    /// `system.reset`s naming the list, when received.
    resets: Vec<Instant>,
}

struct Cache {
    entries: Vec<Entry>,
    last_activity: Instant,
    disconnected: bool,
}

/// Why a final value is not allowed.
struct Verdict {
    kind: &'static str,
    invariant: u8,
    expected: String,
    /// The write that took effect and should have won.
    against: Option<usize>,
}

struct Violation {
    kind: &'static str,
    invariant: u8,
    rid: String,
    field: String,
    expected: String,
    seen: String,
}

// ---------------------------------------------------------------------------------------
// The run

struct Run {
    args: RunArgs,
    start: Instant,
    rng: Rng,
    clients: Vec<Client>,
    rx: UnboundedReceiver<Inbound>,
    reqs: Vec<Req>,
    writes: Vec<Write>,
    /// (model, field, value text) -> write; a login's key is its userId.
    by_value: HashMap<(usize, Field, String), usize>,
    /// (model, field) -> writes in send order.
    field_writes: BTreeMap<(usize, Field), Vec<usize>>,
    seq: [u64; 4],
    /// The token last sent for each cid (what `mixed` puts in requests).
    token: Vec<Value>,
    /// The token of the last token event `gw` received for each cid (what it puts in
    /// requests).
    heard: Vec<Value>,
    next_user: u64,
    caches: Vec<Cache>,
    /// (model, field) -> what `gw`'s change events showed, in order.
    observed: BTreeMap<(usize, Field), Vec<(Instant, Shown)>>,
    /// Per model: when `gw` received a `system.reset` naming it under `resources`.
    resets_at: Vec<Vec<Instant>>,
    /// Change events out of order that a `system.reset` naming the model followed
    /// before the model's next change event (the gateway re-fetched it).
    recalled: usize,
    stray: Vec<(Role, String)>,
    /// Change events (on `gw`) of fields nobody writes: (at, model, field, value).
    odd: Vec<(Instant, usize, String, Value)>,
    /// Cids whose last token event, an unacknowledged logout, did not take effect.
    unacked_logouts: u64,
    faults: Vec<(Instant, String)>,
    faults_done: bool,
    sent_ops: u64,
    events: BTreeMap<String, u64>,
    history: Option<std::io::BufWriter<std::fs::File>>,
    traffic_end: Option<Instant>,
    finals: Vec<Option<Map<String, Value>>>,
    final_reqs: Vec<Option<usize>>,
    probe_reqs: Vec<usize>,
    /// Per cid: whether the driver holds it joined to the presence list (the members it
    /// may be listed as), from the calls and token events sent and the calls refused.
    joined: Vec<Option<std::collections::BTreeSet<String>>>,
    /// Per cid: bumped by every join, leave and token event sent for it (a refusal
    /// clears `joined` only when nothing was sent since the refused call).
    epoch: Vec<u64>,
    /// Member -> the last cid that sent a join as it, and when.
    last_join_as: HashMap<String, (usize, Instant)>,
    /// Per caching connection, its copy of the presence list.
    lists: Vec<ListCache>,
    /// Get replies of the list that listed a member twice: (request, member).
    list_twice: Vec<(usize, Value)>,
    final_list: Option<Vec<Value>>,
    final_list_req: Option<usize>,
    /// The members a connection held joined may be listed as, when the final get of
    /// the list was sent.
    allowed: std::collections::BTreeSet<String>,
    faults_done_at: Option<Instant>,
    /// Pings of held-joined connections go on until the check.
    next_end_ping: Option<Instant>,
    checking: bool,
    /// Per cid: the last ping sent after the traffic.
    end_ping: Vec<Option<usize>>,
    /// Cids held joined whose last ping after the traffic was acknowledged when the
    /// final get was sent, with the members each may be listed as.
    pinged: Vec<(usize, std::collections::BTreeSet<String>)>,
    /// `remove` events of the list `gw` received after the traffic (a connection not
    /// pinged past its `ttl`, or a ping refused).
    end_removes: u64,
}

async fn connect(url: &str, role: Role, tx: &UnboundedSender<Inbound>) -> anyhow::Result<Client> {
    let events = tx.clone();
    let options = async_nats::ConnectOptions::new()
        .name(format!("chaos-{}", role.name()))
        .subscription_capacity(1 << 20)
        .client_capacity(1 << 16)
        .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 50).min(500)))
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                let connected = matches!(event, async_nats::Event::Connected);
                let _ = events.send(Inbound::Conn {
                    role,
                    at: Instant::now(),
                    what: event.to_string(),
                    connected,
                });
            }
        });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match options.clone().connect(url).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() < deadline => {
                eprintln!("chaos: {} cannot connect yet: {e}", role.name());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot connect to {url}")),
        }
    }
}

/// Forwards a subscription's messages, stamped, into the run's one channel.
fn forward(role: Role, mut sub: async_nats::Subscriber, tx: UnboundedSender<Inbound>) {
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let item = Inbound::Msg {
                role,
                at: Instant::now(),
                subject: m.subject.to_string(),
                payload: m.payload,
                status: m.status.map(|s| s.as_u16()),
            };
            if tx.send(item).is_err() {
                break;
            }
        }
    });
}

async fn run(args: RunArgs) -> anyhow::Result<usize> {
    let (tx, rx) = unbounded_channel();
    let mut clients = Vec::new();
    for role in ALL_ROLES {
        let client = connect(&args.nats, role, &tx).await?;
        match role {
            Role::Gw | Role::Mixed => {
                for subject in ["event.>", "system.reset", "conn.*.token"] {
                    forward(role, client.subscribe(subject).await?, tx.clone());
                }
            }
            _ => {
                let sub = client
                    .subscribe(format!("{}.>", role.reply_prefix()))
                    .await?;
                forward(role, sub, tx.clone());
            }
        }
        client.flush().await?;
        clients.push(client);
    }
    if let Some(path) = args.faults.clone() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            match std::fs::File::open(&path) {
                Ok(f) => {
                    for line in std::io::BufReader::new(f).lines() {
                        let Ok(line) = line else { break };
                        let _ = tx.send(Inbound::Fault {
                            at: Instant::now(),
                            line,
                        });
                    }
                }
                Err(e) => eprintln!("chaos: cannot read {}: {e}", path.display()),
            }
            let _ = tx.send(Inbound::FaultsDone);
        });
    }
    drop(tx);
    let history = match &args.history {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => None,
    };
    let models = args.cids * 2;
    let now = Instant::now();
    let mut run = Run {
        start: now,
        rng: Rng::new(args.seed),
        clients,
        rx,
        reqs: Vec::new(),
        writes: Vec::new(),
        by_value: HashMap::new(),
        field_writes: BTreeMap::new(),
        seq: [0; 4],
        token: vec![Value::Null; args.cids],
        heard: vec![Value::Null; args.cids],
        next_user: 1,
        caches: CACHES
            .iter()
            .map(|_| Cache {
                entries: (0..models).map(|_| Entry::default()).collect(),
                last_activity: now,
                disconnected: false,
            })
            .collect(),
        observed: BTreeMap::new(),
        resets_at: Vec::new(),
        recalled: 0,
        stray: Vec::new(),
        odd: Vec::new(),
        unacked_logouts: 0,
        faults: Vec::new(),
        faults_done: args.faults.is_none(),
        sent_ops: 0,
        events: BTreeMap::new(),
        history,
        traffic_end: None,
        finals: vec![None; models],
        final_reqs: vec![None; models],
        probe_reqs: Vec::new(),
        joined: vec![None; args.cids],
        epoch: vec![0; args.cids],
        last_join_as: HashMap::new(),
        lists: CACHES.iter().map(|_| ListCache::default()).collect(),
        list_twice: Vec::new(),
        final_list: None,
        final_list_req: None,
        allowed: Default::default(),
        faults_done_at: None,
        next_end_ping: None,
        checking: false,
        end_removes: 0,
        end_ping: vec![None; args.cids],
        pinged: Vec::new(),
        args,
    };
    run.main().await
}

impl Run {
    fn secs(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.start).as_secs_f64()
    }

    fn log(&mut self, mut line: Value) {
        let t = self.secs(Instant::now());
        if let Some(h) = &mut self.history {
            line["t"] = json!((t * 1e6).round() / 1e6);
            let _ = writeln!(h, "{line}");
        }
    }

    fn models(&self) -> usize {
        self.args.cids * 2
    }

    /// Publishes a request and records it; returns its id.
    async fn send(
        &mut self,
        role: Role,
        kind: Kind,
        subject: String,
        payload: Value,
        model: Option<usize>,
        cid: usize,
    ) -> usize {
        let id = self.reqs.len();
        let reply = format!("{}.{id}", role.reply_prefix());
        self.seq[role as usize] += 1;
        let seq = self.seq[role as usize];
        let body = payload.to_string();
        self.log(
            json!({"ev": "send", "conn": role.name(), "id": id, "seq": seq,
            "kind": kind.name(), "subject": subject, "payload": payload}),
        );
        self.reqs.push(Req {
            role,
            kind,
            subject: subject.clone(),
            model,
            cid,
            seq,
            sent: Instant::now(),
            replies: Vec::new(),
            writes: Vec::new(),
            epoch: 0,
        });
        if let Err(e) = self.clients[role as usize]
            .publish_with_reply(subject, reply, body.into())
            .await
        {
            eprintln!("chaos: {} publish failed: {e}", role.name());
        }
        id
    }

    /// Records the writes a request carries (after `send`, so they share its seq).
    fn add_write(&mut self, req: usize, model: usize, field: Field, value: Value) {
        let r = &self.reqs[req];
        let w = self.writes.len();
        let key = match field {
            Field::Token => value["userId"].to_string(),
            _ => value.to_string(),
        };
        if !(field == Field::Token && value.is_null()) {
            self.by_value.insert((model, field, key), w);
        }
        self.field_writes.entry((model, field)).or_default().push(w);
        self.writes.push(Write {
            field,
            value,
            role: r.role,
            seq: r.seq,
            req,
            sent: r.sent,
            event_at: None,
        });
        self.reqs[req].writes.push(w);
    }

    async fn main(&mut self) -> anyhow::Result<usize> {
        // Start: every cache loaded (every model answered a get).
        for c in 0..CACHES.len() {
            for m in 0..self.models() {
                self.cache_get(c, m).await;
            }
            self.list_get(c).await;
        }
        let loaded = self
            .pump(Duration::from_secs(60), false, |r| {
                r.caches
                    .iter()
                    .all(|c| c.entries.iter().all(|e| e.model.is_some()))
                    && r.lists.iter().all(|l| l.copy.is_some())
            })
            .await;
        if !loaded {
            anyhow::bail!("connres did not answer a get for every model within 60 s");
        }
        if let Some(p) = &self.args.ready_file {
            std::fs::write(p, b"ready\n").with_context(|| format!("{}", p.display()))?;
        }
        let traffic_start = Instant::now();
        eprintln!(
            "chaos: traffic for {:?} at {}/s over {} cids (seed {})",
            self.args.duration, self.args.rate, self.args.cids, self.args.seed
        );
        let traffic_end = traffic_start + self.args.duration;
        self.traffic_end = Some(traffic_end);
        self.pump(self.args.duration, true, |_| false).await;
        eprintln!("chaos: traffic over; waiting for the faults to end");

        // Quiesce.
        self.pump(Duration::from_secs(180), false, |r| r.faults_done)
            .await;
        eprintln!("chaos: faults over; waiting until every model answers a get");
        let mut rounds = 0;
        let deadline = Instant::now() + Duration::from_secs(90);
        while rounds < 2 && Instant::now() < deadline {
            if self.probe_round().await {
                rounds += 1;
            } else {
                rounds = 0;
            }
            if rounds < 2 {
                let lease = self.args.lease;
                self.pump(lease, false, |_| false).await;
            }
        }
        if rounds < 2 {
            eprintln!("chaos: not every model answers a get; checking anyway");
        }
        let unanswered: Vec<usize> = (0..self.reqs.len())
            .filter(|&id| self.reqs[id].replies.is_empty())
            .collect();
        self.pump(REQUEST_TIMEOUT + Duration::from_secs(1), false, move |r| {
            let now = Instant::now();
            unanswered.iter().all(|&id| {
                let q = &r.reqs[id];
                !q.replies.is_empty() || now.duration_since(q.sent) > REQUEST_TIMEOUT
            })
        })
        .await;
        // No ghost before the final get: a connection that stopped pinging (it left or
        // logged out, or its leave or logout was lost) is gone within a ttl of its last
        // ping, or of the load of the list by a new owner (a takeover's reset, or a
        // handover, which follows an instance's start within a few leases).
        let mut since = self.traffic_end.unwrap_or_else(Instant::now);
        if let Some(done) = self.faults_done_at {
            since = since.max(done + 3 * self.args.lease);
        }
        if let Some(&r) = self.lists[0].resets.last() {
            since = since.max(r);
        }
        let ghosts_gone = since + PRESENCE_TTL + Duration::from_millis(1500);
        let wait = ghosts_gone.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            eprintln!(
                "chaos: waiting {:.1} s more for the presence list's ttl",
                wait.as_secs_f64()
            );
            self.pump(wait, false, |_| false).await;
        }
        self.settle().await;
        // The final state.
        for attempt in 0..4 {
            if self.final_list.is_none() {
                self.allowed = self.joined.iter().flatten().flatten().cloned().collect();
                self.pinged = (0..self.args.cids)
                    .filter_map(|cid| {
                        let may = self.joined[cid].clone()?;
                        let id = self.end_ping[cid]?;
                        matches!(self.reqs[id].replies.first(), Some((_, Ok(_))))
                            .then_some((cid, may))
                    })
                    .collect();
                let id = self
                    .send(
                        Role::Gw,
                        Kind::Final,
                        format!("get.{ROOM}"),
                        json!({}),
                        None,
                        0,
                    )
                    .await;
                self.final_list_req = Some(id);
            }
            for m in 0..self.models() {
                if self.finals[m].is_none() {
                    let id = self
                        .send(
                            Role::Gw,
                            Kind::Final,
                            format!("get.{}", rid_of(m)),
                            json!({}),
                            Some(m),
                            m / 2,
                        )
                        .await;
                    self.final_reqs[m] = Some(id);
                }
            }
            self.pump(Duration::from_secs(5), false, |r| {
                r.final_reqs
                    .iter()
                    .chain(std::iter::once(&r.final_list_req))
                    .flatten()
                    .all(|&id| !r.reqs[id].replies.is_empty())
            })
            .await;
            if let Some(id) = self.final_list_req {
                if let Some((_, Ok(v))) = self.reqs[id].replies.first() {
                    self.final_list = collection(v);
                }
            }
            for m in 0..self.models() {
                if let Some(id) = self.final_reqs[m] {
                    if let Some((_, Ok(v))) = self.reqs[id].replies.first() {
                        if let Some(model) = v["model"].as_object() {
                            self.finals[m] = Some(model.clone());
                        }
                    }
                }
            }
            if (self.finals.iter().all(Option::is_some) && self.final_list.is_some())
                || attempt == 3
            {
                break;
            }
            let lease = self.args.lease;
            self.pump(lease, false, |_| false).await;
        }
        self.settle().await;
        self.checking = true;
        let violations = self.check();
        self.report(&violations);
        if let Some(h) = &mut self.history {
            h.flush()?;
        }
        Ok(violations.len())
    }

    /// One get of every model; whether every one answered with a model.
    async fn probe_round(&mut self) -> bool {
        let mut ids = Vec::new();
        for m in 0..self.models() {
            let id = self
                .send(
                    Role::Gw,
                    Kind::Probe,
                    format!("get.{}", rid_of(m)),
                    json!({}),
                    Some(m),
                    m / 2,
                )
                .await;
            ids.push(id);
        }
        self.probe_reqs.extend(&ids);
        let wait = ids.clone();
        self.pump(Duration::from_secs(3), false, move |r| {
            wait.iter().all(|&id| !r.reqs[id].replies.is_empty())
        })
        .await;
        ids.iter().all(|&id| {
            matches!(self.reqs[id].replies.first(), Some((_, Ok(v))) if v["model"].is_object())
        })
    }

    /// Until both caches are idle: no get in flight or due, nothing received for 1 s
    /// (at most 20 s).
    async fn settle(&mut self) {
        self.pump(Duration::from_secs(20), false, |r| {
            let now = Instant::now();
            r.caches.iter().all(|c| {
                now.duration_since(c.last_activity) >= Duration::from_secs(1)
                    && c.entries
                        .iter()
                        .all(|e| e.pending.is_none() && e.retry_at.is_none())
            }) && r
                .lists
                .iter()
                .all(|l| l.pending.is_none() && l.retry_at.is_none())
        })
        .await;
    }

    /// Handles what arrives and ticks (sending traffic when asked) until `done` or
    /// `limit` has passed; whether `done` held.
    async fn pump(&mut self, limit: Duration, traffic: bool, done: impl Fn(&Run) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        if done(self) {
            return true;
        }
        loop {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::select! {
                item = self.rx.recv() => {
                    let Some(item) = item else { return done(self) };
                    self.inbound(item).await;
                    for _ in 0..256 {
                        match self.rx.try_recv() {
                            Ok(item) => self.inbound(item).await,
                            Err(_) => break,
                        }
                    }
                }
                _ = tick.tick() => {
                    self.maintain().await;
                    if traffic {
                        self.traffic().await;
                    }
                    if done(self) {
                        return true;
                    }
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Traffic

    async fn traffic(&mut self) {
        let Some(end) = self.traffic_end else { return };
        let begun = end - self.args.duration;
        let now = Instant::now().min(end);
        let due = (now.duration_since(begun).as_secs_f64() * self.args.rate as f64) as u64;
        while self.sent_ops < due {
            self.sent_ops += 1;
            self.one_op().await;
        }
    }

    /// The token the gateway a cid's client is on puts in its requests.
    fn gateway_token(&self, cid: usize) -> Value {
        if is_mixed(cid) {
            self.token[cid].clone()
        } else {
            self.heard[cid].clone()
        }
    }

    async fn one_op(&mut self) {
        let cid = self.rng.below(self.args.cids as u64) as usize;
        if self.rng.percent(15) {
            self.presence_op(cid).await;
            return;
        }
        let mixed = is_mixed(cid);
        let roll = self.rng.below(100);
        let pick = |own: Role| if mixed { Role::Mixed } else { own };
        let token = self.gateway_token(cid);
        let c = format!("c{cid}");
        match roll {
            0..=14 => {
                let m = cid * 2 + self.rng.below(2) as usize;
                self.send(
                    pick(Role::Gw),
                    Kind::Get,
                    format!("get.{}", rid_of(m)),
                    json!({}),
                    Some(m),
                    cid,
                )
                .await;
            }
            15..=24 => {
                let m = cid * 2 + self.rng.below(2) as usize;
                self.send(
                    pick(Role::Gw),
                    Kind::Access,
                    format!("access.{}", rid_of(m)),
                    json!({"cid": c, "token": token}),
                    Some(m),
                    cid,
                )
                .await;
            }
            25..=54 => {
                let m = cid * 2 + 1;
                let fields: &[Field] = match self.rng.below(10) {
                    0..=5 => &[Field::Text],
                    6..=8 => &[Field::Shared],
                    _ => &[Field::Text, Field::Shared],
                };
                let invalid = self.rng.percent(3);
                let role = pick(Role::Gw);
                let id = self.reqs.len();
                let values = self.values(role, id, fields, invalid);
                let params: Map<String, Value> = values
                    .iter()
                    .map(|(f, v)| (f.name().to_string(), v.clone()))
                    .collect();
                let id = self
                    .send(
                        role,
                        Kind::Call,
                        format!("call.{}.set", rid_of(m)),
                        json!({"cid": c, "token": token, "params": params}),
                        Some(m),
                        cid,
                    )
                    .await;
                for (f, v) in values {
                    self.add_write(id, m, f, v);
                }
            }
            55..=77 => {
                let m = cid * 2 + 1;
                let fields: &[Field] = if mixed {
                    match self.rng.below(10) {
                        0..=2 => &[Field::Text],
                        3..=5 => &[Field::Note],
                        6..=8 => &[Field::Shared],
                        _ => &[Field::Note, Field::Shared],
                    }
                } else {
                    match self.rng.below(10) {
                        0..=5 => &[Field::Note],
                        6..=8 => &[Field::Shared],
                        _ => &[Field::Note, Field::Shared],
                    }
                };
                let role = pick(Role::Backend);
                let id = self.reqs.len();
                let values = self.values(role, id, fields, false);
                let map: Map<String, Value> = values
                    .iter()
                    .map(|(f, v)| (f.name().to_string(), v.clone()))
                    .collect();
                let id = self
                    .send(
                        role,
                        Kind::Api,
                        format!("connres.set.{}", rid_of(m)),
                        json!({ "values": map }),
                        Some(m),
                        cid,
                    )
                    .await;
                for (f, v) in values {
                    self.add_write(id, m, f, v);
                }
            }
            _ => {
                let m = cid * 2;
                let new = if self.rng.percent(70) {
                    let n = self.next_user;
                    self.next_user += 1;
                    json!({"userId": n, "name": format!("n{n}"), "role": ROLES[n as usize % 3],
                        "member": format!("p{}", n % MEMBERS)})
                } else {
                    Value::Null
                };
                self.token[cid] = new.clone();
                // A logout, or a token for another member, takes the connection off the
                // presence list; one for the same member keeps it.
                self.epoch[cid] += 1;
                if let Some(was) = self.joined[cid].take() {
                    let now = member_of(&new).filter(|m| was.contains(m));
                    self.joined[cid] = now.map(|m| [m].into());
                }
                let id = self
                    .send(
                        pick(Role::Auth),
                        Kind::Token,
                        format!("conn.{c}.token"),
                        json!({ "token": new }),
                        Some(m),
                        cid,
                    )
                    .await;
                self.add_write(id, m, Field::Token, new);
            }
        }
    }

    /// A `join` (7 in 15), `leave` (2), `ping` (5) or get (1) of the presence list, by
    /// the gateway the cid's client is on, with the token it puts in calls.
    async fn presence_op(&mut self, cid: usize) {
        let role = if is_mixed(cid) { Role::Mixed } else { Role::Gw };
        let method = match self.rng.below(15) {
            0..=6 => "join",
            7..=8 => "leave",
            9..=13 => "ping",
            _ => {
                self.send(role, Kind::Get, format!("get.{ROOM}"), json!({}), None, cid)
                    .await;
                return;
            }
        };
        let token = self.gateway_token(cid);
        let id = self.presence_call(role, cid, method, token.clone()).await;
        match method {
            "join" => {
                // Rendered from the connection's token record at the list's owner, or
                // from the token the call carries while that owner has none.
                let mut may: std::collections::BTreeSet<String> =
                    [member_of(&self.token[cid]), member_of(&token)]
                        .into_iter()
                        .flatten()
                        .collect();
                for m in &may {
                    self.last_join_as
                        .insert(m.clone(), (cid, self.reqs[id].sent));
                }
                if let Some(was) = self.joined[cid].take() {
                    may.extend(was);
                }
                self.joined[cid] = (!may.is_empty()).then_some(may);
            }
            "leave" => self.joined[cid] = None,
            _ => {}
        }
    }

    /// Sends a presence call; a join or leave bumps the cid's epoch first.
    async fn presence_call(&mut self, role: Role, cid: usize, method: &str, token: Value) -> usize {
        if method != "ping" {
            self.epoch[cid] += 1;
        }
        let id = self
            .send(
                role,
                Kind::Presence,
                format!("call.{ROOM}.{method}"),
                json!({"cid": format!("c{cid}"), "token": token}),
                None,
                cid,
            )
            .await;
        self.reqs[id].epoch = self.epoch[cid];
        id
    }

    /// Unique values for a write request `id` (the next request's number).
    fn values(
        &self,
        role: Role,
        id: usize,
        fields: &[Field],
        invalid: bool,
    ) -> Vec<(Field, Value)> {
        fields
            .iter()
            .map(|&f| {
                let mut v = format!("{}{id}{}", role.letter(), f.letter());
                if invalid && f == Field::Text {
                    while v.chars().count() < 65 {
                        v.push('x');
                    }
                }
                (f, Value::String(v))
            })
            .collect()
    }

    // -----------------------------------------------------------------------------------
    // What arrives

    async fn inbound(&mut self, item: Inbound) {
        match item {
            Inbound::Msg {
                role,
                at,
                subject,
                payload,
                status,
            } => self.message(role, at, &subject, &payload, status).await,
            Inbound::Conn {
                role,
                at,
                what,
                connected,
            } => {
                self.log(json!({"ev": "conn", "conn": role.name(), "what": what}));
                if connected || what == "disconnected" {
                    eprintln!("chaos: {:7.3} s {} {}", self.secs(at), role.name(), what);
                }
                if let Some(c) = role.cache() {
                    if connected && self.caches[c].disconnected {
                        // Events were missed while disconnected: get everything again.
                        self.caches[c].disconnected = false;
                        for m in 0..self.models() {
                            self.cache_reset(c, m).await;
                        }
                        self.list_reset(c).await;
                    } else if what == "disconnected" {
                        self.caches[c].disconnected = true;
                    }
                }
            }
            Inbound::Fault { at, line } => {
                self.log(json!({"ev": "fault", "line": line}));
                eprintln!("chaos: {:7.3} s fault: {line}", self.secs(at));
                self.faults.push((at, line));
            }
            Inbound::FaultsDone => {
                self.faults_done = true;
                self.faults_done_at = Some(Instant::now());
            }
        }
    }

    async fn message(
        &mut self,
        role: Role,
        at: Instant,
        subject: &str,
        payload: &[u8],
        status: Option<u16>,
    ) {
        let text = String::from_utf8_lossy(payload);
        let parsed: Value = match status {
            Some(503) => json!({"error": {"code": NO_RESPONDERS}}),
            Some(code) => json!({"error": {"code": format!("nats status {code}")}}),
            None => serde_json::from_str(&text).unwrap_or(Value::Null),
        };
        // A reply?
        let reply = subject
            .strip_prefix("event._chaosreply.")
            .or_else(|| subject.strip_prefix("_INBOX.chaos."));
        if let Some(rest) = reply {
            let (name, id) = rest.split_once('.').unwrap_or((rest, ""));
            let to = Role::from_name(name);
            if to.is_some() && to != Some(role) {
                return; // another caching connection's reply, seen through event.>
            }
            self.log(
                json!({"ev": "reply", "conn": role.name(), "subject": subject,
                "answers": id.parse::<usize>().ok(), "payload": parsed}),
            );
            if text.starts_with("timeout:") {
                return; // a RES pre-response extending the timeout: not a reply
            }
            match (to, id.parse::<usize>()) {
                (Some(_), Ok(id)) if id < self.reqs.len() && self.reqs[id].role == role => {
                    self.reply(id, at, parsed).await;
                }
                _ => self.stray.push((role, subject.to_string())),
            }
            return;
        }
        self.log(json!({"ev": "recv", "conn": role.name(), "subject": subject, "payload": parsed}));
        let c = role.cache();
        if let Some(c) = c {
            self.caches[c].last_activity = at;
        }
        if subject == "system.reset" {
            if role == Role::Gw {
                *self.events.entry("system.reset".into()).or_default() += 1;
            }
            if let Some(c) = c {
                self.reset(c, &parsed).await;
            }
        } else if let Some(rest) = subject.strip_prefix("conn.") {
            if role == Role::Gw {
                *self.events.entry("token".into()).or_default() += 1;
                let cid = rest.strip_prefix('c').and_then(|r| r.split('.').next());
                if let Some(cid) = cid.and_then(|c| c.parse::<usize>().ok()) {
                    if cid < self.heard.len() {
                        self.heard[cid] = parsed["token"].clone();
                    }
                }
            }
        } else if let Some(rest) = subject.strip_prefix("event.") {
            let Some((rid, name)) = rest.rsplit_once('.') else {
                return;
            };
            if role == Role::Gw {
                let kind = if rid == ROOM {
                    format!("list {name}")
                } else {
                    name.to_string()
                };
                *self.events.entry(kind).or_default() += 1;
            }
            if rid == ROOM {
                if role == Role::Gw
                    && name == "remove"
                    && self.traffic_end.is_some_and(|end| at > end)
                {
                    self.end_removes += 1;
                }
                if let Some(c) = c {
                    self.list_event(c, at, name, &parsed);
                }
                return;
            }
            if name != "change" {
                return;
            }
            let Some(m) = self.model_of(rid) else { return };
            let Some(values) = parsed["values"].as_object() else {
                return;
            };
            self.observe(role, at, m, values);
            if let Some(c) = c {
                let e = &mut self.caches[c].entries[m];
                if e.pending.is_none() {
                    if let Some(model) = &mut e.model {
                        for (k, v) in values {
                            if v.get("action").and_then(Value::as_str) == Some("delete") {
                                model.remove(k);
                            } else {
                                model.insert(k.clone(), v.clone());
                            }
                        }
                    }
                }
            }
        }
    }

    fn model_of(&self, rid: &str) -> Option<usize> {
        let (kind, cid) = rid.strip_prefix("session.")?.split_once('.')?;
        let cid: usize = cid.strip_prefix('c')?.parse().ok()?;
        if cid >= self.args.cids {
            return None;
        }
        match kind {
            "user" => Some(cid * 2),
            "prefs" => Some(cid * 2 + 1),
            _ => None,
        }
    }

    /// What a change event shows, per field: evidence for writes, and (on `gw`) the
    /// sequence the event-order check reads.
    fn observe(&mut self, role: Role, at: Instant, m: usize, values: &Map<String, Value>) {
        let mut shown = Vec::new();
        if is_user(m) {
            match values.get("id") {
                Some(Value::Null) => shown.push((Field::Token, Shown::LoggedOut)),
                Some(id) => shown.push((Field::Token, self.lookup(m, Field::Token, id))),
                None => {}
            }
        } else {
            for (k, v) in values {
                let field = PREFS_FIELDS.into_iter().find(|f| f.name() == k);
                match field {
                    Some(f) if v.is_null() => shown.push((f, Shown::Default)),
                    Some(f) => shown.push((f, self.lookup(m, f, v))),
                    None if role == Role::Gw => self.odd.push((at, m, k.clone(), v.clone())),
                    None => {}
                }
            }
        }
        for (f, s) in shown {
            if let Shown::Write(w) = s {
                let e = &mut self.writes[w].event_at;
                *e = Some(e.map_or(at, |e| e.min(at)));
            }
            if role == Role::Gw {
                self.observed.entry((m, f)).or_default().push((at, s));
            }
        }
    }

    fn lookup(&self, m: usize, f: Field, v: &Value) -> Shown {
        match self.by_value.get(&(m, f, v.to_string())) {
            Some(&w) => Shown::Write(w),
            None => Shown::Unknown(v.clone()),
        }
    }

    async fn reply(&mut self, id: usize, at: Instant, parsed: Value) {
        let result = match (parsed.get("result"), parsed.get("error")) {
            (Some(r), _) => Ok(r.clone()),
            (None, Some(e)) => Err(e["code"].as_str().unwrap_or("malformed").to_string()),
            _ => Err("malformed".to_string()),
        };
        self.reqs[id].replies.push((at, result.clone()));
        if self.reqs[id].subject == format!("get.{ROOM}") {
            let listed = result.as_ref().ok().and_then(collection);
            if let Some(twice) = listed.as_deref().and_then(listed_twice) {
                self.list_twice.push((id, twice.clone()));
            }
            if self.reqs[id].kind == Kind::ListGet {
                self.list_reply(id, at, listed).await;
            }
            return;
        }
        if self.reqs[id].kind == Kind::Presence {
            // A refused join or ping: the connection is not listed (a ping whose token
            // gives another member took it off), unless a call or token event was sent
            // for it since.
            let r = &self.reqs[id];
            let refused = matches!(&result, Err(code) if REFUSING.contains(&code.as_str()));
            if refused && !r.subject.ends_with(".leave") && r.epoch == self.epoch[r.cid] {
                self.joined[r.cid] = None;
            }
            return;
        }
        if self.reqs[id].kind == Kind::CacheGet {
            let c = self.reqs[id]
                .role
                .cache()
                .expect("a cache get is a caching role's");
            let m = self.reqs[id].model.expect("a cache get names its model");
            let e = &mut self.caches[c].entries[m];
            if e.pending != Some(id) {
                return; // a late reply to a get given up on
            }
            e.pending = None;
            match result.ok().and_then(|r| r["model"].as_object().cloned()) {
                Some(model) => {
                    e.model = Some(model);
                    if e.stale {
                        self.cache_get(c, m).await;
                    }
                }
                None => {
                    e.model = None;
                    e.retry_at = Some(at + CACHE_RETRY);
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Caches

    async fn cache_get(&mut self, c: usize, m: usize) {
        let id = self
            .send(
                CACHES[c],
                Kind::CacheGet,
                format!("get.{}", rid_of(m)),
                json!({}),
                Some(m),
                m / 2,
            )
            .await;
        let e = &mut self.caches[c].entries[m];
        e.pending = Some(id);
        e.stale = false;
        e.retry_at = None;
    }

    async fn cache_reset(&mut self, c: usize, m: usize) {
        let e = &mut self.caches[c].entries[m];
        if e.pending.is_some() {
            e.stale = true;
        } else {
            self.cache_get(c, m).await;
        }
    }

    async fn reset(&mut self, c: usize, payload: &Value) {
        let names = |key: &str| -> Vec<String> {
            payload[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let resources = names("resources");
        let access = names("access");
        let at = Instant::now();
        if resources.iter().any(|p| pattern_matches(p, ROOM)) {
            self.lists[c].resets.push(at);
            self.list_reset(c).await;
        }
        for m in 0..self.models() {
            let rid = rid_of(m);
            if resources.iter().any(|p| pattern_matches(p, &rid)) {
                if CACHES[c] == Role::Gw {
                    if self.resets_at.len() < self.models() {
                        self.resets_at.resize(self.models(), Vec::new());
                    }
                    self.resets_at[m].push(at);
                }
                self.cache_reset(c, m).await;
            }
            let cid = m / 2;
            // Access is re-asked by the gateway the cid's client is on (`mixed` for mixed
            // cids), so that every message carrying a mixed cid's token is `mixed`'s.
            let owner = if is_mixed(cid) { Role::Mixed } else { Role::Gw };
            if CACHES[c] == owner && access.iter().any(|p| pattern_matches(p, &rid)) {
                let token = self.gateway_token(cid);
                self.send(
                    CACHES[c],
                    Kind::CacheAccess,
                    format!("access.{rid}"),
                    json!({"cid": format!("c{cid}"), "token": token}),
                    Some(m),
                    cid,
                )
                .await;
            }
        }
    }

    async fn list_get(&mut self, c: usize) {
        let id = self
            .send(
                CACHES[c],
                Kind::ListGet,
                format!("get.{ROOM}"),
                json!({}),
                None,
                0,
            )
            .await;
        let l = &mut self.lists[c];
        l.pending = Some(id);
        l.stale = false;
        l.retry_at = None;
    }

    async fn list_reset(&mut self, c: usize) {
        if self.lists[c].pending.is_some() {
            self.lists[c].stale = true;
        } else {
            self.list_get(c).await;
        }
    }

    async fn list_reply(&mut self, id: usize, at: Instant, listed: Option<Vec<Value>>) {
        let c = self.reqs[id].role.cache().expect("a list get is a cache's");
        let l = &mut self.lists[c];
        if l.pending != Some(id) {
            return; // a late reply to a get given up on
        }
        l.pending = None;
        match listed {
            Some(list) => {
                l.copy = Some(list);
                if l.stale {
                    self.list_get(c).await;
                }
            }
            None => {
                l.copy = None;
                l.retry_at = Some(at + CACHE_RETRY);
            }
        }
    }

    /// An `add` or `remove` of the presence list, folded into the copy at its index
    /// (dropped while a get is pending, as Resgate does).
    fn list_event(&mut self, c: usize, at: Instant, name: &str, event: &Value) {
        let l = &mut self.lists[c];
        if l.pending.is_some() {
            return;
        }
        let Some(copy) = &mut l.copy else { return };
        let idx = event["idx"].as_u64().map(|i| i as usize);
        let fits = match (name, idx) {
            ("add", Some(i)) if i <= copy.len() && !copy.contains(&event["value"]) => {
                copy.insert(i, event["value"].clone());
                true
            }
            ("remove", Some(i)) if i < copy.len() => {
                copy.remove(i);
                true
            }
            _ => false,
        };
        if !fits {
            l.copy = None;
            l.misfits.push(at);
        }
    }

    /// Cache gets that timed out or are due for a retry; after the traffic, pings of
    /// the connections held joined, as open pages send them.
    async fn maintain(&mut self) {
        let now = Instant::now();
        for c in 0..CACHES.len() {
            let l = &self.lists[c];
            let timed_out = l
                .pending
                .is_some_and(|id| now.duration_since(self.reqs[id].sent) > CACHE_GET_TIMEOUT);
            if timed_out || l.retry_at.is_some_and(|t| t <= now) {
                self.lists[c].copy = None;
                self.list_get(c).await;
            }
        }
        let after_traffic = self.traffic_end.is_some_and(|end| now >= end);
        if after_traffic && !self.checking && self.next_end_ping.is_none_or(|t| t <= now) {
            self.next_end_ping = Some(now + END_PING_EVERY);
            for cid in 0..self.args.cids {
                if self.joined[cid].is_some() {
                    let role = if is_mixed(cid) { Role::Mixed } else { Role::Gw };
                    let token = self.gateway_token(cid);
                    let id = self.presence_call(role, cid, "ping", token).await;
                    self.end_ping[cid] = Some(id);
                }
            }
        }
        for c in 0..CACHES.len() {
            for m in 0..self.models() {
                let e = &self.caches[c].entries[m];
                let timed_out = e
                    .pending
                    .is_some_and(|id| now.duration_since(self.reqs[id].sent) > CACHE_GET_TIMEOUT);
                let due = e.retry_at.is_some_and(|t| t <= now);
                if timed_out || due {
                    self.caches[c].entries[m].model = None;
                    self.cache_get(c, m).await;
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Checks

    fn outcome(&self, req: usize) -> Outcome {
        let r = &self.reqs[req];
        if let Some((at, _)) = r.replies.iter().find(|(_, x)| x.is_ok()) {
            return Outcome::Acked(*at);
        }
        let codes: Vec<&str> = r
            .replies
            .iter()
            .filter_map(|(_, x)| x.as_ref().err().map(String::as_str))
            .collect();
        if !codes.is_empty() && codes.iter().all(|c| REFUSING.contains(c)) {
            return Outcome::Refused(codes[0].to_string());
        }
        Outcome::Unknown
    }

    /// When a write is known to have taken effect (its ack or its first event).
    fn effect(&self, w: usize) -> Option<Instant> {
        let acked = match self.outcome(self.writes[w].req) {
            Outcome::Acked(at) => Some(at),
            _ => None,
        };
        match (acked, self.writes[w].event_at) {
            (Some(a), Some(e)) => Some(a.min(e)),
            (a, e) => a.or(e),
        }
    }

    fn show_value(&self, w: usize) -> String {
        let wr = &self.writes[w];
        if wr.field == Field::Token {
            if wr.value.is_null() {
                "logout".to_string()
            } else {
                format!("login userId {}", wr.value["userId"])
            }
        } else {
            wr.value.to_string()
        }
    }

    /// A write, described: value, publisher and seq, when sent, its outcome.
    fn describe(&self, w: usize) -> String {
        let wr = &self.writes[w];
        let outcome = match self.outcome(wr.req) {
            Outcome::Acked(at) => format!("acked at {:.3} s", self.secs(at)),
            Outcome::Refused(code) => format!("refused {code}"),
            Outcome::Unknown => match self.reqs[wr.req].replies.first() {
                Some((_, Err(code))) => format!("answered {code}"),
                _ => "no reply".to_string(),
            },
        };
        let event = wr
            .event_at
            .map(|t| format!(", in an event at {:.3} s", self.secs(t)))
            .unwrap_or_default();
        format!(
            "{} ({} #{}, sent at {:.3} s, {outcome}{event})",
            self.show_value(w),
            wr.role.name(),
            wr.seq,
            self.secs(wr.sent)
        )
    }

    /// Why a candidate for a field's final value is not allowed, or `None` when it is.
    /// `cand` is a write, or `None` for the initial state.
    fn judge(&self, ws: &[usize], cand: Option<usize>) -> Option<Verdict> {
        let Some(w) = cand else {
            // The initial state: only while nothing took effect.
            let last = *ws.iter().rev().find(|&&a| self.effect(a).is_some())?;
            return Some(Verdict {
                kind: "lost",
                invariant: 2,
                expected: format!("{} or a later write", self.describe(last)),
                against: Some(last),
            });
        };
        let wr = &self.writes[w];
        // (A token also reaches connres in requests carrying it: a refused token event
        // says nothing about its token.)
        let refused = match self.outcome(wr.req) {
            Outcome::Refused(code) if wr.field != Field::Token => Some(code),
            _ => None,
        };
        if let Some(code) = refused {
            return Some(Verdict {
                kind: "refused",
                invariant: 2,
                expected: format!("not this write: it was answered {code}"),
                against: None,
            });
        }
        let later_same = ws.iter().rev().find(|&&a| {
            let ar = &self.writes[a];
            ar.role == wr.role && ar.seq > wr.seq && self.effect(a).is_some()
        });
        if let Some(&a) = later_same {
            return Some(Verdict {
                kind: "order",
                invariant: 1,
                expected: format!(
                    "{} or a later write of {}",
                    self.describe(a),
                    self.writes[a].role.name()
                ),
                against: Some(a),
            });
        }
        let effect = self.effect(w)?;
        let later_other = ws.iter().rev().find(|&&a| {
            let ar = &self.writes[a];
            ar.role != wr.role && ar.sent > effect && self.effect(a).is_some()
        });
        later_other.map(|&a| Verdict {
            kind: "lost",
            invariant: 2,
            expected: format!(
                "{} (sent after this one took effect) or a later write",
                self.describe(a)
            ),
            against: Some(a),
        })
    }

    fn check(&mut self) -> Vec<Violation> {
        let mut out = Vec::new();
        self.check_event_order(&mut out);
        self.check_finals(&mut out);
        self.check_calls(&mut out);
        self.check_caches(&mut out);
        self.check_list(&mut out);
        self.check_replies(&mut out);
        out
    }

    /// Invariants 3 and 5 on the presence list.
    fn check_list(&self, out: &mut Vec<Violation>) {
        let show = |list: &[Value]| Value::Array(list.to_vec()).to_string();
        for (id, member) in &self.list_twice {
            let r = &self.reqs[*id];
            out.push(Violation {
                kind: "list-twice",
                invariant: 5,
                rid: ROOM.into(),
                field: format!("{} {} #{}", r.role.name(), r.kind.name(), r.seq),
                expected: "each member listed once".into(),
                seen: format!(
                    "{member} twice in the reply at {:.3} s",
                    r.replies.first().map_or(0.0, |(at, _)| self.secs(*at))
                ),
            });
        }
        let Some(fin) = &self.final_list else {
            out.push(Violation {
                kind: "unavailable",
                invariant: 3,
                rid: ROOM.into(),
                field: "-".into(),
                expected: "a collection".into(),
                seen: match self
                    .final_list_req
                    .and_then(|id| self.reqs[id].replies.first())
                {
                    Some((_, Err(code))) => code.clone(),
                    _ => "no reply to the final get".into(),
                },
            });
            return;
        };
        for member in fin {
            let name = member.as_str().unwrap_or_default();
            if self.allowed.contains(name) {
                continue;
            }
            let last = match self.last_join_as.get(name) {
                Some((cid, at)) => format!(
                    "; its last join was c{cid}'s at {:.3} s, which the driver then held {}",
                    self.secs(*at),
                    match &self.joined[*cid] {
                        Some(may) => format!("joined as {may:?}"),
                        None => "not joined".into(),
                    }
                ),
                None => "; nobody joined as it".into(),
            };
            out.push(Violation {
                kind: "list-ghost",
                invariant: 5,
                rid: ROOM.into(),
                field: name.into(),
                expected: format!(
                    "only members of connections held joined (pinging): {:?}",
                    self.allowed
                ),
                seen: format!("{member} listed in the final get{last}"),
            });
        }
        for (cid, may) in &self.pinged {
            if !fin
                .iter()
                .any(|m| m.as_str().is_some_and(|m| may.contains(m)))
            {
                out.push(Violation {
                    kind: "list-missing",
                    invariant: 5,
                    rid: ROOM.into(),
                    field: format!("c{cid}"),
                    expected: format!(
                        "listed as one of {may:?}: its last ping before the final get was acknowledged"
                    ),
                    seen: show(fin),
                });
            }
        }
        for (c, l) in self.lists.iter().enumerate() {
            let recalled = |at: &Instant| l.resets.iter().any(|r| r >= at);
            if let Some(at) = l.misfits.iter().find(|at| !recalled(at)) {
                out.push(Violation {
                    kind: "list-event",
                    invariant: 3,
                    rid: ROOM.into(),
                    field: format!("{} cache", CACHES[c].name()),
                    expected: "every add and remove fits the copy (or a system.reset follows)"
                        .into(),
                    seen: format!("one that did not at {:.3} s", self.secs(*at)),
                });
            }
            if l.copy.as_ref() != Some(fin) {
                out.push(Violation {
                    kind: "list-cache",
                    invariant: 3,
                    rid: ROOM.into(),
                    field: format!("{} cache", CACHES[c].name()),
                    expected: show(fin),
                    seen: l.copy.as_ref().map_or(
                        "no copy (an event did not fit, or its get failed)".into(),
                        |c| show(c),
                    ),
                });
            }
        }
    }

    /// Invariant 1 along `gw`'s change events; credits logouts seen in events.
    fn check_event_order(&mut self, out: &mut Vec<Violation>) {
        let observed = std::mem::take(&mut self.observed);
        for ((m, f), list) in &observed {
            let ws = self
                .field_writes
                .get(&(*m, *f))
                .cloned()
                .unwrap_or_default();
            let mut last: HashMap<Role, usize> = HashMap::new();
            let resets = self.resets_at.get(*m).cloned().unwrap_or_default();
            for (i, (at, shown)) in list.iter().enumerate() {
                // A `system.reset` naming the model came after this event and before
                // the model's next one: the gateway re-fetched it (an owner that stopped
                // serving recalls what it changed last, whose events may come late).
                let next = list.get(i + 1).map(|(t, _)| *t);
                let recalled = resets
                    .iter()
                    .any(|r| r >= at && next.is_none_or(|n| *r <= n));
                let rid = rid_of(*m);
                let when = format!("in a change event at {:.3} s", self.secs(*at));
                match shown {
                    Shown::Write(w) => {
                        let w = *w;
                        let wr = &self.writes[w];
                        let refused = match self.outcome(wr.req) {
                            Outcome::Refused(code) if wr.field != Field::Token => Some(code),
                            _ => None,
                        };
                        if let Some(code) = refused {
                            out.push(Violation {
                                kind: "refused",
                                invariant: 2,
                                rid: rid.clone(),
                                field: f.name().into(),
                                expected: format!("not this write: it was answered {code}"),
                                seen: format!("{} {when}", self.describe(w)),
                            });
                        }
                        match last.get(&wr.role) {
                            Some(&l) if self.writes[l].seq > wr.seq && recalled => {
                                self.recalled += 1;
                            }
                            Some(&l) if self.writes[l].seq > wr.seq => out.push(Violation {
                                kind: "event-order",
                                invariant: 1,
                                rid,
                                field: f.name().into(),
                                expected: format!(
                                    "a write of {} after {}",
                                    wr.role.name(),
                                    self.describe(l)
                                ),
                                seen: format!("{} {when}", self.describe(w)),
                            }),
                            _ => {
                                last.insert(wr.role, w);
                            }
                        }
                    }
                    Shown::LoggedOut => {
                        // The earliest logout sent after the last state seen from the
                        // cid's token publisher.
                        let role = if is_mixed(m / 2) {
                            Role::Mixed
                        } else {
                            Role::Auth
                        };
                        let after = last.get(&role).map_or(0, |&l| self.writes[l].seq);
                        let logout = ws.iter().copied().find(|&w| {
                            let wr = &self.writes[w];
                            wr.value.is_null() && wr.seq > after && wr.sent < *at
                        });
                        match logout {
                            Some(w) => {
                                let e = &mut self.writes[w].event_at;
                                *e = Some(e.map_or(*at, |e| e.min(*at)));
                                last.insert(role, w);
                            }
                            None if recalled => self.recalled += 1,
                            None => out.push(Violation {
                                kind: "event-order",
                                invariant: 1,
                                rid,
                                field: f.name().into(),
                                expected: format!(
                                    "no logout: none was sent between {} and this event",
                                    last.get(&role)
                                        .map_or("the start".to_string(), |&l| self.describe(l))
                                ),
                                seen: format!("logout {when}"),
                            }),
                        }
                    }
                    Shown::Default => out.push(Violation {
                        kind: "unknown-value",
                        invariant: 2,
                        rid,
                        field: f.name().into(),
                        expected: "a written value (nothing resets it)".into(),
                        seen: format!("back to the default {when}"),
                    }),
                    Shown::Unknown(v) => out.push(Violation {
                        kind: "unknown-value",
                        invariant: 2,
                        rid,
                        field: f.name().into(),
                        expected: "a value some write carried".into(),
                        seen: format!("{v} {when}"),
                    }),
                }
            }
        }
        self.observed = observed;
        for (at, m, k, v) in &self.odd {
            out.push(Violation {
                kind: "unknown-value",
                invariant: 2,
                rid: rid_of(*m),
                field: k.clone(),
                expected: format!("{} (never written)", prefs_default(k)),
                seen: format!("{v} in a change event at {:.3} s", self.secs(*at)),
            });
        }
    }

    /// Invariants 1 and 2 on the final state.
    fn check_finals(&mut self, out: &mut Vec<Violation>) {
        let mut unacked_logouts = 0;
        for m in 0..self.models() {
            let rid = rid_of(m);
            let Some(model) = self.finals[m].clone() else {
                out.push(Violation {
                    kind: "unavailable",
                    invariant: 3,
                    rid,
                    field: "-".into(),
                    expected: "a model".into(),
                    seen: match self.final_reqs[m].and_then(|id| self.reqs[id].replies.first()) {
                        Some((_, Err(code))) => code.clone(),
                        _ => "no reply to the final get".into(),
                    },
                });
                continue;
            };
            if is_user(m) {
                let ws = self
                    .field_writes
                    .get(&(m, Field::Token))
                    .cloned()
                    .unwrap_or_default();
                let value = Value::Object(model.clone());
                let (cands, seen): (Vec<Option<usize>>, String) = if value
                    == user_model(&Value::Null)
                {
                    let mut c = vec![None];
                    c.extend(
                        ws.iter()
                            .copied()
                            .filter(|&w| self.writes[w].value.is_null())
                            .map(Some),
                    );
                    (c, "all null (logged out)".into())
                } else {
                    match self.by_value.get(&(
                        m,
                        Field::Token,
                        model.get("id").cloned().unwrap_or(Value::Null).to_string(),
                    )) {
                        Some(&w) if user_model(&self.writes[w].value) == value => {
                            (vec![Some(w)], self.describe(w))
                        }
                        _ => {
                            out.push(Violation {
                                kind: "unknown-value",
                                invariant: 2,
                                rid,
                                field: "token".into(),
                                expected: "the model of a token some login carried, or all null"
                                    .into(),
                                seen: value.to_string(),
                            });
                            continue;
                        }
                    }
                };
                let logged_out = value == user_model(&Value::Null);
                let mut verdicts: Vec<(Option<usize>, Verdict)> = Vec::new();
                for &c in &cands {
                    match self.judge(&ws, c) {
                        Some(v) => verdicts.push((c, v)),
                        None => {
                            verdicts.clear();
                            break;
                        }
                    }
                }
                // The latest candidate's verdict speaks for the rest.
                let Some((cand, verdict)) = verdicts.pop() else {
                    let last = ws.last().copied();
                    if last.is_some_and(|l| self.writes[l].value.is_null()) && !logged_out {
                        unacked_logouts += 1;
                    }
                    continue;
                };
                let against_logout = verdict
                    .against
                    .is_some_and(|a| self.writes[a].value.is_null());
                let kind = if verdict.kind == "order" {
                    "token-order"
                } else {
                    verdict.kind
                };
                let what = match (verdict.kind, logged_out, against_logout) {
                    ("order", false, true) => "a logout undone by an earlier login: ",
                    ("order", true, false) => "a login undone by an earlier logout: ",
                    ("order", false, false) => "a login undone by an earlier login: ",
                    _ => "",
                };
                let seen = match cand {
                    Some(w) if logged_out => format!("{seen}, at best from {}", self.describe(w)),
                    _ => seen,
                };
                out.push(Violation {
                    kind,
                    invariant: verdict.invariant,
                    rid,
                    field: "token".into(),
                    expected: format!("{what}{}", verdict.expected),
                    seen,
                });
            } else {
                for (k, v) in &model {
                    let field = PREFS_FIELDS.into_iter().find(|f| f.name() == k);
                    let Some(f) = field else {
                        if *v != prefs_default(k) {
                            out.push(Violation {
                                kind: "unknown-value",
                                invariant: 2,
                                rid: rid.clone(),
                                field: k.clone(),
                                expected: format!("{} (never written)", prefs_default(k)),
                                seen: v.to_string(),
                            });
                        }
                        continue;
                    };
                    let ws = self.field_writes.get(&(m, f)).cloned().unwrap_or_default();
                    let cand = if v.is_null() {
                        None
                    } else {
                        match self.by_value.get(&(m, f, v.to_string())) {
                            Some(&w) => Some(w),
                            None => {
                                out.push(Violation {
                                    kind: "unknown-value",
                                    invariant: 2,
                                    rid: rid.clone(),
                                    field: k.clone(),
                                    expected: "a value some write carried".into(),
                                    seen: v.to_string(),
                                });
                                continue;
                            }
                        }
                    };
                    if let Some(verdict) = self.judge(&ws, cand) {
                        out.push(Violation {
                            kind: verdict.kind,
                            invariant: verdict.invariant,
                            rid: rid.clone(),
                            field: k.clone(),
                            expected: verdict.expected,
                            seen: cand
                                .map_or("null (the default)".to_string(), |w| self.describe(w)),
                        });
                    }
                }
            }
        }
        self.unacked_logouts = unacked_logouts;
    }

    /// Invariant 1 across kinds on `mixed`: sets and the token events before them.
    fn check_calls(&self, out: &mut Vec<Violation>) {
        for (id, r) in self.reqs.iter().enumerate() {
            if r.role != Role::Mixed || r.kind != Kind::Call {
                continue;
            }
            let user = r.cid * 2;
            let ws = self.field_writes.get(&(user, Field::Token));
            let prev = ws.and_then(|ws| {
                let n = ws.partition_point(|&w| self.writes[w].seq < r.seq);
                n.checked_sub(1).map(|i| ws[i])
            });
            let outcome = self.outcome(id);
            let seen = match &outcome {
                Outcome::Acked(at) => format!("acked at {:.3} s", self.secs(*at)),
                Outcome::Refused(code) => code.clone(),
                Outcome::Unknown => continue,
            };
            let logged_in = prev.map(|w| !self.writes[w].value.is_null());
            // Acknowledged, not merely seen: a token can also reach connres in a later
            // request carrying it, which says nothing about the order before this set.
            let prev_effect =
                prev.map(|w| matches!(self.outcome(self.writes[w].req), Outcome::Acked(_)));
            let after = prev.map_or("no token event (logged out)".to_string(), |w| {
                self.describe(w)
            });
            let passed_access = match &outcome {
                Outcome::Acked(_) => true,
                Outcome::Refused(code) => code != "system.accessDenied",
                Outcome::Unknown => false,
            };
            let denied = matches!(&outcome, Outcome::Refused(c) if c == "system.accessDenied");
            let bad = match (logged_in, prev_effect) {
                (Some(true), Some(true)) => denied,
                (Some(false), Some(true)) | (None, _) => passed_access,
                _ => false,
            };
            if bad {
                out.push(Violation {
                    kind: "call-order",
                    invariant: 1,
                    rid: rid_of(user + 1),
                    field: "set".into(),
                    expected: format!(
                        "{} after {after}",
                        if logged_in == Some(true) {
                            "allowed"
                        } else {
                            "system.accessDenied"
                        }
                    ),
                    seen: format!("set #{} sent at {:.3} s: {seen}", r.seq, self.secs(r.sent)),
                });
            }
        }
    }

    /// Invariant 3: every cache equals the final state.
    fn check_caches(&self, out: &mut Vec<Violation>) {
        for (c, cache) in self.caches.iter().enumerate() {
            for m in 0..self.models() {
                let Some(fin) = &self.finals[m] else { continue };
                let rid = rid_of(m);
                let Some(model) = &cache.entries[m].model else {
                    out.push(Violation {
                        kind: "cache",
                        invariant: 3,
                        rid,
                        field: format!("{} cache", CACHES[c].name()),
                        expected: Value::Object(fin.clone()).to_string(),
                        seen: "not loaded (its last get failed)".into(),
                    });
                    continue;
                };
                let mut keys: Vec<&String> = fin.keys().chain(model.keys()).collect();
                keys.sort();
                keys.dedup();
                let diff: Vec<&String> = keys
                    .into_iter()
                    .filter(|k| fin.get(*k) != model.get(*k))
                    .collect();
                if let Some(k) = diff.first() {
                    let show = |v: Option<&Value>| v.map_or("absent".into(), Value::to_string);
                    out.push(Violation {
                        kind: "cache",
                        invariant: 3,
                        rid,
                        field: format!(
                            "{} ({} cache{})",
                            k,
                            CACHES[c].name(),
                            if diff.len() > 1 {
                                format!(", {} fields differ", diff.len())
                            } else {
                                String::new()
                            }
                        ),
                        expected: show(fin.get(*k)),
                        seen: show(model.get(*k)),
                    });
                }
            }
        }
    }

    /// Invariant 4: one reply per request at most, none to a request never sent.
    fn check_replies(&self, out: &mut Vec<Violation>) {
        for r in &self.reqs {
            if r.replies.len() > 1 {
                out.push(Violation {
                    kind: "double-reply",
                    invariant: 4,
                    rid: r.subject.clone(),
                    field: format!(
                        "{} #{} sent at {:.3} s",
                        r.role.name(),
                        r.seq,
                        self.secs(r.sent)
                    ),
                    expected: "one reply".into(),
                    seen: r
                        .replies
                        .iter()
                        .map(|(at, x)| {
                            format!(
                                "{} at {:.3} s",
                                match x {
                                    Ok(v) => v.to_string(),
                                    Err(c) => c.clone(),
                                },
                                self.secs(*at)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                });
            }
        }
        for (role, subject) in &self.stray {
            out.push(Violation {
                kind: "stray-reply",
                invariant: 4,
                rid: subject.clone(),
                field: role.name().into(),
                expected: "a reply to a request sent".into(),
                seen: "a reply to no request".into(),
            });
        }
    }

    fn report(&self, violations: &[Violation]) {
        let end = Instant::now();
        let mut o = String::new();
        let _ = writeln!(o, "\n== chaos run, seed {}", self.args.seed);
        let _ = writeln!(
            o,
            "duration: traffic {:.1} s, whole run {:.1} s; {} cids ({} mixed), {} msg/s",
            self.args.duration.as_secs_f64(),
            self.secs(end),
            self.args.cids,
            (0..self.args.cids).filter(|&c| is_mixed(c)).count(),
            self.args.rate
        );
        let mut by_kind: BTreeMap<Kind, u64> = BTreeMap::new();
        let mut by_role: BTreeMap<Role, u64> = BTreeMap::new();
        let (mut logins, mut logouts) = (0, 0);
        for r in &self.reqs {
            *by_kind.entry(r.kind).or_default() += 1;
            if r.kind.is_traffic() {
                *by_role.entry(r.role).or_default() += 1;
            }
        }
        for w in &self.writes {
            if w.field == Field::Token {
                if w.value.is_null() {
                    logouts += 1;
                } else {
                    logins += 1;
                }
            }
        }
        let kinds: Vec<String> = ALL_KINDS
            .iter()
            .filter_map(|k| {
                by_kind.get(k).map(|n| {
                    if *k == Kind::Token {
                        format!("{} {n} ({logins} logins, {logouts} logouts)", k.name())
                    } else {
                        format!("{} {n}", k.name())
                    }
                })
            })
            .collect();
        let _ = writeln!(o, "sent: {}", kinds.join(", "));
        let roles: Vec<String> = by_role
            .iter()
            .map(|(r, n)| format!("{} {n}", r.name()))
            .collect();
        let _ = writeln!(o, "  traffic by publisher: {}", roles.join(", "));
        let mut ok = 0;
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        let (mut none, mut late, mut none_traffic) = (0, 0, 0);
        for r in &self.reqs {
            match r.replies.first() {
                None => {
                    none += 1;
                    if r.kind.is_traffic() {
                        none_traffic += 1;
                    }
                }
                Some((at, x)) => {
                    if at.duration_since(r.sent) > REQUEST_TIMEOUT {
                        late += 1;
                    }
                    match x {
                        Ok(_) => ok += 1,
                        Err(c) => *errors.entry(c.clone()).or_default() += 1,
                    }
                }
            }
        }
        let errs: Vec<String> = errors.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let _ = writeln!(
            o,
            "replies: {ok} ok, {} errors ({}); no reply (timed out) {none} ({none_traffic} of them traffic); late (> {} s) {late}",
            errors.values().sum::<u64>(),
            if errs.is_empty() { "-".into() } else { errs.join(", ") },
            REQUEST_TIMEOUT.as_secs()
        );
        let evs: Vec<String> = self
            .events
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(o, "received on gw: {}", evs.join(", "));
        let mut calls: BTreeMap<&str, [u64; 3]> = BTreeMap::new();
        for (id, r) in self.reqs.iter().enumerate() {
            if r.kind != Kind::Presence {
                continue;
            }
            let method = r.subject.rsplit('.').next().unwrap_or("");
            let n = calls.entry(method).or_default();
            match self.outcome(id) {
                Outcome::Acked(_) => n[0] += 1,
                Outcome::Refused(_) => n[1] += 1,
                Outcome::Unknown => n[2] += 1,
            }
        }
        let calls: Vec<String> = calls
            .iter()
            .map(|(m, [ok, no, unknown])| {
                format!(
                    "{m} {} ({ok} ok, {no} refused, {unknown} unknown)",
                    ok + no + unknown
                )
            })
            .collect();
        let misfits: usize = self.lists.iter().map(|l| l.misfits.len()).sum();
        let _ = writeln!(
            o,
            "presence: {}; {} list resets on gw; {} events that did not fit a copy (each followed by a reset, else a violation); {} removes after the traffic; final list {} ({} members may be listed: {} connections held joined, {} of them with their last ping acknowledged)",
            calls.join(", "),
            self.lists[0].resets.len(),
            misfits,
            self.end_removes,
            self.final_list
                .as_ref()
                .map_or("-".into(), |l| Value::Array(l.clone()).to_string()),
            self.allowed.len(),
            self.joined.iter().flatten().count(),
            self.pinged.len()
        );
        let _ = writeln!(
            o,
            "not violations: {} cids whose last token event, an unacknowledged logout, did not take effect",
            self.unacked_logouts
        );
        let _ = writeln!(
            o,
            "not violations: {} change events out of order that a system.reset naming the model followed (the gateway re-fetched it)",
            self.recalled
        );
        let mut fault_counts: BTreeMap<&str, u64> = BTreeMap::new();
        for (_, line) in &self.faults {
            let kind = match line.split_whitespace().next().unwrap_or("") {
                "kill" => "kill",
                "stop" => "pause",
                "term" => "term",
                "nats-stop" => "nats restart",
                _ => continue,
            };
            *fault_counts.entry(kind).or_default() += 1;
        }
        let mut applied: BTreeMap<String, u64> = BTreeMap::new();
        for w in &self.writes {
            if w.field == Field::Token || w.event_at.is_none() {
                continue;
            }
            if let Some((_, Err(code))) = self.reqs[w.req].replies.first() {
                *applied.entry(code.clone()).or_default() += 1;
            }
        }
        let applied: Vec<String> = applied.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let _ = writeln!(
            o,
            "  writes answered with an error that took effect anyway (seen in an event): {}",
            if applied.is_empty() {
                "none".into()
            } else {
                applied.join(", ")
            }
        );
        let fc: Vec<String> = fault_counts
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(
            o,
            "faults: {}",
            if fc.is_empty() {
                "none".into()
            } else {
                fc.join(", ")
            }
        );
        for (at, line) in &self.faults {
            let _ = writeln!(o, "  {:7.3} s  {line}", self.secs(*at));
        }
        let mut counts: BTreeMap<(u8, &str), Vec<&Violation>> = BTreeMap::new();
        for v in violations {
            counts.entry((v.invariant, v.kind)).or_default().push(v);
        }
        let _ = writeln!(o, "violations: {}", violations.len());
        for ((inv, kind), list) in &counts {
            let mut places: Vec<(&str, &str)> = list
                .iter()
                .map(|v| (v.rid.as_str(), v.field.as_str()))
                .collect();
            places.sort_unstable();
            places.dedup();
            let _ = writeln!(
                o,
                "  invariant {inv} {kind}: {} (on {} distinct name/field pairs)",
                list.len(),
                places.len()
            );
            for v in list.iter().take(self.args.show) {
                let _ = writeln!(
                    o,
                    "    {} {}: expected {}; seen {}",
                    v.rid, v.field, v.expected, v.seen
                );
            }
        }
        print!("{o}");
    }
}
