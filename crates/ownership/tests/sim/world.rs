//! The simulated world: time, the bucket, the network, the instances, the publishers,
//! the faults, and the checks.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use ownership::{
    Action, Dropped, Incoming, Input, Kind, LeaseError, LeaseValue, NodeInfo, Ownership, Placement,
    Settings, PROTOCOL,
};

use super::model::{Body, Gateway, Msg, Unit, View};

/// One simulation run's settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub instances: usize,
    pub partitions: u32,
    pub lease_ms: u64,
    pub cids: usize,
    /// Milliseconds of traffic and faults; then as long again to settle.
    pub busy_ms: u64,
    /// Mean milliseconds between two messages of one publisher.
    pub gap_ms: u64,
    pub faults: bool,
    /// Whether nats-server maps calls to their partitions (`connres mapping`): then a
    /// call reaches only the instances subscribed to its partition's writes
    /// (`Ownership::follows_writes`, and a lease after), not every instance.
    pub mapped: bool,
}

impl SimConfig {
    pub fn new(seed: u64) -> SimConfig {
        let mut r = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
        SimConfig {
            seed,
            instances: 1 + r.below(4) as usize,
            partitions: [1, 2, 4, 8][r.below(4) as usize],
            lease_ms: 1000,
            cids: 4 + r.below(12) as usize,
            busy_ms: 4000 + r.below(4000),
            gap_ms: 10 + r.below(50),
            faults: true,
            // Drawn last, so that the settings above are what they were for each seed.
            mapped: r.below(2) == 0,
        }
    }
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Outcome {
    pub steps: u64,
    pub sent: u64,
    pub applied: u64,
    pub acknowledged: u64,
    pub faults: u64,
    pub unconfirmed_at_end: u64,
    /// Deliveries of calls to instances the mapping spared (not subscribed).
    pub spared: u64,
    pub violations: Vec<String>,
}

/// A small, fast generator (xorshift64*): the one source of chance.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
}

#[derive(Debug, Clone)]
enum Val {
    Node(Option<NodeInfo>),
    Lease(LeaseValue),
    Unit(Unit),
}

#[derive(Debug, Clone)]
enum KvOp {
    Put(String, Val),
    Write {
        key: String,
        val: Val,
        expect: Option<u64>,
    },
    Get(String),
    Load(u32),
}

#[derive(Debug, Clone)]
enum KvResult {
    Written(Result<u64, LeaseError>),
    Read(Result<Option<(u64, Val)>, String>),
    Loaded(Result<Vec<(usize, Unit, u64)>, String>),
}

/// What a KV request was for, so its result finds its way.
#[derive(Debug, Clone)]
enum Purpose {
    Heartbeat,
    Lease {
        p: u32,
        op: u64,
    },
    ReadLease {
        p: u32,
    },
    Load {
        p: u32,
        op: u64,
    },
    Unit {
        p: u32,
        gen: u64,
        cid: usize,
        written: Unit,
    },
    UnitReread {
        p: u32,
        gen: u64,
        cid: usize,
        written: Unit,
    },
}

#[derive(Debug, Clone)]
enum Delivery {
    Msg {
        msg: Msg,
        hops: u32,
    },
    Watch {
        key: String,
        rev: u64,
        val: Val,
        server_ms: u64,
    },
    Joined,
    Kv {
        purpose: Purpose,
        result: KvResult,
    },
    Barrier {
        p: u32,
        op: u64,
        units: Result<Vec<(usize, Unit, u64)>, String>,
    },
    Connected,
    Disconnected,
    Probe(Duration),
}

#[derive(Debug, Clone)]
enum ToGateway {
    Reply {
        msg: Msg,
        view: Option<View>,
    },
    Event {
        cid: usize,
        view: View,
    },
    Reset {
        cids: Vec<usize>,
    },
    /// Re-fetch the models (not their access).
    Refetch {
        cids: Vec<usize>,
    },
    Token {
        cid: usize,
        token: Option<u32>,
    },
}

#[derive(Debug, Clone)]
enum Ev {
    Deliver {
        node: usize,
        d: Delivery,
        /// When it left the server.
        sent: u64,
    },
    Tick {
        node: usize,
    },
    KvArrive {
        node: usize,
        op: KvOp,
        purpose: Purpose,
    },
    KvApply {
        node: usize,
        op: KvOp,
        purpose: Purpose,
    },
    ServerToGateway(ToGateway),
    Gateway(ToGateway),
    Publish {
        from: usize,
    },
    Server {
        msg: Msg,
    },
    Fault,
    Resume {
        node: usize,
    },
    Pump {
        node: usize,
        p: u32,
    },
    GetTimeout {
        cid: usize,
        id: u64,
    },
    Start,
    Reconnect,
    /// A node's subscription to a partition's mapped writes reached the server.
    Subscribed {
        node: usize,
        p: u32,
        gen: u64,
    },
}

/// A handled message's outcome, waiting for its unit's write.
struct Pending {
    cid: usize,
    event: Option<View>,
    reply: Option<(Msg, Option<View>)>,
    write: Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    None,
    Waiting,
    InFlight,
    Done,
}

/// A partition's units as a load read them: cid, unit, revision.
type LoadedUnits = Vec<(usize, Unit, u64)>;

struct Node {
    id: ownership::Instance,
    alive: bool,
    leaving: bool,
    paused_until: Option<u64>,
    inbox: VecDeque<Delivery>,
    m: Ownership<Msg>,
    units: HashMap<usize, Unit>,
    revisions: HashMap<usize, u64>,
    /// By partition: the latest load's id and units (an earlier load's result that
    /// comes back later is not kept, as connres does not keep it).
    loaded: HashMap<u32, (u64, LoadedUnits)>,
    pipelines: HashMap<u32, VecDeque<Pending>>,
    /// Units with a write in flight.
    writing: HashSet<usize>,
    /// Bumped when a partition is forgotten: results of its earlier writes are stale.
    gens: HashMap<u32, u64>,
    drains: HashSet<u32>,
    connected: bool,
    /// Messages the server sent before then never reach it (see `node_receives`).
    cut: u64,
    /// Its connection as far as what reached it says (see `node_receives`).
    link_up: bool,
    /// Its subscriptions to partitions' mapped writes (`SimConfig::mapped`).
    writes: HashMap<u32, WriteSub>,
}

/// A subscription to a partition's mapped writes.
struct WriteSub {
    /// Which subscription (a partition may be subscribed again).
    gen: u64,
    /// Whether the server has it.
    active: bool,
    /// Since when the instance no longer wants it (kept a lease longer).
    let_go: Option<u64>,
}

