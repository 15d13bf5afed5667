package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
)

// Aggregator defaults.
const (
	DefaultReorderWait = 5 * time.Second
	// DefaultReorderLimit bounds how long items wait for a gap that the
	// host says it still holds (see AggregatorConfig.ReorderLimit).
	DefaultReorderLimit = time.Minute
	DefaultStaleAfter   = 3 * DefaultHeartbeat
	DefaultAckWait      = 30 * time.Second
	DefaultDuplicates   = time.Minute
	DefaultMaxAge       = 7 * 24 * time.Hour
	// defaultBatch is what the aggregator takes in one batch, at most: one journal sync per batch,
	// so a batch must be able to hold everything that arrives while the
	// disk syncs the previous one (tens of milliseconds when NATS writes
	// beside it) at the fleet's rate.
	defaultBatch = 8192
	// pullBytes bounds what the consumer buffers in the client: a batch
	// of events of ≈ 0.5 KiB, and no more than this however large the
	// messages a host sends (up to the stream's 1 MiB).
	pullBytes = 16 << 20
)

// StreamConfig is the fleet stream as the aggregator creates or updates it.
type StreamConfig struct {
	Name     string        // "" is DefaultStream
	Replicas int           // 0 is 1
	MaxAge   time.Duration // 0 is DefaultMaxAge
	MaxBytes int64         // 0: no byte limit
	// Duplicates is JetStream's de-duplication window: a message re-sent
	// with the id of one stored this long ago or less is dropped. 0 is
	// DefaultDuplicates.
	Duplicates time.Duration
}

// AggregatorConfig configures an Aggregator. Hub, Conn and Dir are required.
type AggregatorConfig struct {
	// Hub is where hosts' events are published. It must be fresh: the
	// journal restores its epoch and history.
	Hub *fanout.Hub
	// HistoryEvents is the hub's history bound (what the journal keeps
	// and restores); 0 is the fanout default.
	HistoryEvents int
	// Conn is a NATS connection allowed to manage the stream, consume it
	// and read heartbeats.
	Conn *nats.Conn
	// Stream is the stream to create or update and consume.
	Stream StreamConfig
	// Consumer names the durable consumer; "" is DefaultConsumer.
	Consumer string
	// Dir holds the journal.
	Dir string
	// ReorderWait is how long a host's item may wait for a missing
	// predecessor (re-sent after a NATS failure) before the range is
	// declared lost. 0 is DefaultReorderWait. The wait goes on while
	// the host's last heartbeat (not stale) says its forwarder has not
	// yet had the missing range acknowledged: it still holds it and
	// sends it again (a stream leader election can take longer than
	// ReorderWait).
	ReorderWait time.Duration
	// ReorderLimit bounds that longer wait: the aggregator acknowledges
	// the stream only up to the oldest waiting item. 0 is
	// DefaultReorderLimit; it is never less than ReorderWait.
	ReorderLimit time.Duration
	// StaleAfter is how long a host may be silent (no event, no
	// heartbeat) before it is stale. 0 is DefaultStaleAfter.
	StaleAfter time.Duration
	// AckWait is the consumer's acknowledgement wait; 0 is DefaultAckWait.
	AckWait time.Duration
	// Logger receives stream and consumer set-up and rejected messages.
	// nil: nothing is logged.
	Logger *slog.Logger
	// Observe, when set, is called with every event after it was
	// published (metrics).
	Observe func(*event.Event)
}

// AggregatorStats are an aggregator's counters.
type AggregatorStats struct {
	Received   uint64 // messages read from the stream
	Published  uint64 // items published into the hub (events, forwarded losses, gap losses)
	Duplicates uint64 // messages dropped as already published
	// Refilled counts messages read from the stream directly: the
	// consumer delivered them, but the delivery never arrived (lost
	// with a NATS node or a connection during a leader change).
	Refilled uint64
	// Redelivered counts deliveries of stream messages already done.
	Redelivered uint64
	Gaps        uint64 // gaps declared
	Rejected    uint64 // messages that are not a host's item
	Floor       uint64 // every stream sequence number up to this one is done
	Restored    int    // history events the journal restored at start
	// JournalSyncs counts the journal's fsyncs: one per batch, before
	// the batch is published; JournalSyncTime is the time they took.
	JournalSyncs    uint64
	JournalSyncTime time.Duration
	Hosts           int
	Pending         int // items waiting for a gap to fill
	LastError       string
}

