// Package metrics serves notifyd's Prometheus endpoint.
//
// Almost everything is read at scrape time by one custom collector: the
// hub's counters and its subscribers' queue depths (fanout), the sources'
// health, and the policy engine's denial counts. Nothing runs per event:
// the events published per source and subtype (and the upstream loss
// reports per source and origin) are counted by the hub itself as it
// stamps them, under the lock it holds anyway, and read here through
// Hub.Counts. Events is the older per-event counter, still there for a
// process that feeds it itself (the fleet aggregator): one lock-free map
// lookup and one atomic add per event.
//
// New returns an http.Handler backed by its own registry, never the
// global one, so that several daemons (or tests) in one process do not
// collide. The Go runtime and process collectors are registered too.
//
// Metric names are documented in docs/dashboard.md.
package metrics

import (
	"net/http"
	"sort"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/lsm"
	"github.com/notifyd/notifyd/subs"
)

// Hub is the part of *fanout.Hub the collector reads.
type Hub interface {
	Stats() fanout.HubStats
	Subscribers() []fanout.SubStats
}

// hubCounts is the optional part of Hub (*fanout.Hub has it) that reports
// what was published per source and subtype.
type hubCounts interface {
	Counts() []fanout.PublishCount
}

// Config says where the collector reads from. Every field is optional:
// a nil field's metrics are simply absent.
type Config struct {
	// Hub is the fan-out hub (*fanout.Hub).
	Hub Hub
	// Limits reports the subscription core's counters
	// ((*subs.Core).Stats); nil reports none.
	Limits func() subs.Stats
	// Sources reports every source's health.
	Sources func() []event.Health
	// Policy is the policy engine; its denial counts per rule
	// (lsm.Engine.Stats) are exported.
	Policy *lsm.Engine
	// Events, when set, is where the per-source and per-subtype counts
	// of published events come from: a counter set its owner feeds
	// (Events.Sink or Observe), for a hub that others publish into too.
	// When nil they are read from the hub itself (Hub.Counts, which the
	// hub keeps as it stamps events), which costs the publish path
	// nothing: how the daemon wires it.
	Events *Events
	// MaxSubscriberSeries caps the per-subscriber series (queue depth,
	// delivered, lost) so that a thousand WebSocket clients do not make a
	// thousand series each; totals are always exported. 0 means
	// DefaultMaxSubscriberSeries, negative means none.
	MaxSubscriberSeries int
}

// DefaultMaxSubscriberSeries is the per-subscriber series cap when
// Config.MaxSubscriberSeries is 0.
const DefaultMaxSubscriberSeries = 100

// healthStates are the states exported as one gauge each per source.
var healthStates = []event.HealthState{
	event.HealthLive, event.HealthDerived, event.HealthDegraded, event.HealthUnavailable, event.HealthStarting,
}

// New returns the /metrics handler for cfg.
func New(cfg Config) http.Handler {
	reg := NewRegistry(cfg)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// NewRegistry returns a registry holding notifyd's collector and the Go
// runtime and process collectors, for callers that want to gather
// without HTTP.
func NewRegistry(cfg Config) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		newCollector(cfg),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

const ns = "notifyd"

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(ns, "", name), help, labels, nil)
}