struct World {
    cfg: SimConfig,
    now: u64,
    seq: u64,
    rng: Rng,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: Vec<Option<Ev>>,
    // The bucket.
    rev: u64,
    kv: HashMap<String, (u64, Val, u64)>,
    kv_clock_offset: i64,
    kv_fail_until: u64,
    nats_down_until: u64,
    nats_down_from: u64,
    // The network: per channel, the last arrival time (messages stay in order).
    fifo: HashMap<(u64, u64), u64>,
    nodes: Vec<Node>,
    gateway: Gateway,
    // Publishers: their next sequence number.
    pub_seq: Vec<u64>,
    next_msg: u64,
    sent: Vec<Msg>,
    // Checks.
    last_applier: HashMap<u32, (usize, u64)>,
    out: Outcome,
    trace: bool,
    /// Messages the server dropped (sent while NATS was down).
    lost: HashSet<u64>,
    busy_until: u64,
}

const AUTH: usize = 0;
const GATEWAY: usize = 1;
const MIXED: usize = 3;

fn part_of(cid: usize, partitions: u32) -> u32 {
    ownership::hash::partition_of_cid(&format!("c{cid}"), partitions)
}

fn conn_hash(cid: usize) -> u64 {
    ownership::hash::stable_hash(&format!("c{cid}"))
}

/// Runs one simulation.
pub fn run(cfg: SimConfig) -> Outcome {
    let mut w = World {
        rng: Rng(cfg.seed),
        busy_until: cfg.busy_ms,
        cfg,
        now: 0,
        seq: 0,
        queue: BinaryHeap::new(),
        events: Vec::new(),
        rev: 0,
        kv: HashMap::new(),
        kv_clock_offset: 0,
        kv_fail_until: 0,
        nats_down_until: 0,
        nats_down_from: 0,
        fifo: HashMap::new(),
        nodes: Vec::new(),
        gateway: Gateway::default(),
        pub_seq: vec![0; 4],
        next_msg: 0,
        sent: Vec::new(),
        last_applier: HashMap::new(),
        out: Outcome::default(),
        trace: std::env::var("SIM_TRACE").is_ok(),
        lost: HashSet::new(),
    };
    w.schedule(0, Ev::Start);
    let end = w.cfg.busy_ms + w.cfg.lease_ms * 10;
    while let Some(Reverse((t, _, i))) = w.queue.pop() {
        if t > end {
            break;
        }
        w.now = t;
        let ev = w.events[i].take().expect("each event once");
        w.step(ev);
        w.out.steps += 1;
        w.check_serving();
    }
    w.final_checks();
    w.out
}