// Aggregator consumes the fleet stream into a hub. Create it with
// NewAggregator, then Run it once.
type Aggregator struct {
	cfg   AggregatorConfig
	log   *slog.Logger
	jr    *journal
	found bool // the journal existed

	mu    sync.Mutex
	hosts map[string]*host
	st    AggregatorStats
	floor uint64 // written to the journal
	acked uint64 // acknowledged to the stream
	npend int    // items waiting, over all hosts
}

// NewAggregator opens the journal in cfg.Dir and restores the hub's
// epoch, history and the hosts from it.
func NewAggregator(cfg AggregatorConfig) (*Aggregator, error) {
	if cfg.Hub == nil || cfg.Conn == nil || cfg.Dir == "" {
		return nil, errors.New("new aggregator: hub, connection and directory are required")
	}
	if cfg.Stream.Name == "" {
		cfg.Stream.Name = DefaultStream
	}
	if cfg.Stream.Replicas <= 0 {
		cfg.Stream.Replicas = 1
	}
	if cfg.Stream.MaxAge <= 0 {
		cfg.Stream.MaxAge = DefaultMaxAge
	}
	if cfg.Stream.Duplicates <= 0 {
		cfg.Stream.Duplicates = DefaultDuplicates
	}
	if cfg.Consumer == "" {
		cfg.Consumer = DefaultConsumer
	}
	if cfg.ReorderWait <= 0 {
		cfg.ReorderWait = DefaultReorderWait
	}
	if cfg.ReorderLimit <= 0 {
		cfg.ReorderLimit = DefaultReorderLimit
	}
	cfg.ReorderLimit = max(cfg.ReorderLimit, cfg.ReorderWait)
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = DefaultStaleAfter
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = DefaultAckWait
	}
	a := &Aggregator{cfg: cfg, log: cfg.Logger}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	jr, lj, err := openJournal(cfg.Dir, cfg.Hub, cfg.HistoryEvents)
	if err != nil {
		return nil, err
	}
	a.jr, a.found, a.hosts, a.floor, a.acked = jr, lj.found, lj.hosts, lj.floor, lj.floor
	a.st.Restored = jr.restored
	return a, nil
}

// Stats returns the counters.
func (a *Aggregator) Stats() AggregatorStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.st
	st.Hosts, st.Floor, st.Pending = len(a.hosts), a.floor, a.npend
	return st
}

// Health is every host's health, by name: State live or stale, Events
// and Losses delivered, Since when it became live (or stale), and in
// Reason its position, lag and last heartbeat.
func (a *Aggregator) Health() []event.Health {
	now := time.Now()
	a.mu.Lock()
	hs := make([]event.Health, 0, len(a.hosts))
	for _, h := range a.hosts {
		hs = append(hs, h.health(now, a.cfg.StaleAfter))
	}
	a.mu.Unlock()
	sort.Slice(hs, func(i, j int) bool { return hs[i].Name < hs[j].Name })
	return hs
}

// HostStatus is one host's state in figures (metrics).
type HostStatus struct {
	Name      string
	Live      bool
	Position  Position
	Events    uint64
	Losses    uint64
	Gaps      uint64
	Lag       time.Duration // the age of the last event when it arrived
	LastSeen  time.Time
	HostSeq   uint64 // the host hub's seq in its last heartbeat
	HostQueue int    // what its forwarder held then
}