var (
	descEvents       = desc("events_total", "Events published by the sources, per source and subtype.", "source", "subtype")
	descLossReports  = desc("loss_reports_total", "Loss events, per source and origin of the loss (kernel interface, subscriber queue, history).", "source", "origin")
	descLostRecords  = desc("lost_records_total", "Records lost where the count is known, per source and origin of the loss.", "source", "origin")
	descLossUnknown  = desc("loss_unknown_total", "Loss events whose record count nobody knows (kernel queue overflow), per source and origin.", "source", "origin")
	descInfo         = desc("info", "Constant 1, labelled with the daemon epoch.", "epoch")
	descSeq          = desc("seq", "Last sequence number stamped by the hub.")
	descPublished    = desc("published_total", "Events (including loss events) published into the hub.")
	descDeliveries   = desc("deliveries_total", "Events handed to subscribers' transports.")
	descDrops        = desc("drops_total", "Events dropped from subscriber queues (each covered by a loss event).")
	descHubDenials   = desc("denials_total", "Event deliveries the policy refused (not a loss).")
	descHistoryLen   = desc("history_events", "Events held in the history ring.")
	descHistoryLow   = desc("history_oldest_seq", "Oldest sequence number still in the history ring (0 when empty).")
	descSubscribers  = desc("subscribers", "Current subscriptions.")
	descQueuedTotal  = desc("subscriber_queued_events", "Events queued over all subscriptions.")
	descQueueMax     = desc("subscriber_queue_depth_max", "Deepest subscriber queue right now.")
	descSubQueue     = desc("subscriber_queue_depth", "Events queued for one subscription.", "id", "label", "policy")
	descSubQueueLen  = desc("subscriber_queue_capacity", "Queue length of one subscription.", "id", "label", "policy")
	descSubDelivered = desc("subscriber_delivered_total", "Events delivered to one subscription.", "id", "label", "policy")
	descSubLost      = desc("subscriber_lost_total", "Events one subscription lost (covered by loss events).", "id", "label", "policy")
	descHealth       = desc("source_health", "1 for the state a source is in, 0 for the others.", "name", "source", "state")
	descSrcEvents    = desc("source_events_total", "Events a source produced, as it reports.", "name", "source")
	descSrcLosses    = desc("source_losses_total", "Loss events a source produced, as it reports.", "name", "source")
	descPolicyDenied = desc("policy_denials_total", "Policy denials per rule (file:line of the policy, or a built-in rule); a swapped-in policy starts its rules at zero.", "rule")
	descConns        = desc("connections", "Client connections the subscription core holds (sockets, D-Bus peers, key watches).")
	descConnsMax     = desc("connections_max", "The total connection budget (limits.max_connections, derived from RLIMIT_NOFILE when 0).")
	descRefused      = desc("refused_total", "Connections and subscriptions refused by a limit, per limit.", "limit")
	descWatchDenied  = desc("subscriptions_denied_total", "Subscriptions the policy's Watch hook refused.")
)

type collector struct {
	cfg Config
}

func newCollector(cfg Config) *collector {
	if cfg.MaxSubscriberSeries == 0 {
		cfg.MaxSubscriberSeries = DefaultMaxSubscriberSeries
	}
	return &collector{cfg: cfg}
}

// Describe sends every descriptor; the collector is not "unchecked"
// because its set of metric names is fixed.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descEvents, descLossReports, descLostRecords, descLossUnknown, descInfo, descSeq, descPublished,
		descDeliveries, descDrops, descHubDenials, descHistoryLen, descHistoryLow, descSubscribers,
		descQueuedTotal, descQueueMax, descSubQueue, descSubQueueLen, descSubDelivered, descSubLost,
		descHealth, descSrcEvents, descSrcLosses, descPolicyDenied,
		descConns, descConnsMax, descRefused, descWatchDenied,
	} {
		ch <- d
	}
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v uint64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

// policyName is the wire name of a fanout.Policy, as in the WebSocket
// protocol.
func policyName(p fanout.Policy) string {
	switch p {
	case fanout.DropOldest:
		return "drop-oldest"
	case fanout.Disconnect:
		return "disconnect"
	case fanout.Coalesce:
		return "coalesce"
	}
	return "policy-" + strconv.Itoa(int(p))
}