impl World {
    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.events.push(Some(ev));
        self.queue
            .push(Reverse((at, self.seq, self.events.len() - 1)));
    }

    /// The arrival time on a channel: after `delay`, never before the channel's last.
    fn arrive(&mut self, channel: (u64, u64), delay: u64) -> u64 {
        let last = self.fifo.get(&channel).copied().unwrap_or(0);
        let at = (self.now + delay).max(last);
        self.fifo.insert(channel, at);
        at
    }

    /// Settling at the end: no more slow paths or failures.
    fn calm(&self) -> bool {
        self.now > self.busy_until + 2 * self.cfg.lease_ms
    }

    fn delay(&mut self) -> u64 {
        if !self.calm() && self.rng.chance(20) {
            self.rng.between(20, 200)
        } else {
            self.rng.between(0, 4)
        }
    }

    fn deliver(&mut self, from: u64, node: usize, d: Delivery) {
        let delay = self.delay();
        let at = self.arrive((from, 1000 + node as u64), delay);
        self.schedule(
            at,
            Ev::Deliver {
                node,
                d,
                sent: self.now,
            },
        );
    }

    /// A publish from an instance: to the server on the instance's one connection
    /// (in order with its bucket requests), then from the server to the gateway (in
    /// the order the server took them).
    fn send_gateway(&mut self, node: usize, g: ToGateway) {
        let delay = self.delay();
        let at = self.arrive((1000 + node as u64, 2), delay);
        self.schedule(at, Ev::ServerToGateway(g));
    }

    fn server_ms(&self) -> u64 {
        (self.now as i64 + 1_000_000 + self.kv_clock_offset).max(0) as u64
    }

    fn start_node(&mut self) {
        let slot = self.nodes.len();
        let id: ownership::Instance = format!("n{slot}").into();
        let info = NodeInfo {
            beat: 0,
            proto: PROTOCOL,
            partitions: self.cfg.partitions,
            lease_ms: self.cfg.lease_ms,
            config: "c".into(),
            ready: false,
        };
        let settings = Settings {
            partitions: self.cfg.partitions,
            lease: Duration::from_millis(self.cfg.lease_ms),
            window_cap: 10_000,
            max_held: 1000,
        };
        self.nodes.push(Node {
            m: Ownership::new(id.clone(), info, settings, self.t()),
            id,
            alive: true,
            leaving: false,
            paused_until: None,
            inbox: VecDeque::new(),
            units: HashMap::new(),
            revisions: HashMap::new(),
            loaded: HashMap::new(),
            pipelines: HashMap::new(),
            writing: HashSet::new(),
            gens: HashMap::new(),
            drains: HashSet::new(),
            connected: self.now >= self.nats_down_until,
            cut: 0,
            link_up: self.now >= self.nats_down_until,
            writes: HashMap::new(),
        });
        // The first heartbeat, then the watch's current values, then "joined".
        let now = self.t();
        let actions = self.nodes[slot].m.tick(now);
        self.run_actions(slot, actions);
        let snapshot: Vec<(String, u64, Val, u64)> = {
            let mut v: Vec<_> = self
                .kv
                .iter()
                .filter(|(k, _)| k.starts_with("node.") || k.starts_with("lease."))
                .map(|(k, (r, v, ms))| (k.clone(), *r, v.clone(), *ms))
                .collect();
            v.sort_by_key(|e| e.1);
            v
        };
        for (key, rev, val, server_ms) in snapshot {
            self.deliver(
                2,
                slot,
                Delivery::Watch {
                    key,
                    rev,
                    val,
                    server_ms,
                },
            );
        }
        self.deliver(2, slot, Delivery::Joined);
        let at = self.now + self.cfg.lease_ms / 8;
        self.schedule(at, Ev::Tick { node: slot });
    }

    fn t(&self) -> Duration {
        Duration::from_millis(self.now)
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Start => {
                for _ in 0..self.cfg.instances {
                    self.start_node();
                }
                for cid in 0..self.cfg.cids {
                    self.gateway.tokens.insert(cid, None);
                    self.gateway_request(cid, false);
                }
                for from in 0..4 {
                    let at = self.rng.between(0, self.cfg.gap_ms * 2);
                    self.schedule(at, Ev::Publish { from });
                }
                if self.cfg.faults {
                    let at = self.rng.between(self.cfg.lease_ms, self.cfg.lease_ms * 3);
                    self.schedule(at, Ev::Fault);
                }
            }
            Ev::Publish { from } => self.publish(from),
            Ev::Server { msg } => self.server(msg),
            Ev::Deliver { node, d, sent } => self.node_receives(node, d, sent),
            Ev::Tick { node } => {
                if !self.nodes[node].alive {
                    return;
                }
                if self.nodes[node].paused_until.is_none() {
                    let now = self.t();
                    let actions = self.nodes[node].m.tick(now);
                    self.run_actions(node, actions);
                    for p in 0..self.cfg.partitions {
                        if self.nodes[node].alive {
                            self.pump(node, p);
                        }
                    }
                    self.follow_writes(node);
                }
                let at = self.now + self.cfg.lease_ms / 8;
                self.schedule(at, Ev::Tick { node });
            }
            Ev::KvArrive { node, op, purpose } => {
                // JetStream takes its time (sometimes long) after the server has it.
                let delay = if !self.calm() && self.rng.chance(30) {
                    self.rng.between(50, 600)
                } else {
                    self.rng.between(0, 3)
                };
                self.schedule(self.now + delay, Ev::KvApply { node, op, purpose });
            }
            Ev::KvApply { node, op, purpose } => self.kv_apply(node, op, purpose),
            Ev::ServerToGateway(g) => {
                let delay = self.delay();
                let at = self.arrive((2, 0), delay);
                self.schedule(at, Ev::Gateway(g));
            }
            Ev::Gateway(g) => self.gateway_receives(g),
            Ev::Fault => self.fault(),
            Ev::GetTimeout { cid, id } => {
                if self.gateway.timed_out(cid, id) {
                    self.gateway_request(cid, false);
                }
            }
            Ev::Pump { node, p } => {
                if self.nodes[node].alive && self.nodes[node].paused_until.is_none() {
                    self.pump(node, p);
                }
            }
            Ev::Resume { node } => {
                if !self.nodes[node].alive {
                    return;
                }
                self.nodes[node].paused_until = None;
                // Timers first (the serving loop looks at them before messages).
                let now = self.t();
                let actions = self.nodes[node].m.tick(now);
                self.run_actions(node, actions);
                while let Some(d) = self.nodes[node].inbox.pop_front() {
                    self.handle_delivery(node, d);
                    if !self.nodes[node].alive {
                        return;
                    }
                }
            }
            Ev::Subscribed { node, p, gen } => {
                if let Some(sub) = self.nodes[node].writes.get_mut(&p) {
                    if sub.gen == gen {
                        sub.active = true;
                    }
                }
            }
            Ev::Reconnect => {
                for n in 0..self.nodes.len() {
                    if self.nodes[n].alive {
                        self.deliver(3, n, Delivery::Connected);
                    }
                }
            }
        }
    }

    // ---- Publishers and the server ----

    fn publish(&mut self, from: usize) {
        if self.now >= self.busy_until {
            return;
        }
        let cids = self.cfg.cids;
        let half = cids / 2;
        // Token events for the first half come from the auth service, for the second
        // from the mixed publisher; writes come from everyone.
        let cid;
        let body = match from {
            AUTH => {
                cid = self.rng.below(half.max(1) as u64) as usize;
                Body::Token(self.random_token())
            }
            MIXED => {
                cid = half + self.rng.below((cids - half) as u64) as usize;
                if self.rng.chance(500) {
                    Body::Token(self.random_token())
                } else {
                    Body::Write
                }
            }
            GATEWAY => {
                cid = self.rng.below(cids as u64) as usize;
                match self.rng.below(10) {
                    0..=3 => Body::Write,
                    4..=6 => Body::Get,
                    _ => Body::Access(self.gateway.tokens[&cid]),
                }
            }
            _ => {
                cid = self.rng.below(cids as u64) as usize;
                Body::Write
            }
        };
        let duplicate = matches!(body, Body::Token(_)) && self.rng.chance(50);
        let reply = !matches!(body, Body::Token(_)) || self.rng.chance(200);
        let mut m = self.new_msg(from, cid, body, reply);
        self.send(m.clone());
        if duplicate {
            // The same token event again (a retry): equal payload.
            m = self.new_msg(from, cid, m.body.clone(), false);
            self.send(m);
        }
        let gap = self.rng.between(1, self.cfg.gap_ms * 2);
        self.schedule(self.now + gap, Ev::Publish { from });
    }

    fn random_token(&mut self) -> Option<u32> {
        if self.rng.chance(400) {
            None
        } else {
            Some(1 + self.rng.below(3) as u32)
        }
    }

    fn new_msg(&mut self, from: usize, cid: usize, body: Body, reply: bool) -> Msg {
        self.next_msg += 1;
        self.pub_seq[from] += 1;
        Msg {
            id: self.next_msg,
            from,
            seq: self.pub_seq[from],
            cid,
            body,
            reply,
        }
    }

    fn send(&mut self, m: Msg) {
        if m.is_change() {
            self.sent.push(m.clone());
            self.out.sent += 1;
        }
        let delay = self.delay();
        let at = self.arrive((100 + m.from as u64, 2), delay);
        self.schedule(at, Ev::Server { msg: m });
    }

    fn gateway_request(&mut self, cid: usize, access: bool) {
        let body = if access {
            Body::Access(self.gateway.tokens[&cid])
        } else {
            Body::Get
        };
        let m = self.new_msg(GATEWAY, cid, body, true);
        if !access {
            self.gateway.pending.entry(cid).or_default().insert(m.id);
            // Resgate's request timeout.
            self.schedule(self.now + 3000, Ev::GetTimeout { cid, id: m.id });
        }
        self.send(m);
    }

    /// The server routes a message: to every instance (changes), or to one of the queue
    /// group (reads); token events also to the gateway.
    fn server(&mut self, msg: Msg) {
        if self.trace {
            eprintln!("{:>6} server <- {msg:?}", self.now);
        }
        if self.now < self.nats_down_until {
            self.lost.insert(msg.id);
            return;
        }
        if let Body::Token(t) = msg.body {
            let delay = self.delay();
            let at = self.arrive((100 + msg.from as u64, 0), delay);
            self.schedule(
                at,
                Ev::Gateway(ToGateway::Token {
                    cid: msg.cid,
                    token: t,
                }),
            );
        }
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].alive && self.nodes[n].connected)
            .collect();
        if msg.is_change() {
            // A call reaches, when mapped, only the subscribers of its partition's writes.
            let p = part_of(msg.cid, self.cfg.partitions);
            let mapped = self.cfg.mapped && msg.from == GATEWAY;
            let live = live
                .into_iter()
                .filter(|&n| !mapped || self.nodes[n].writes.get(&p).is_some_and(|s| s.active));
            let live: Vec<usize> = live.collect();
            self.out.spared +=
                (self.nodes.iter().filter(|n| n.alive && n.connected).count() - live.len()) as u64;
            for n in live {
                self.deliver(
                    100 + msg.from as u64,
                    n,
                    Delivery::Msg {
                        msg: msg.clone(),
                        hops: 0,
                    },
                );
            }
        } else if !live.is_empty() {
            let n = live[self.rng.below(live.len() as u64) as usize];
            self.deliver(100 + msg.from as u64, n, Delivery::Msg { msg, hops: 0 });
        }
    }

    /// Subscribes the mapped writes of the partitions the instance follows now, and
    /// ends those it stopped following a lease ago (as connres's `follow_partitions`).
    fn follow_writes(&mut self, node: usize) {
        if !self.cfg.mapped || !self.nodes[node].alive {
            return;
        }
        let now = self.t();
        for p in 0..self.cfg.partitions {
            let wants = self.nodes[node].m.follows_writes(p, now);
            let sub = self.nodes[node].writes.get_mut(&p);
            match (wants, sub) {
                (true, Some(sub)) => sub.let_go = None,
                (true, None) => {
                    self.seq += 1;
                    let gen = self.seq;
                    self.nodes[node].writes.insert(
                        p,
                        WriteSub {
                            gen,
                            active: false,
                            let_go: None,
                        },
                    );
                    let delay = self.delay();
                    let at = self.arrive((1000 + node as u64, 2), delay);
                    self.schedule(at, Ev::Subscribed { node, p, gen });
                }
                (false, Some(sub)) => match sub.let_go {
                    None => sub.let_go = Some(self.now),
                    Some(t) if self.now - t >= self.cfg.lease_ms => {
                        self.nodes[node].writes.remove(&p);
                    }
                    Some(_) => {}
                },
                (false, None) => {}
            }
        }
    }

    // ---- The bucket ----

    fn kv_request(&mut self, node: usize, op: KvOp, purpose: Purpose) {
        let delay = self.delay();
        let at = self.arrive((1000 + node as u64, 2), delay);
        self.schedule(at, Ev::KvArrive { node, op, purpose });
    }

    fn kv_apply(&mut self, node: usize, op: KvOp, purpose: Purpose) {
        let failing = self.now < self.kv_fail_until || self.now < self.nats_down_until;
        let calm = self.calm();
        let fail = if failing {
            self.rng.chance(800)
        } else {
            !calm && self.rng.chance(5)
        };
        let lost_reply = !fail && !calm && self.rng.chance(if failing { 300 } else { 5 });
        let result = if fail {
            match &op {
                KvOp::Load(_) => KvResult::Loaded(Err("timed out".into())),
                KvOp::Get(_) => KvResult::Read(Err("timed out".into())),
                _ => KvResult::Written(Err(LeaseError::Other)),
            }
        } else {
            match op {
                KvOp::Put(key, val) => {
                    let rev = self.kv_write(key, val);
                    KvResult::Written(Ok(rev))
                }
                KvOp::Write { key, val, expect } => {
                    let current = self.kv.get(&key).map(|e| e.0);
                    if current != expect {
                        KvResult::Written(Err(LeaseError::Conflict))
                    } else {
                        KvResult::Written(Ok(self.kv_write(key, val)))
                    }
                }
                KvOp::Get(key) => {
                    KvResult::Read(Ok(self.kv.get(&key).map(|(r, v, _)| (*r, v.clone()))))
                }
                KvOp::Load(p) => {
                    let mut units: Vec<(usize, Unit, u64)> = self
                        .kv
                        .iter()
                        .filter_map(|(k, (r, v, _))| {
                            let cid: usize = k.strip_prefix("unit.")?.parse().ok()?;
                            match v {
                                Val::Unit(u) if part_of(cid, self.cfg.partitions) == p => {
                                    Some((cid, u.clone(), *r))
                                }
                                _ => None,
                            }
                        })
                        .collect();
                    units.sort_by_key(|u| u.0);
                    KvResult::Loaded(Ok(units))
                }
            }
        };
        let result = if lost_reply {
            match result {
                KvResult::Written(_) => KvResult::Written(Err(LeaseError::Other)),
                KvResult::Loaded(_) => KvResult::Loaded(Err("timed out".into())),
                r => r,
            }
        } else {
            result
        };
        if !self.nodes[node].alive {
            return;
        }
        let delay = if !self.calm() && self.rng.chance(30) {
            self.rng.between(50, 600)
        } else {
            self.rng.between(1, 5)
        };
        let at = self.now + delay;
        match (&purpose, result) {
            (Purpose::Load { p, op }, KvResult::Loaded(units)) => {
                // The barrier: the result is handed over only after every message the
                // server sent this instance before it.
                let last = self
                    .fifo
                    .iter()
                    .filter(|((_, to), _)| *to == 1000 + node as u64)
                    .map(|(_, t)| *t)
                    .max()
                    .unwrap_or(0);
                let at = at.max(last + 1);
                let d = Delivery::Barrier {
                    p: *p,
                    op: *op,
                    units,
                };
                self.fifo.insert((2, 1000 + node as u64), at);
                self.schedule(
                    at,
                    Ev::Deliver {
                        node,
                        d,
                        sent: self.now,
                    },
                );
            }
            (_, result) => self.schedule(
                at,
                Ev::Deliver {
                    node,
                    d: Delivery::Kv { purpose, result },
                    sent: self.now,
                },
            ),
        }
    }

    fn kv_write(&mut self, key: String, val: Val) -> u64 {
        self.rev += 1;
        let rev = self.rev;
        let ms = self.server_ms();
        self.kv.insert(key.clone(), (rev, val.clone(), ms));
        if key.starts_with("node.") || key.starts_with("lease.") {
            for n in 0..self.nodes.len() {
                if self.nodes[n].alive {
                    let d = Delivery::Watch {
                        key: key.clone(),
                        rev,
                        val: val.clone(),
                        server_ms: ms,
                    };
                    self.deliver(2, n, d.clone());
                    if self.rng.chance(20) {
                        self.deliver(2, n, d);
                    }
                }
            }
        }
        rev
    }

    // ---- An instance ----

    fn node_receives(&mut self, node: usize, d: Delivery, sent: u64) {
        if !self.nodes[node].alive {
            return;
        }
        // The client reports a lost connection after everything it read before: what
        // the server sent before an outage and had not reached the instance by then is
        // lost to it.
        // Nothing arrives while the connection is down.
        match d {
            Delivery::Disconnected => {
                self.nodes[node].cut = self.nats_down_from;
                self.nodes[node].link_up = false;
            }
            Delivery::Connected => self.nodes[node].link_up = true,
            Delivery::Msg { .. } if sent < self.nodes[node].cut || !self.nodes[node].link_up => {
                return
            }
            _ => {}
        }
        if self.nodes[node].paused_until.is_some() {
            self.nodes[node].inbox.push_back(d);
            return;
        }
        self.handle_delivery(node, d);
    }

    fn handle_delivery(&mut self, node: usize, d: Delivery) {
        let now = self.t();
        // Lease and membership news change which partitions' writes it follows.
        let follow = matches!(d, Delivery::Watch { .. } | Delivery::Kv { .. });
        if self.trace {
            eprintln!("{:>6} {} <- {d:?}", self.now, self.nodes[node].id);
        }
        let actions = match d {
            Delivery::Msg { msg, hops } => {
                let partition = Some(part_of(msg.cid, self.cfg.partitions));
                let kind = match &msg.body {
                    Body::Token(t) => Kind::Token {
                        conn: conn_hash(msg.cid),
                        digest: ownership::hash::token_digest(&Msg::token_payload(*t)),
                    },
                    Body::Write => Kind::Write { id: msg.id },
                    _ => Kind::Read,
                };
                let placed = self.nodes[node].m.place(
                    Incoming {
                        partition,
                        kind,
                        hops,
                        msg,
                    },
                    now,
                );
                match placed {
                    Placement::Apply(msg) => vec![Action::Apply { msg }],
                    Placement::ApplyLate(msg) => vec![Action::ApplyLate { msg }],
                    Placement::Forward { to, hops, msg } => vec![Action::Forward { to, hops, msg }],
                    Placement::Kept => Vec::new(),
                    Placement::Drop(msg, why) => vec![Action::Drop { msg, why }],
                }
            }
            Delivery::Watch {
                key,
                rev,
                val,
                server_ms,
            } => {
                let input = match (key.split_once('.'), val) {
                    (Some(("node", id)), Val::Node(info)) => Input::Node {
                        id: id.into(),
                        revision: rev,
                        info,
                        server_ms: Some(server_ms),
                    },
                    (Some(("lease", p)), Val::Lease(v)) => Input::Lease {
                        p: p.parse().unwrap(),
                        revision: rev,
                        value: Some(v),
                        server_ms: Some(server_ms),
                    },
                    _ => return,
                };
                self.nodes[node].m.handle(input, now)
            }
            Delivery::Joined => self.nodes[node].m.handle(Input::Joined, now),
            Delivery::Probe(sent) => self.nodes[node].m.handle(Input::Probe { sent }, now),
            Delivery::Connected => {
                self.nodes[node].connected = true;
                self.nodes[node].m.handle(Input::Reconnected, now)
            }
            Delivery::Disconnected => {
                self.nodes[node].connected = false;
                self.nodes[node].m.handle(
                    Input::Disconnected {
                        backlog_placed: true,
                    },
                    now,
                )
            }
            Delivery::Barrier { p, op, units } => {
                let logs = units.map(|units| {
                    let mut logs = HashMap::new();
                    for (cid, u, _) in &units {
                        logs.insert(conn_hash(*cid), u.tokens.clone());
                    }
                    let loaded = &mut self.nodes[node].loaded;
                    if loaded.get(&p).is_none_or(|(latest, _)| *latest <= op) {
                        loaded.insert(p, (op, units));
                    }
                    logs
                });
                self.nodes[node]
                    .m
                    .handle(Input::Loaded { p, op, logs }, now)
            }
            Delivery::Kv { purpose, result } => self.kv_result(node, purpose, result),
        };
        self.run_actions(node, actions);
        if follow {
            self.follow_writes(node);
        }
    }

    fn kv_result(&mut self, node: usize, purpose: Purpose, result: KvResult) -> Vec<Action<Msg>> {
        let now = self.t();
        match (purpose, result) {
            (Purpose::Heartbeat, _) => Vec::new(),
            (Purpose::Lease { p, op }, KvResult::Written(result)) => self.nodes[node]
                .m
                .handle(Input::LeaseWritten { p, op, result }, now),
            (Purpose::ReadLease { p }, KvResult::Read(entry)) => {
                let entry = entry.map(|e| {
                    e.and_then(|(r, v)| match v {
                        Val::Lease(l) => Some((r, l)),
                        _ => None,
                    })
                });
                self.nodes[node]
                    .m
                    .handle(Input::LeaseRead { p, entry }, now)
            }
            (
                Purpose::Unit {
                    p,
                    gen,
                    cid,
                    written,
                },
                KvResult::Written(result),
            ) => {
                if self.nodes[node].gens.get(&p).copied().unwrap_or(0) == gen {
                    self.unit_written(node, p, cid, written, result);
                }
                Vec::new()
            }
            (
                Purpose::UnitReread {
                    p,
                    gen,
                    cid,
                    written,
                },
                KvResult::Read(entry),
            ) => {
                if self.nodes[node].gens.get(&p).copied().unwrap_or(0) != gen {
                    return Vec::new();
                }
                let n = &mut self.nodes[node];
                match entry {
                    Ok(Some((rev, Val::Unit(u)))) if u == written => {
                        // A write that timed out had landed.
                        n.revisions.insert(cid, rev);
                        self.unit_done(node, p, cid);
                    }
                    Ok(Some((rev, _))) => {
                        // Another value: overwrite it (this instance owns the unit).
                        n.revisions.insert(cid, rev);
                        self.unit_retry(node, p, cid);
                    }
                    Ok(None) => {
                        n.revisions.remove(&cid);
                        self.unit_retry(node, p, cid);
                    }
                    // Read again later: the write waits.
                    Err(_) => self.unit_retry(node, p, cid),
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn run_actions(&mut self, node: usize, actions: Vec<Action<Msg>>) {
        for a in actions {
            if !self.nodes[node].alive {
                return;
            }
            self.run_action(node, a);
        }
    }

    fn run_action(&mut self, node: usize, a: Action<Msg>) {
        let id = self.nodes[node].id.clone();
        if self.trace {
            eprintln!("{:>6} {id} {a:?}", self.now);
        }
        match a {
            Action::Heartbeat(info) => self.kv_request(
                node,
                KvOp::Put(format!("node.{id}"), Val::Node(Some(info))),
                Purpose::Heartbeat,
            ),
            Action::Goodbye => self.kv_request(
                node,
                KvOp::Put(format!("node.{id}"), Val::Node(None)),
                Purpose::Heartbeat,
            ),
            Action::WriteLease {
                p,
                op,
                value,
                expect,
            } => self.kv_request(
                node,
                KvOp::Write {
                    key: format!("lease.{p}"),
                    val: Val::Lease(value),
                    expect,
                },
                Purpose::Lease { p, op },
            ),
            Action::ReadLease { p } => self.kv_request(
                node,
                KvOp::Get(format!("lease.{p}")),
                Purpose::ReadLease { p },
            ),
            Action::Load { p, op } => self.kv_request(node, KvOp::Load(p), Purpose::Load { p, op }),
            Action::Install { p, confirmed } => {
                let n = &mut self.nodes[node];
                let mut changed = Vec::new();
                let (_, units) = n.loaded.remove(&p).unwrap_or_default();
                for (cid, mut u, rev) in units {
                    if !confirmed && u.confirmed {
                        u.confirmed = false;
                        changed.push(cid);
                    }
                    n.units.insert(cid, u);
                    n.revisions.insert(cid, rev);
                }
                self.persist(node, p, changed);
            }
            Action::Reset { p } => {
                let cids = self.cids_held(node, p);
                self.send_gateway(node, ToGateway::Reset { cids });
            }
            Action::ResetAll => {
                let cids = (0..self.cfg.cids).collect();
                self.send_gateway(node, ToGateway::Reset { cids });
            }
            Action::Recall { p, .. } => {
                let cids = self.cids_held(node, p);
                self.send_gateway(node, ToGateway::Refetch { cids });
            }
            Action::Confirm { p, conns } => {
                let parts = self.cfg.partitions;
                for (cid, u) in self.nodes[node].units.iter_mut() {
                    if part_of(*cid, parts) == p && conns.contains(&conn_hash(*cid)) {
                        u.confirmed = true;
                    }
                }
            }
            Action::Doubt { p, conns } => {
                let parts = self.cfg.partitions;
                let mut changed = Vec::new();
                for (cid, u) in self.nodes[node].units.iter_mut() {
                    if part_of(*cid, parts) == p && conns.contains(&conn_hash(*cid)) && u.confirmed
                    {
                        u.confirmed = false;
                        changed.push(*cid);
                    }
                }
                self.persist(node, p, changed);
            }
            Action::Unconfirm { p } => {
                let parts = self.cfg.partitions;
                let mut changed = Vec::new();
                for (cid, u) in self.nodes[node].units.iter_mut() {
                    if part_of(*cid, parts) == p && u.confirmed {
                        u.confirmed = false;
                        changed.push(*cid);
                    }
                }
                self.persist(node, p, changed);
            }
            Action::Apply { msg } => self.apply(node, msg, false),
            Action::ApplyLate { msg } => self.apply(node, msg, true),
            Action::Forward { to, hops, msg } => {
                if let Some(n) = self.nodes.iter().position(|n| n.id == to && n.alive) {
                    self.deliver(1000 + node as u64, n, Delivery::Msg { msg, hops });
                }
            }
            Action::Drop {
                msg,
                why: Dropped::Superseded,
            } => {
                let p = part_of(msg.cid, self.cfg.partitions);
                let unit = self.nodes[node].units.entry(msg.cid).or_default();
                if unit.supersede(&msg) {
                    self.persist(node, p, vec![msg.cid]);
                }
            }
            Action::Drop { .. } => {}
            Action::Probe { sent } => {
                // Through the server, after everything queued for this instance.
                let last = self
                    .fifo
                    .iter()
                    .filter(|((_, to), _)| *to == 1000 + node as u64)
                    .map(|(_, t)| *t)
                    .max()
                    .unwrap_or(0);
                let delay = self.delay();
                let at = (self.now + delay).max(last + 1);
                self.fifo.insert((3, 1000 + node as u64), at);
                self.schedule(
                    at,
                    Ev::Deliver {
                        node,
                        d: Delivery::Probe(sent),
                        sent: self.now,
                    },
                );
            }
            Action::Drain { p } => {
                self.nodes[node].drains.insert(p);
                self.check_drained(node, p);
            }
            Action::Forget { p } => {
                let parts = self.cfg.partitions;
                let n = &mut self.nodes[node];
                n.units.retain(|cid, _| part_of(*cid, parts) != p);
                n.revisions.retain(|cid, _| part_of(*cid, parts) != p);
                let unwritten = n.pipelines.remove(&p).is_some_and(|q| !q.is_empty());
                n.writing.retain(|cid| part_of(*cid, parts) != p);
                *n.gens.entry(p).or_default() += 1;
                n.loaded.remove(&p);
                if unwritten {
                    let now = self.t();
                    let actions = self.nodes[node].m.handle(Input::Unwritten { p }, now);
                    self.run_actions(node, actions);
                }
            }
            Action::Refuse { why } => panic!("same settings everywhere, yet: {why}"),
            Action::Left => {
                self.nodes[node].alive = false;
                let at = self.now + self.rng.between(0, self.cfg.lease_ms);
                self.schedule_start(at);
            }
        }
    }

    fn schedule_start(&mut self, at: u64) {
        // Started by a fault event that finds fewer instances than configured.
        let _ = at;
    }

    /// Writes units changed by something other than a message (their write queues
    /// like any other; nothing is published for it).
    fn persist(&mut self, node: usize, p: u32, mut cids: Vec<usize>) {
        cids.sort_unstable();
        let n = &mut self.nodes[node];
        for cid in cids {
            n.pipelines.entry(p).or_default().push_back(Pending {
                cid,
                event: None,
                reply: None,
                write: Write::Waiting,
            });
        }
        self.pump(node, p);
    }

    /// Applies a message with the engine model and queues its outcome.
    /// `waited`: a held read, whose token fills in no record.
    fn apply(&mut self, node: usize, msg: Msg, waited: bool) {
        let p = part_of(msg.cid, self.cfg.partitions);
        let now = self.t();
        if !self.nodes[node].m.holds(p, now) {
            self.violation(format!(
                "{} applied message {} of partition {p} without holding it",
                self.nodes[node].id, msg.id
            ));
        }
        // At most one owner at a time: a lease revision never goes back.
        let rev = self.kv.get(&format!("lease.{p}")).map(|e| e.0).unwrap_or(0);
        let _ = rev;
        if let Some((last, _)) = self.last_applier.get(&p) {
            if *last != node && self.nodes[*last].alive && self.nodes[*last].m.serves(p, now) {
                self.violation(format!(
                    "partition {p} applied by {} while {} serves it",
                    self.nodes[node].id, self.nodes[*last].id
                ));
            }
        }
        self.last_applier.insert(p, (node, self.now));
        self.out.applied += 1;
        let n = &mut self.nodes[node];
        let unit = n.units.entry(msg.cid).or_default();
        let before = unit.clone();
        let event = unit.apply(&msg, waited);
        let view = unit.view();
        let write = *unit != before;
        let reply = msg.reply.then(|| {
            let v = matches!(msg.body, Body::Get).then_some(view);
            (msg.clone(), v)
        });
        n.pipelines.entry(p).or_default().push_back(Pending {
            cid: msg.cid,
            event,
            reply,
            write: if write { Write::Waiting } else { Write::None },
        });
        self.pump(node, p);
    }

    /// Moves the partition's pipeline on: writes start at once, one at a time per
    /// unit (each compares against the revision the last made); outcomes leave in
    /// order, each once its write is done.
    fn pump(&mut self, node: usize, p: u32) {
        let now = self.t();
        let gen = self.nodes[node].gens.get(&p).copied().unwrap_or(0);
        let mut starts = Vec::new();
        {
            let n = &mut self.nodes[node];
            if n.m.holds(p, now) {
                if let Some(q) = n.pipelines.get_mut(&p) {
                    // A write carries the unit as it is now: every outcome waiting on
                    // that unit is covered by it (a group commit).
                    for i in 0..q.len() {
                        let cid = q[i].cid;
                        if q[i].write == Write::Waiting && !n.writing.contains(&cid) {
                            for pending in q
                                .iter_mut()
                                .filter(|x| x.cid == cid && x.write == Write::Waiting)
                            {
                                pending.write = Write::InFlight;
                            }
                            n.writing.insert(cid);
                            let written = n.units.get(&cid).cloned().unwrap_or_default();
                            let expect = n.revisions.get(&cid).copied();
                            starts.push((cid, written, expect));
                        }
                    }
                }
            }
        }
        for (cid, written, expect) in starts {
            self.kv_request(
                node,
                KvOp::Write {
                    key: format!("unit.{cid}"),
                    val: Val::Unit(written.clone()),
                    expect,
                },
                Purpose::Unit {
                    p,
                    gen,
                    cid,
                    written,
                },
            );
        }
        loop {
            let head = self.nodes[node].pipelines.get(&p).and_then(|q| q.front());
            match head.map(|h| h.write) {
                None => {
                    self.check_drained(node, p);
                    return;
                }
                Some(Write::None | Write::Done) => {
                    if !self.publish_head(node, p) {
                        return;
                    }
                }
                Some(_) => return,
            }
        }
    }

    /// Publishes the head's outcome if the partition is still held; says whether the
    /// pipeline may go on.
    fn publish_head(&mut self, node: usize, p: u32) -> bool {
        let now = self.t();
        let n = &mut self.nodes[node];
        if !n.m.holds(p, now) {
            // Suspended: wait for a renewal (or the partition goes: Forget).
            return false;
        }
        let Some(head) = n.pipelines.get_mut(&p).and_then(|q| q.pop_front()) else {
            return false;
        };
        if let Some(view) = head.event {
            self.send_gateway(
                node,
                ToGateway::Event {
                    cid: head.cid,
                    view,
                },
            );
        }
        if let Some((msg, view)) = head.reply {
            if self.trace {
                eprintln!(
                    "{:>6} {} replies to {}",
                    self.now, self.nodes[node].id, msg.id
                );
            }
            self.send_gateway(node, ToGateway::Reply { msg, view });
        }
        true
    }

    fn unit_written(
        &mut self,
        node: usize,
        p: u32,
        cid: usize,
        written: Unit,
        result: Result<u64, LeaseError>,
    ) {
        let now = self.t();
        match result {
            Ok(rev) => {
                self.nodes[node].revisions.insert(cid, rev);
                self.unit_done(node, p, cid);
            }
            Err(_) if self.nodes[node].m.holds(p, now) => {
                // Conflict or a timeout: read it back; a landed write counts, and an
                // owner overwrites what an old owner left late.
                let gen = self.nodes[node].gens.get(&p).copied().unwrap_or(0);
                self.kv_request(
                    node,
                    KvOp::Get(format!("unit.{cid}")),
                    Purpose::UnitReread {
                        p,
                        gen,
                        cid,
                        written,
                    },
                );
            }
            // Not held now: tried again once it is (or forgotten with the partition).
            Err(_) => self.unit_retry(node, p, cid),
        }
    }

    /// The unit's write is done: the first outcome waiting on it may leave.
    fn unit_done(&mut self, node: usize, p: u32, cid: usize) {
        let n = &mut self.nodes[node];
        n.writing.remove(&cid);
        if let Some(q) = n.pipelines.get_mut(&p) {
            for pending in q
                .iter_mut()
                .filter(|x| x.cid == cid && x.write == Write::InFlight)
            {
                pending.write = Write::Done;
            }
        }
        self.pump(node, p);
    }

    /// The unit's write is to be made again.
    fn unit_retry(&mut self, node: usize, p: u32, cid: usize) {
        let n = &mut self.nodes[node];
        n.writing.remove(&cid);
        if let Some(q) = n.pipelines.get_mut(&p) {
            for pending in q
                .iter_mut()
                .filter(|x| x.cid == cid && x.write == Write::InFlight)
            {
                pending.write = Write::Waiting;
            }
        }
        let at = self.now + self.rng.between(5, 50);
        self.schedule(at, Ev::Pump { node, p });
    }

    /// The cids of partition `p` whose units `node` holds, in order.
    fn cids_held(&self, node: usize, p: u32) -> Vec<usize> {
        let mut cids: Vec<usize> = self.nodes[node]
            .units
            .keys()
            .copied()
            .filter(|c| part_of(*c, self.cfg.partitions) == p)
            .collect();
        cids.sort_unstable();
        cids
    }

    fn check_drained(&mut self, node: usize, p: u32) {
        let now = self.t();
        let n = &mut self.nodes[node];
        if n.drains.contains(&p) && n.pipelines.get(&p).is_none_or(|q| q.is_empty()) {
            n.drains.remove(&p);
            let actions = n.m.handle(Input::Drained { p }, now);
            self.run_actions(node, actions);
        }
    }

    // ---- The gateway ----

    fn gateway_receives(&mut self, g: ToGateway) {
        if self.trace {
            eprintln!("{:>6} gateway <- {g:?}", self.now);
        }
        match g {
            ToGateway::Token { cid, token } => {
                self.gateway.tokens.insert(cid, token);
            }
            ToGateway::Event { cid, view } => self.gateway.event(cid, view),
            ToGateway::Reply { msg, view } => {
                let n = self.gateway.replies.entry(msg.id).or_default();
                *n += 1;
                if *n > 1 {
                    self.violation(format!("message {} answered twice", msg.id));
                }
                if msg.is_change() {
                    self.out.acknowledged += 1;
                }
                if let Some(view) = view {
                    self.gateway.got(msg.cid, msg.id, view);
                }
            }
            ToGateway::Reset { cids } => {
                for cid in cids {
                    self.gateway_request(cid, true);
                    self.gateway_request(cid, false);
                }
            }
            ToGateway::Refetch { cids } => {
                for cid in cids {
                    self.gateway_request(cid, false);
                }
            }
        }
    }

    // ---- Faults ----

    fn fault(&mut self) {
        if self.now >= self.busy_until {
            return;
        }
        self.out.faults += 1;
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].alive && !self.nodes[n].leaving)
            .collect();
        let lease = self.cfg.lease_ms;
        match self.rng.below(8) {
            0 | 1 if !live.is_empty() => {
                let n = live[self.rng.below(live.len() as u64) as usize];
                if self.nodes[n].paused_until.is_none() {
                    let until = self.now + self.rng.between(lease / 4, lease * 5 / 2);
                    self.nodes[n].paused_until = Some(until);
                    self.schedule(until, Ev::Resume { node: n });
                }
            }
            2 if !live.is_empty() => {
                let n = live[self.rng.below(live.len() as u64) as usize];
                self.nodes[n].alive = false;
            }
            3 if !live.is_empty() => {
                let n = live[self.rng.below(live.len() as u64) as usize];
                self.nodes[n].leaving = true;
                let now = self.t();
                let actions = self.nodes[n].m.handle(Input::Leave, now);
                self.run_actions(n, actions);
            }
            4 => self.kv_fail_until = self.now + self.rng.between(lease / 4, lease * 2),
            5 => {
                let until = self.now + self.rng.between(lease / 8, lease * 3 / 2);
                self.nats_down_until = until;
                self.nats_down_from = self.now;
                for n in 0..self.nodes.len() {
                    if self.nodes[n].alive {
                        self.deliver(3, n, Delivery::Disconnected);
                    }
                }
                self.schedule(until, Ev::Reconnect);
            }
            6 => {
                self.kv_clock_offset += self.rng.between(0, 2 * lease) as i64 - lease as i64;
            }
            _ => {}
        }
        // Keep the configured number of instances (a replacement starts).
        let alive = self.nodes.iter().filter(|n| n.alive && !n.leaving).count();
        if alive < self.cfg.instances {
            self.start_node();
        }
        let at = self.now + self.rng.between(lease / 2, lease * 3);
        self.schedule(at, Ev::Fault);
    }

    // ---- Checks ----

    fn violation(&mut self, v: String) {
        if self.out.violations.len() < 20 {
            self.out
                .violations
                .push(format!("seed {} at {} ms: {v}", self.cfg.seed, self.now));
        }
    }

    /// At most one instance serves each partition.
    fn check_serving(&mut self) {
        let now = self.t();
        for p in 0..self.cfg.partitions {
            let serving: Vec<&str> = self
                .nodes
                .iter()
                .filter(|n| n.alive && n.paused_until.is_none() && n.m.serves(p, now))
                .map(|n| &*n.id)
                .collect();
            if serving.len() > 1 {
                let v = format!("partition {p} served by {serving:?}");
                self.violation(v);
            }
        }
    }

    fn final_checks(&mut self) {
        let now = self.t();
        // The final state of each connection: the owner's, else the bucket's.
        let mut finals: std::collections::BTreeMap<usize, Unit> = Default::default();
        for cid in 0..self.cfg.cids {
            let p = part_of(cid, self.cfg.partitions);
            let owner = self.nodes.iter().find(|n| n.alive && n.m.serves(p, now));
            let unit = match owner {
                Some(n) => n.units.get(&cid).cloned().unwrap_or_default(),
                None => {
                    self.violation(format!("partition {p} has no owner at the end"));
                    continue;
                }
            };
            finals.insert(cid, unit);
        }
        let by_id: HashMap<u64, &Msg> = self.sent.iter().map(|m| (m.id, m)).collect();
        let mut problems = Vec::new();
        for (cid, unit) in &finals {
            // Each publisher's messages applied in the order sent, at most once.
            let mut last_seq: HashMap<usize, u64> = HashMap::new();
            for id in &unit.log {
                let Some(m) = by_id.get(id) else { continue };
                if let Some(prev) = last_seq.insert(m.from, m.seq) {
                    if prev >= m.seq {
                        problems.push(format!(
                            "c{cid}: publisher {} message {} (#{}) applied after #{prev}",
                            m.from, m.id, m.seq
                        ));
                    }
                }
            }
            // No acknowledged write lost.
            let applied: HashSet<u64> = unit.log.iter().copied().collect();
            for m in self.sent.iter().filter(|m| m.cid == *cid) {
                if self.gateway.replies.contains_key(&m.id) && !applied.contains(&m.id) {
                    problems.push(format!("c{cid}: acknowledged message {} lost", m.id));
                }
            }
            // The token is the last one sent, unless the record waits to be filled in.
            let last_token = self
                .sent
                .iter()
                .filter(|m| m.cid == *cid && !self.lost.contains(&m.id))
                .filter_map(|m| match m.body {
                    Body::Token(t) => Some(t),
                    _ => None,
                })
                .next_back();
            if let Some(t) = last_token {
                // A record filled in from a request holds the gateway's token as it was
                // then (the engine's contract: once filled, only token events change it).
                if unit.confirmed && !unit.filled && unit.token != t {
                    problems.push(format!(
                        "c{cid}: token {:?} at the end, but the last token event sent {t:?}",
                        unit.token
                    ));
                }
            }
            if (!unit.confirmed || unit.filled) && last_token.is_some() {
                self.out.unconfirmed_at_end += 1;
            }
            // The gateway's copy converged.
            if unit.confirmed || last_token.is_none() {
                let cached = self.gateway.cache.get(cid).copied();
                if cached != Some(unit.view()) {
                    problems.push(format!(
                        "c{cid}: the gateway shows {cached:?}, the owner {:?}",
                        unit.view()
                    ));
                }
            }
        }
        for p in problems {
            self.violation(p);
        }
    }
}