// Hosts returns every host's figures, by name.
func (a *Aggregator) Hosts() []HostStatus {
	now := time.Now()
	a.mu.Lock()
	out := make([]HostStatus, 0, len(a.hosts))
	for _, h := range a.hosts {
		out = append(out, HostStatus{
			Name: h.name, Live: now.Sub(h.seen) <= a.cfg.StaleAfter, Position: h.last, Events: h.events, Losses: h.losses,
			Gaps: h.gaps, Lag: h.lag, LastSeen: h.seen, HostSeq: h.hb.Seq, HostQueue: h.hb.Queued,
		})
	}
	a.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Run creates or updates the stream, positions the durable consumer after
// the journal's floor, and publishes what it reads into the hub until ctx
// is cancelled. It returns nil then, or an error when the stream cannot
// be consumed or the journal cannot be written (publishing without the
// journal would break the promise to resuming subscribers). It closes the
// journal before it returns.
//
// The stream is read in order without a hole: a delivery that skips
// stream sequence numbers (the consumer delivered messages that never
// arrived: they were in flight on a NATS node or connection that went
// away while its leader changed) is preceded by the skipped messages,
// read from the stream directly. Acknowledging past them (AckAll) would
// otherwise tell the stream they were done, and their hosts would see a
// gap.
func (a *Aggregator) Run(ctx context.Context) (err error) {
	defer func() {
		if cerr := a.jr.close(); err == nil {
			err = cerr
		}
	}()
	js, err := jetstream.New(a.cfg.Conn)
	if err != nil {
		return fmt.Errorf("aggregate: %w", err)
	}
	cons, next, err := a.consumer(ctx, js)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	stream, err := a.stream(ctx, js)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	hb, err := a.cfg.Conn.Subscribe(SubjectPrefix+".*."+heartbeatToken, a.heartbeat)
	if err != nil {
		return fmt.Errorf("aggregate: subscribe to heartbeats: %w", err)
	}
	defer hb.Unsubscribe()
	// Messages are decoded on NATS's delivery goroutine and handed to
	// this one, which orders, journals and publishes them: two cores
	// share the work. A full channel holds the delivery back (the
	// consumer pulls no more than it was asked for).
	msgs := make(chan delivery, defaultBatch)
	stop := make(chan struct{})
	cc, err := cons.Consume(func(m jetstream.Msg) {
		d := delivery{m: m, subject: m.Subject()}
		if md, err := m.Metadata(); err != nil {
			d.err = err
		} else {
			d.seq = md.Sequence.Stream
			d.in, d.err = decode(d.subject, m.Headers(), m.Data(), d.seq)
		}
		select {
		case msgs <- d:
		case <-stop:
		}
	}, jetstream.PullMaxBytes(pullBytes), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		a.setErr(fmt.Errorf("consume: %w", err))
	}))
	if err != nil {
		return fmt.Errorf("aggregate: consume: %w", err)
	}
	defer func() {
		close(stop)
		cc.Stop()
		<-cc.Closed()
	}()

	tick := time.NewTicker(min(a.cfg.ReorderWait/4, 250*time.Millisecond))
	defer tick.Stop()
	batch := make([]delivery, 0, defaultBatch)
	work := make([]delivery, 0, defaultBatch)
	held := map[uint64]jetstream.Msg{} // delivered messages above the floor, while items wait
	var (
		last    jetstream.Msg // the highest delivered message
		lastSeq uint64        // its stream sequence number
		done    uint64        // the highest stream sequence number processed
	)
	for {
		select {
		case <-ctx.Done():
			return nil
		case d := <-msgs:
			batch = append(batch[:0], d)
		fill:
			for len(batch) < cap(batch) {
				select {
				case d := <-msgs:
					batch = append(batch, d)
				default:
					break fill
				}
			}
			// In stream order, without a hole and without a repeat.
			work = work[:0]
			var redelivered, refilled uint64
			for i, d := range batch {
				batch[i] = delivery{}
				switch {
				case d.seq == 0:
				case d.seq < next:
					// Done already (or deleted): a redelivery, or a
					// delivery that was refilled before it arrived. It
					// can acknowledge what is below it.
					redelivered++
					if d.m != nil && d.seq > lastSeq {
						last, lastSeq = d.m, d.seq
					}
					continue
				case d.seq > next:
					n := len(work)
					var err error
					if work, err = a.refill(ctx, stream, next, d.seq, work); err != nil {
						if ctx.Err() != nil {
							return nil
						}
						return err
					}
					refilled += uint64(len(work) - n)
				}
				if d.seq != 0 {
					next = d.seq + 1
				}
				work = append(work, d)
			}
			now := time.Now()
			var out []*inbound
			a.mu.Lock()
			a.st.Redelivered += redelivered
			a.st.Refilled += refilled
			for i, d := range work {
				work[i] = delivery{}
				if d.seq == 0 {
					a.st.Rejected++
					continue
				}
				a.st.Received++
				done = max(done, d.seq)
				if d.m != nil {
					if d.seq > lastSeq {
						last, lastSeq = d.m, d.seq
					}
					if a.npend > 0 {
						held[d.seq] = d.m
					}
				}
				if d.err != nil {
					a.st.Rejected++
					a.log.Warn("fleet message rejected", "subject", d.subject, "stream_seq", d.seq, "err", d.err)
					continue
				}
				h := a.hostLocked(d.in.ev.Host, now)
				dups, g, p := h.dups, h.gaps, len(h.pend)
				out = h.accept(d.in, now, out)
				a.st.Duplicates += h.dups - dups
				a.st.Gaps += h.gaps - g
				a.npend += len(h.pend) - p
			}
			a.mu.Unlock()
			if err := a.commit(out, held, last, lastSeq, done); err != nil {
				return err
			}
		case <-tick.C:
			now := time.Now()
			var out []*inbound
			a.mu.Lock()
			for _, h := range a.hosts {
				if a.npend == 0 {
					break
				}
				if len(h.pend) > 0 {
					g, p := h.gaps, len(h.pend)
					out = h.expire(now, a.cfg.ReorderWait, a.cfg.ReorderLimit, a.cfg.StaleAfter, out)
					a.st.Gaps += h.gaps - g
					a.npend += len(h.pend) - p
				}
			}
			a.mu.Unlock()
			if len(out) > 0 {
				if err := a.commit(out, held, last, lastSeq, done); err != nil {
					return err
				}
			}
			if a.jr.due() {
				a.mu.Lock()
				err := a.jr.rewrite(a.cfg.Hub, a.hosts, a.floor)
				a.mu.Unlock()
				if err != nil {
					return err
				}
			}
		}
	}
}

