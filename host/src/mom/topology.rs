//! What the nodes declare on the broker, idempotently, every time they
//! connect (the same names and arguments each time; see README "RabbitMQ"):
//!
//! - `ringshare.handoff`, a direct exchange; each node's hand-offs go to the
//!   queue `ringshare.handoff.<host:port>`, bound with the node's address as
//!   the routing key. Quorum queues: durable, replicated when the broker is
//!   a cluster (classic queues are not), and they count deliveries, so a
//!   message that keeps failing is dead-lettered after [`DELIVERY_LIMIT`].
//! - `ringshare.events`, a topic exchange for ring and file events.
//! - `ringshare.dead`, a fanout exchange, and the quorum queue of the same
//!   name, where poison messages end up (at-least-once dead-lettering).

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

/// The exchange of hand-offs.
pub const HANDOFF_EXCHANGE: &str = "ringshare.handoff";
/// The exchange of events.
pub const EVENTS_EXCHANGE: &str = "ringshare.events";
/// The exchange and queue of dead letters.
pub const DEAD: &str = "ringshare.dead";
/// Deliveries of one message before it is dead-lettered.
pub const DELIVERY_LIMIT: i32 = 10;

/// The hand-off queue of the node at `addr`.
pub fn handoff_queue(addr: &str) -> String {
    format!("{HANDOFF_EXCHANGE}.{addr}")
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// Arguments of every queue: quorum, dead-lettered after the limit.
fn quorum(dead_letters: bool) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(ShortString::from("x-queue-type"), text("quorum"));
    if dead_letters {
        args.insert(ShortString::from("x-delivery-limit"), AMQPValue::LongInt(DELIVERY_LIMIT));
        args.insert(ShortString::from("x-dead-letter-exchange"), text(DEAD));
        args.insert(ShortString::from("x-dead-letter-strategy"), text("at-least-once"));
        args.insert(ShortString::from("x-overflow"), text("reject-publish"));
    }
    args
}

fn durable() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() }
}

/// Declares the exchanges and the dead-letter queue.
pub async fn declare(channel: &Channel) -> lapin::Result<()> {
    let exchanges = [
        (HANDOFF_EXCHANGE, ExchangeKind::Direct),
        (EVENTS_EXCHANGE, ExchangeKind::Topic),
        (DEAD, ExchangeKind::Fanout),
    ];
    for (name, kind) in exchanges {
        channel.exchange_declare(name.into(), kind, durable(), FieldTable::default()).await?;
    }
    let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(DEAD.into(), options, quorum(false)).await?;
    channel.queue_bind(DEAD.into(), DEAD.into(), "".into(), QueueBindOptions::default(), FieldTable::default()).await
}

/// Declares a queue of the connection's own (server-named, exclusive,
/// deleted with the connection, capped at 10,000 messages) bound to every
/// event; answers its name.
pub async fn declare_events_queue(channel: &Channel) -> lapin::Result<String> {
    let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
    let mut args = FieldTable::default();
    args.insert(ShortString::from("x-max-length"), AMQPValue::LongInt(10_000));
    let queue = channel.queue_declare("".into(), options, args).await?;
    let name = queue.name().as_str().to_owned();
    let bind = QueueBindOptions::default();
    channel.queue_bind(name.as_str().into(), EVENTS_EXCHANGE.into(), "#".into(), bind, FieldTable::default()).await?;
    Ok(name)
}

/// Declares the hand-off queue of the node at `addr`, bound to its key.
pub async fn declare_handoff_queue(channel: &Channel, addr: &str) -> lapin::Result<String> {
    let queue = handoff_queue(addr);
    let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue.as_str().into(), options, quorum(true)).await?;
    let bind = QueueBindOptions::default();
    channel
        .queue_bind(queue.as_str().into(), HANDOFF_EXCHANGE.into(), addr.into(), bind, FieldTable::default())
        .await?;
    Ok(queue)
}
