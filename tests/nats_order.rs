//! Message order across subscriptions, against a real nats-server.
//!
//! NATS delivers one publisher's messages to a connection in the order they were
//! published, whatever their subjects. async-nats gives each subscription a channel of
//! its own, and merging those channels (`SelectAll`) loses the order across them; the
//! vendored async-nats adds `Client::subscribe_into`, which delivers several
//! subscriptions into one channel in the order the connection read their messages
//! (vendor/async-nats/PATCHED.md).

mod common;

use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, Message};
use common::*;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

/// Messages published per run, round-robin over [`PREFIXES`].
const MESSAGES: u64 = 10_000;

const PREFIXES: [&str; 3] = ["a", "b", "c"];

/// Room for every message, so neither way drops any (`ConnectOptions`'s default
/// subscription capacity, 65,536, is as much).
const CAPACITY: usize = MESSAGES as usize;

async fn connect(server: &NatsServer, name: &str) -> Client {
    ConnectOptions::new()
        .name(name)
        .connect(&server.url)
        .await
        .expect("connects")
}

/// Connects, and returns the client's events as they come.
async fn connect_with_events(
    server: &NatsServer,
    name: &str,
) -> (Client, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = ConnectOptions::new()
        .name(name)
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event);
            }
        })
        .connect(&server.url)
        .await
        .expect("connects");
    (client, rx)
}

/// Subscribes `<prefix>.>` for each of [`PREFIXES`] into one channel of `capacity`, the
/// last one (`c.>`) in `queue_group`; returns the sids and the receiver. The handler holds
/// the only senders, so the receiver ends when the subscriptions do.
async fn subscribe_all_into(
    client: &Client,
    capacity: usize,
    queue_group: Option<&str>,
) -> (Vec<u64>, mpsc::Receiver<Message>) {
    let (sender, receiver) = mpsc::channel(capacity);
    let mut sids = Vec::new();
    for prefix in PREFIXES {
        let queue_group = queue_group.filter(|_| prefix == "c").map(String::from);
        let sid = client
            .subscribe_into(format!("{prefix}.>"), queue_group, sender.clone())
            .await
            .unwrap();
        sids.push(sid);
    }
    (sids, receiver)
}

/// Waits until the server counts `count` subscriptions on the connection named `name`.
/// (`Client::flush` only writes the SUBs out: it says nothing of the server having read
/// them, and a publisher on another connection could otherwise race ahead of them.)
async fn wait_subscribed(server: &NatsServer, name: &str, count: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let connz = server.connz();
        let subs = connz["connections"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == name))
            .map(|c| c["subscriptions"].as_u64().expect("subscriptions"));
        if subs == Some(count) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} has {subs:?} subscriptions, not {count}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Publishes message `i` (payload `i`) on `<a|b|c>.<i>` for `i` in `first..first + count`,
/// round-robin, back to back from one connection, and flushes.
async fn publish_round_robin(publisher: &Client, first: u64, count: u64) {
    for i in first..first + count {
        let subject = format!("{}.{i}", PREFIXES[(i % 3) as usize]);
        publisher
            .publish(subject, i.to_string().into())
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
}

/// The sequence number a message carries, checked against its subject.
fn sequence(message: &Message) -> u64 {
    let i: u64 = std::str::from_utf8(&message.payload)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        message.subject.as_str(),
        format!("{}.{i}", PREFIXES[(i % 3) as usize])
    );
    i
}

/// Reads `count` messages, as sequence numbers in the order received.
async fn receive<S: Stream<Item = Message> + Unpin>(stream: &mut S, count: u64) -> Vec<u64> {
    let mut received = Vec::with_capacity(count as usize);
    while (received.len() as u64) < count {
        let Ok(message) = tokio::time::timeout(WAIT, stream.next()).await else {
            panic!(
                "only {} of {count} messages arrived, the last {:?}",
                received.len(),
                received.last()
            );
        };
        received.push(sequence(&message.expect("the stream goes on")));
    }
    received
}

fn stream_of(receiver: mpsc::Receiver<Message>) -> impl Stream<Item = Message> + Unpin {
    Box::pin(futures::stream::unfold(receiver, |mut r| async move {
        r.recv().await.map(|m| (m, r))
    }))
}

/// How many messages arrived after one published later than them.
fn late(received: &[u64]) -> usize {
    let mut highest = None;
    let mut late = 0;
    for &i in received {
        if highest.is_some_and(|h| i < h) {
            late += 1;
        }
        highest = highest.max(Some(i));
    }
    late
}

#[tokio::test]
async fn subscribe_into_keeps_the_order_of_the_connection() {
    let server = NatsServer::start_monitored();
    let subscriber = connect(&server, "subscriber").await;
    let publisher = connect(&server, "publisher").await;
    let (sids, receiver) = subscribe_all_into(&subscriber, CAPACITY, None).await;
    wait_subscribed(&server, "subscriber", 3).await;
    let mut receiver = stream_of(receiver);

    publish_round_robin(&publisher, 0, MESSAGES).await;
    let received = receive(&mut receiver, MESSAGES).await;
    println!(
        "subscribe_into: {MESSAGES} messages, {} late",
        late(&received)
    );
    assert_eq!(received, (0..MESSAGES).collect::<Vec<_>>());

    // One subscription ends; the others go on into the same channel.
    subscriber.unsubscribe_sid(sids[1]).await.unwrap();
    wait_subscribed(&server, "subscriber", 2).await;
    publish_round_robin(&publisher, MESSAGES, 6).await;
    let not_b = (MESSAGES..MESSAGES + 6).filter(|i| i % 3 != 1);
    assert_eq!(receive(&mut receiver, 4).await, not_b.collect::<Vec<_>>());

    // The receiver ends with the last subscription.
    subscriber.unsubscribe_sid(sids[0]).await.unwrap();
    subscriber.unsubscribe_sid(sids[2]).await.unwrap();
    let end = tokio::time::timeout(WAIT, receiver.next()).await;
    assert!(end.expect("the receiver ends").is_none());
}