// refill appends to out the stream's messages from sequence number from
// up to, not including, to: messages the consumer delivered whose
// delivery never arrived. It reads them from the stream's leader, so
// that one stored is never taken for one deleted; it skips what was
// deleted (or is no longer kept) in one request. It tries again while
// the stream cannot answer (a leader election), until ctx is done.
func (a *Aggregator) refill(ctx context.Context, st jetstream.Stream, from, to uint64, out []delivery) ([]delivery, error) {
	wait := 50 * time.Millisecond
	for from < to {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		rm, err := st.GetMsg(rctx, from, jetstream.WithGetMsgSubject(StreamSubjects))
		cancel()
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return out, nil
		case err != nil:
			a.setErr(fmt.Errorf("read stream message %d: %w", from, err))
			select {
			case <-ctx.Done():
				return out, ctx.Err()
			case <-time.After(wait):
			}
			wait = min(2*wait, time.Second)
			continue
		case rm.Sequence >= to:
			return out, nil
		}
		d := delivery{seq: rm.Sequence, subject: rm.Subject}
		d.in, d.err = decode(rm.Subject, rm.Header, rm.Data, rm.Sequence)
		out = append(out, d)
		from = rm.Sequence + 1
	}
	return out, nil
}

// commit journals out, publishes it into the hub, writes the new floor
// (done, or below the oldest waiting item) and acknowledges the stream
// up to it.
func (a *Aggregator) commit(out []*inbound, held map[uint64]jetstream.Msg, last jetstream.Msg, lastSeq, done uint64) error {
	hub := a.cfg.Hub
	epoch, next := hub.Epoch(), hub.Seq()+1
	for i, in := range out {
		// Stamped as the hub will stamp it, so that the journal line and
		// the cached wire form are the published event's.
		in.ev.Epoch, in.ev.Seq = epoch, next+uint64(i)
		a.jr.append(in.stream, in.pos, in.ev)
	}
	a.mu.Lock()
	floor := done
	for _, h := range a.hosts {
		if a.npend == 0 {
			break
		}
		for _, p := range h.pend {
			if p.stream <= floor {
				floor = p.stream - 1
			}
		}
	}
	floor = max(floor, a.floor)
	a.floor = floor
	a.mu.Unlock()
	if err := a.jr.floor(floor); err != nil {
		a.setErr(err)
		return err
	}
	a.mu.Lock()
	a.st.JournalSyncs, a.st.JournalSyncTime = a.jr.syncs, a.jr.syncTime
	a.mu.Unlock()
	for i, in := range out {
		hub.Publish(in.ev)
		if in.ev.Seq != next+uint64(i) {
			return fmt.Errorf("aggregate: the hub stamped seq %d, the journal has %d (another publisher on the hub)", in.ev.Seq, next+uint64(i))
		}
		if a.cfg.Observe != nil {
			a.cfg.Observe(in.ev)
		}
	}
	a.mu.Lock()
	a.st.Published += uint64(len(out))
	a.mu.Unlock()
	// Acknowledge everything up to the floor (AckAll) with the highest
	// delivered message at or below it.
	if floor > a.acked {
		var m jetstream.Msg
		var ms uint64
		if last != nil && lastSeq <= floor {
			m, ms = last, lastSeq
		} else {
			for s, hm := range held {
				if s <= floor && s > ms {
					m, ms = hm, s
				}
			}
		}
		if m != nil && ms > a.acked {
			if err := m.Ack(); err != nil {
				a.setErr(fmt.Errorf("acknowledge: %w", err))
			} else {
				a.acked = ms
			}
		}
		for s := range held {
			if s <= floor {
				delete(held, s)
			}
		}
	}
	return nil
}

