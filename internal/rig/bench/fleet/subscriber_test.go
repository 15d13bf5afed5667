package fleetbench

import (
	"bytes"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// subscriber is one WebSocket client of the aggregator. It reads every
// frame, marks the aggregator seq of every item it receives and the seq
// ranges of the loss items (its own queue's drops), and samples latency
// (now − the event's time, which the simulated host set when it
// published) for one item in sampleEvery.
type subscriber struct {
	base0, token, filter string
	closing              chan struct{}

	cmu  sync.Mutex
	conn *websocket.Conn

	mu       sync.Mutex
	first    uint64 // the hello's seq + 1
	base     uint64
	bits     []uint64 // seq - base received or reported
	last     uint64
	items    uint64
	losses   uint64 // loss items
	lost     uint64 // events they cover (known counts)
	lat      []time.Duration
	sampling bool
	n        uint64
	err      error
	epoch    string
	resumed  int // reconnections (after a write timeout, the server drops a client that reads too slowly)
	done     chan struct{}
}

const sampleEvery = 8

func dial(base, token, filter string) (*subscriber, error) {
	s := &subscriber{base0: base, token: token, filter: filter, done: make(chan struct{}), closing: make(chan struct{})}
	c, err := s.connect("")
	if err != nil {
		return nil, err
	}
	s.conn = c
	go s.read()
	return s, nil
}

func (s *subscriber) connect(since string) (*websocket.Conn, error) {
	q := url.Values{"token": {s.token}, "subscribe": {"1"}, "queue": {"65536"}}
	if s.filter != "" {
		q.Set("filter", s.filter)
	}
	if since != "" {
		q.Set("since", since)
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 1 << 16}
	c, _, err := d.Dial(s.base0+"/v1/ws?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(8 << 20)
	return c, nil
}

// read reads frames; when the server drops the connection it resumes
// after the last item received, as notifyctl does.
//
// The frames are read into one reused buffer and scanned once: 100 clients
// of everything read over a million items a second in the benchmark's
// process, beside 980 hosts' forwarders, and what they spend is taken
// from the hosts they measure.
func (s *subscriber) read() {
	defer close(s.done)
	var buf bytes.Buffer
	for {
		s.cmu.Lock()
		c := s.conn
		s.cmu.Unlock()
		_, r, err := c.NextReader()
		if err == nil {
			buf.Reset()
			if _, err = buf.ReadFrom(r); err == nil {
				s.frame(buf.Bytes())
				continue
			}
		}
		s.mu.Lock()
		s.err = err
		since := s.epoch + ":" + strconv.FormatUint(s.last, 10)
		s.mu.Unlock()
		for {
			select {
			case <-s.closing:
				return
			case <-time.After(100 * time.Millisecond):
			}
			nc, err := s.connect(since)
			if err != nil {
				continue
			}
			s.cmu.Lock()
			s.conn = nc
			s.cmu.Unlock()
			s.mu.Lock()
			s.resumed++
			s.mu.Unlock()
			break
		}
	}
}

var (
	typeKey = []byte(`{"type":"`)
	seqKey  = []byte(`"seq":`)
	timeKey = []byte(`"time":"`)
	fromKey = []byte(`"from_seq":`)
	toKey   = []byte(`"to_seq":`)
	cntKey  = []byte(`"count":`)
)

// frame scans one frame's items without decoding them.
func (s *subscriber) frame(b []byte) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 0; i < len(b); {
		j := bytes.Index(b[i:], typeKey)
		if j < 0 {
			return
		}
		i += j + len(typeKey)
		end := bytes.IndexByte(b[i:], '"')
		if end < 0 {
			return
		}
		typ := b[i : i+end]
		next := bytes.Index(b[i:], typeKey)
		item := b[i:]
		if next >= 0 {
			item = b[i : i+next]
		}
		i += len(item) // the next item starts here
		switch string(typ) {
		case "hello":
			if k := bytes.Index(item, []byte(`"epoch":"`)); k >= 0 && s.epoch == "" {
				s.epoch = string(item[k+9 : k+9+16])
			}
			if seq, ok := num(item, seqKey); ok && s.first == 0 {
				s.first, s.base, s.last = seq+1, seq+1, seq
			}
		case "event", "loss":
			seq, _ := num(item, seqKey)
			s.items++
			if string(typ) == "loss" {
				s.losses++
				if c, ok := num(item, cntKey); ok {
					s.lost += c
				}
			}
			if seq == 0 { // this subscription's own drops
				from, _ := num(item, fromKey)
				to, _ := num(item, toKey)
				for q := from; q <= to && from > 0; q++ {
					s.mark(q)
				}
				continue
			}
			s.mark(seq)
			s.n++
			if string(typ) == "event" && s.sampling && s.n%sampleEvery == 0 {
				if k := bytes.Index(item, timeKey); k >= 0 {
					k += len(timeKey)
					if e := bytes.IndexByte(item[k:], '"'); e > 0 {
						if t, err := time.Parse(time.RFC3339Nano, string(item[k:k+e])); err == nil {
							s.lat = append(s.lat, now.Sub(t))
						}
					}
				}
			}
		}
	}
}

func num(item, key []byte) (uint64, bool) {
	k := bytes.Index(item, key)
	if k < 0 {
		return 0, false
	}
	k += len(key)
	e := k
	for e < len(item) && item[e] >= '0' && item[e] <= '9' {
		e++
	}
	v, err := strconv.ParseUint(string(item[k:e]), 10, 64)
	return v, err == nil
}

func (s *subscriber) mark(seq uint64) {
	if seq < s.base {
		return
	}
	i := seq - s.base
	for uint64(len(s.bits))*64 <= i {
		s.bits = append(s.bits, 0)
	}
	s.bits[i/64] |= 1 << (i % 64)
	if seq > s.last {
		s.last = seq
	}
}

// unreported counts the seqs from the first to upTo neither received nor
// covered by a loss item.
func (s *subscriber) unreported(upTo uint64) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n uint64
	for q := s.first; q <= upTo; q++ {
		i := q - s.base
		if i/64 >= uint64(len(s.bits)) || s.bits[i/64]&(1<<(i%64)) == 0 {
			n++
		}
	}
	return n
}

func (s *subscriber) lastSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

func (s *subscriber) sample(on bool) {
	s.mu.Lock()
	s.sampling = on
	s.mu.Unlock()
}

func (s *subscriber) close() {
	close(s.closing)
	s.cmu.Lock()
	s.conn.Close()
	s.cmu.Unlock()
	<-s.done
}