// Collect reads every source of figures once.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	// Upstream losses counted from published loss events, keyed by
	// source and origin; subscriber-queue losses are added from the hub.
	type lk struct {
		source event.Source
		origin event.Origin
	}
	reports := map[lk]uint64{}
	records := map[lk]uint64{}
	unknown := map[lk]uint64{}

	if e := c.cfg.Events; e != nil {
		evs, ls := e.snapshot()
		for _, x := range evs {
			counter(ch, descEvents, x.n, string(x.source), x.subtype)
		}
		for _, x := range ls {
			k := lk{x.source, x.origin}
			reports[k] += x.reports
			records[k] += x.records
			unknown[k] += x.unknown
		}
	} else if hc, ok := c.cfg.Hub.(hubCounts); ok {
		for _, x := range hc.Counts() {
			if !x.Loss {
				counter(ch, descEvents, x.Events, string(x.Source), x.Subtype)
				continue
			}
			k := lk{x.Source, x.Origin}
			reports[k] += x.Events
			records[k] += x.Records
			unknown[k] += x.Unknown
		}
	}

	if h := c.cfg.Hub; h != nil {
		st := h.Stats()
		gauge(ch, descInfo, 1, event.FormatEpoch(st.Epoch))
		gauge(ch, descSeq, float64(st.Seq))
		counter(ch, descPublished, st.Published)
		counter(ch, descDeliveries, st.Deliveries)
		counter(ch, descDrops, st.Drops)
		counter(ch, descHubDenials, st.Denials)
		gauge(ch, descHistoryLen, float64(st.HistoryLen))
		gauge(ch, descHistoryLow, float64(st.HistoryLow))
		// Subscriber-queue drops are losses with origin "subscriber";
		// the hub counts them monotonically over all subscriptions.
		records[lk{"", event.OriginSubscriber}] += st.Drops

		subs := h.Subscribers()
		gauge(ch, descSubscribers, float64(len(subs)))
		var queued, maxQ int
		for _, s := range subs {
			queued += s.Queued
			maxQ = max(maxQ, s.Queued)
		}
		gauge(ch, descQueuedTotal, float64(queued))
		gauge(ch, descQueueMax, float64(maxQ))
		if n := c.cfg.MaxSubscriberSeries; n > 0 {
			// The deepest queues are the interesting ones.
			sort.SliceStable(subs, func(i, j int) bool { return subs[i].Queued > subs[j].Queued })
			if len(subs) > n {
				subs = subs[:n]
			}
			for _, s := range subs {
				l := []string{strconv.FormatUint(s.ID, 10), s.Label, policyName(s.Policy)}
				gauge(ch, descSubQueue, float64(s.Queued), l...)
				gauge(ch, descSubQueueLen, float64(s.QueueLen), l...)
				counter(ch, descSubDelivered, s.Delivered, l...)
				counter(ch, descSubLost, s.Lost, l...)
			}
		}
	}

	for k, v := range reports {
		counter(ch, descLossReports, v, string(k.source), string(k.origin))
	}
	for k, v := range records {
		counter(ch, descLostRecords, v, string(k.source), string(k.origin))
	}
	for k, v := range unknown {
		counter(ch, descLossUnknown, v, string(k.source), string(k.origin))
	}

	if f := c.cfg.Sources; f != nil {
		for _, h := range f() {
			for _, s := range healthStates {
				v := 0.0
				if h.State == s {
					v = 1
				}
				gauge(ch, descHealth, v, h.Name, string(h.Source), string(s))
			}
			counter(ch, descSrcEvents, h.Events, h.Name, string(h.Source))
			counter(ch, descSrcLosses, h.Losses, h.Name, string(h.Source))
		}
	}

	if f := c.cfg.Limits; f != nil {
		st := f()
		gauge(ch, descConns, float64(st.Connections))
		gauge(ch, descConnsMax, float64(st.Limits.MaxConnections))
		for r, n := range st.Refused {
			counter(ch, descRefused, n, r)
		}
		counter(ch, descWatchDenied, st.Denied)
	}

	if e := c.cfg.Policy; e != nil {
		// Sum duplicates: a repeated label set would fail the scrape.
		sum := map[string]uint64{}
		var order []string
		for _, r := range e.Stats() {
			if _, ok := sum[r.Rule]; !ok {
				order = append(order, r.Rule)
			}
			sum[r.Rule] += r.Denied
		}
		for _, r := range order {
			counter(ch, descPolicyDenied, sum[r], r)
		}
	}
}