#[tokio::test]
async fn subscribers_merged_with_select_all_reorder() {
    let server = NatsServer::start_monitored();
    let subscriber = ConnectOptions::new()
        .name("subscriber")
        .subscription_capacity(CAPACITY)
        .connect(&server.url)
        .await
        .unwrap();
    let publisher = connect(&server, "publisher").await;
    let mut merged = futures::stream::SelectAll::new();
    for prefix in PREFIXES {
        merged.push(subscriber.subscribe(format!("{prefix}.>")).await.unwrap());
    }
    wait_subscribed(&server, "subscriber", 3).await;

    publish_round_robin(&publisher, 0, MESSAGES).await;
    let received = receive(&mut merged, MESSAGES).await;
    let late = late(&received);
    println!("SelectAll: {MESSAGES} messages, {late} late");
    let mut sorted = received.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..MESSAGES).collect::<Vec<_>>(), "none lost");
    assert!(late > 0, "SelectAll kept the order this time");
}

/// After a reconnect the handler subscribes the shared channel's subjects again (from the
/// same subscription map as `subscribe`'s), queue group included, and the order holds.
#[tokio::test]
async fn subscribe_into_subscribes_again_after_a_reconnect() {
    let server = NatsServer::start_monitored();
    let port = server.port;
    let (subscriber, mut events) = connect_with_events(&server, "subscriber").await;
    let (sids, receiver) = subscribe_all_into(&subscriber, CAPACITY, Some("workers")).await;
    wait_subscribed(&server, "subscriber", 3).await;
    let mut receiver = stream_of(receiver);
    let publisher = connect(&server, "publisher").await;
    publish_round_robin(&publisher, 0, 300).await;
    assert_eq!(
        receive(&mut receiver, 300).await,
        (0..300).collect::<Vec<_>>()
    );
    drop(publisher);
    while events.try_recv().is_ok() {} // the first "connected"

    // The server goes away and comes back on the same port (monitored again: the later
    // `-p` wins).
    drop(server);
    let server = NatsServer::start_with_args(&["-p", &port.to_string(), "-m", "-1"]);
    assert_eq!(server.port, port);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    while seen.last().is_none_or(|e| e != "connected") {
        let event = tokio::time::timeout_at(deadline, events.recv()).await;
        seen.push(event.expect("reconnects").expect("events").to_string());
    }
    assert_eq!(seen.first().map(String::as_str), Some("disconnected"));
    wait_subscribed(&server, "subscriber", 3).await;

    let publisher = connect(&server, "publisher").await;
    publish_round_robin(&publisher, 300, MESSAGES).await;
    assert_eq!(
        receive(&mut receiver, MESSAGES).await,
        (300..300 + MESSAGES).collect::<Vec<_>>()
    );

    // The sids are the same as before: they still end the subscriptions.
    for sid in sids {
        subscriber.unsubscribe_sid(sid).await.unwrap();
    }
    wait_subscribed(&server, "subscriber", 0).await;
    let end = tokio::time::timeout(WAIT, receiver.next()).await;
    assert!(end.expect("the receiver ends").is_none());
}

/// A full shared channel drops what does not fit, whichever subscription it is for, and
/// reports each drop as a slow consumer with that subscription's sid; what is delivered
/// stays in order. A dropped receiver ends each subscription at its next message.
#[tokio::test]
async fn a_shared_channel_reports_slow_consumers_and_ends_when_dropped() {
    let server = NatsServer::start_monitored();
    let (subscriber, mut events) = connect_with_events(&server, "subscriber").await;
    let (sids, mut receiver) = subscribe_all_into(&subscriber, 5, None).await;
    wait_subscribed(&server, "subscriber", 3).await;
    let publisher = connect(&server, "publisher").await;

    // Nobody reads: 5 fit, 25 are dropped, for all three subscriptions.
    publish_round_robin(&publisher, 0, 30).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut slow = Vec::new();
    while slow.len() < 25 {
        let event = tokio::time::timeout_at(deadline, events.recv()).await;
        match event.expect("slow consumer events").expect("events") {
            Event::SlowConsumer(sid) => slow.push(sid),
            Event::Connected => {}
            other => panic!("unexpected event {other}"),
        }
    }
    let expected: Vec<u64> = (5..30).map(|i| sids[(i % 3) as usize]).collect();
    assert_eq!(slow, expected);
    let mut kept = Vec::new();
    while let Ok(message) = receiver.try_recv() {
        kept.push(sequence(&message));
    }
    assert_eq!(kept, vec![0, 1, 2, 3, 4]);

    // Read again, messages flow again.
    publish_round_robin(&publisher, 30, 3).await;
    let mut receiver = stream_of(receiver);
    assert_eq!(receive(&mut receiver, 3).await, vec![30, 31, 32]);

    // The receiver goes: each subscription ends (UNSUB) at its next message, not before.
    drop(receiver);
    tokio::time::sleep(Duration::from_millis(100)).await;
    wait_subscribed(&server, "subscriber", 3).await;
    publish_round_robin(&publisher, 33, 1).await; // a.33
    wait_subscribed(&server, "subscriber", 2).await;
    publish_round_robin(&publisher, 34, 2).await; // b.34, c.35
    wait_subscribed(&server, "subscriber", 0).await;
}