func (a *Aggregator) hostLocked(name string, now time.Time) *host {
	h := a.hosts[name]
	if h == nil {
		h = newHost(name, now)
		a.hosts[name] = h
	}
	h.touch(now, a.cfg.StaleAfter)
	return h
}

func (a *Aggregator) setErr(err error) {
	a.mu.Lock()
	a.st.LastError = err.Error()
	a.mu.Unlock()
}

// heartbeat records a forwarder's heartbeat (on NATS's goroutine).
func (a *Aggregator) heartbeat(m *nats.Msg) {
	name, ok := HostOf(m.Subject)
	if !ok {
		return
	}
	var hb heartbeat
	if err := json.Unmarshal(m.Data, &hb); err != nil {
		return
	}
	now := time.Now()
	a.mu.Lock()
	h := a.hostLocked(name, now)
	h.setHeartbeat(hb, now)
	a.mu.Unlock()
}

// delivery is a message read from the stream and decoded.
type delivery struct {
	m       jetstream.Msg // nil when it was read from the stream directly
	subject string
	seq     uint64 // stream sequence number; 0 when the metadata is bad
	in      *inbound
	err     error
}

// decode turns a stream message into a host's item for the aggregator's
// hub: the host comes from the subject (the only part NATS vouches for),
// the host's epoch and seq move into HOST_POS (or HOST_RANGE for a
// loss), the object key is prefixed with the host, and the hub will
// stamp its own epoch and seq.
func decode(subject string, hdr nats.Header, data []byte, stream uint64) (*inbound, error) {
	name, ok := HostOf(subject)
	if !ok {
		return nil, fmt.Errorf("subject %q names no host", subject)
	}
	ev := new(event.Event)
	if err := ev.UnmarshalJSON(data); err != nil {
		return nil, err
	}
	if ev.Epoch == 0 {
		return nil, errNotForwardable
	}
	in := &inbound{ev: ev, pos: itemPos(ev), stream: stream}
	if p := hdr.Get(HeaderPrev); p != "" {
		prev, err := ParsePosition(p)
		if err != nil {
			return nil, err
		}
		in.prev = prev
	}
	if ev.Props == nil {
		ev.Props = make(map[string]string, 1)
	}
	if l := ev.Loss; l != nil {
		if l.FromSeq != 0 || l.ToSeq != 0 {
			ev.Props[PropRange] = event.FormatEpoch(ev.Epoch) + ":" + strconv.FormatUint(l.FromSeq, 10) + "-" + strconv.FormatUint(l.ToSeq, 10)
		}
		if ev.Seq != 0 {
			ev.Props[PropPos] = in.pos.String()
		}
		// The range is the host's; in the aggregator's hub it would be
		// taken for the aggregator's seqs.
		l.FromSeq, l.ToSeq = 0, 0
		l.Reason = "host " + name + ": " + l.Reason
	} else {
		ev.Props[PropPos] = in.pos.String()
	}
	if len(ev.Props) == 0 {
		ev.Props = nil
	}
	ev.Host = name
	ev.Epoch, ev.Seq = 0, 0
	ev.Owner, ev.Snapshot = "", false
	if ev.StateKey != "" {
		ev.StateKey = name + "/" + ev.StateKey
	}
	return in, nil
}

