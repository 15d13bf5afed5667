// Package fleet carries notifyd's events from many hosts to one view, on
// NATS JetStream (docs/fleet.md).
//
// On each host a Forwarder subscribes through the subscription core, as
// a configured local user (the fleet principal) with the transport
// "fleet", so that the host's policy decides what leaves the host, and
// publishes every event it receives to a JetStream stream under the
// subject notifyd.<host>.<source>.<subtype>, with the message id
// <epoch>:<seq> (JetStream drops a re-sent message with an id it has
// already stored) and the position of the previous forwarded item in the
// header Notifyd-Prev, which chains a host's items so that a gap can be
// seen. It keeps the last position JetStream acknowledged in its state
// directory and resumes after it when it restarts. Its outbox is the
// subscription's bounded queue: while NATS is unreachable the queue fills,
// and what does not fit is dropped oldest-first and counted by the hub, so
// that the forwarder publishes one loss event with the exact count when
// the connection returns.
//
// An Aggregator consumes the stream with a durable consumer and publishes
// every host's items into a fanout.Hub of its own, from which the usual
// subscription core and WebSocket server serve clients: each event carries
// its host (event.Event.Host) and its position on the host (the property
// HOST_POS), a missing range of a host's chain becomes an in-band loss
// event of that host, and every host has a health (last seen, lag,
// losses). It reads the stream in order without a hole: deliveries lost
// in flight during a leader change are read from the stream directly
// before it acknowledges past them. A missing range waits while the
// host's heartbeat says its forwarder still holds it. The aggregator
// writes every batch to a journal and syncs it before it publishes it,
// and acknowledges the stream only after that, so that after a restart
// (or a crash of its machine) it keeps its epoch and history (a resuming
// subscriber is served exactly) and never publishes a message twice.
//
// Server runs an embedded NATS server with JetStream for an aggregator
// that has no cluster of its own; its authorisation lets each host's
// nkey publish only under notifyd.<host>.>.
//
// The package does not log; every goroutine it starts is stopped and
// waited for before Run returns (or by Shutdown for a Server).
package fleet