// EnsureStream creates the fleet stream, or updates it to c: subjects
// notifyd.*.*.*, file storage, limits retention discarding the oldest,
// c's replicas, age, size and de-duplication window (defaults for zero
// fields as in NewAggregator).
func EnsureStream(ctx context.Context, js jetstream.JetStream, c StreamConfig) (jetstream.StreamConfig, error) {
	sc := jetstream.StreamConfig{
		Name: c.Name, Subjects: []string{StreamSubjects}, Retention: jetstream.LimitsPolicy,
		Discard: jetstream.DiscardOld, Storage: jetstream.FileStorage, Replicas: max(c.Replicas, 1),
		MaxAge: c.MaxAge, MaxBytes: c.MaxBytes, Duplicates: c.Duplicates, MaxMsgSize: 1 << 20,
	}
	if sc.Name == "" {
		sc.Name = DefaultStream
	}
	if sc.MaxAge <= 0 {
		sc.MaxAge = DefaultMaxAge
	}
	if sc.Duplicates <= 0 {
		sc.Duplicates = DefaultDuplicates
	}
	if sc.MaxBytes == 0 {
		sc.MaxBytes = -1
	}
	if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
		return sc, fmt.Errorf("create stream %s: %w", sc.Name, err)
	}
	return sc, nil
}

// consumer creates or updates the stream, then returns the durable
// consumer positioned after the journal's floor: created there when it is
// missing, re-created there when it has unacknowledged messages or an
// acknowledgement floor that is not the journal's (messages in flight
// when the aggregator stopped are then delivered again at once, instead
// of after AckWait). It returns the stream sequence number of the first
// message the consumer owes.
func (a *Aggregator) consumer(ctx context.Context, js jetstream.JetStream) (jetstream.Consumer, uint64, error) {
	var sc jetstream.StreamConfig
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		var err error
		sc, err = EnsureStream(ctx, js, a.cfg.Stream)
		if err == nil {
			break
		}
		// A cluster that is still electing its leaders answers 503s and
		// timeouts for a while.
		a.setErr(err)
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-time.After(wait):
		}
	}
	a.mu.Lock()
	a.st.LastError = ""
	a.mu.Unlock()
	a.log.Info("fleet stream ready", "stream", sc.Name, "replicas", sc.Replicas)
	cc := jetstream.ConsumerConfig{
		Durable: a.cfg.Consumer, AckPolicy: jetstream.AckAllPolicy, AckWait: a.cfg.AckWait, MaxDeliver: -1,
		FilterSubject: StreamSubjects, MaxAckPending: 8 * defaultBatch, DeliverPolicy: jetstream.DeliverAllPolicy,
		Replicas: a.cfg.Stream.Replicas,
	}
	start := uint64(1)
	if a.found && a.floor > 0 {
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, a.floor+1
		start = a.floor + 1
	}
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		c, err := js.Consumer(ctx, sc.Name, a.cfg.Consumer)
		next := start
		switch {
		case errors.Is(err, jetstream.ErrConsumerNotFound):
			c, err = js.CreateOrUpdateConsumer(ctx, sc.Name, cc)
		case err == nil:
			ci := c.CachedInfo()
			if a.found && (ci.AckFloor.Stream != a.floor || ci.NumAckPending > 0) {
				a.log.Info("fleet consumer re-positioned after the journal", "consumer", a.cfg.Consumer,
					"ack_floor", ci.AckFloor.Stream, "journal_floor", a.floor, "pending", ci.NumAckPending)
				if err = js.DeleteConsumer(ctx, sc.Name, a.cfg.Consumer); err == nil {
					c, err = js.CreateOrUpdateConsumer(ctx, sc.Name, cc)
				}
			} else {
				// Kept as it is: it owes what is above its
				// acknowledgement floor.
				next = ci.AckFloor.Stream + 1
			}
		}
		if err == nil {
			return c, next, nil
		}
		a.setErr(fmt.Errorf("create consumer: %w", err))
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// stream returns the fleet stream, for reading messages directly.
func (a *Aggregator) stream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		st, err := js.Stream(ctx, a.cfg.Stream.Name)
		if err == nil {
			return st, nil
		}
		a.setErr(fmt.Errorf("look up stream: %w", err))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}
