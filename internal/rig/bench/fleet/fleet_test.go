package fleetbench

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/notifyd/notifyd/fleet"
	"github.com/notifyd/notifyd/fleet/fleetsim"
)

func env(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v >= 0 {
		return v
	}
	return def
}

func envDur(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

// BenchmarkFleet runs the fleet end to end once and prints its figures
// (see the package comment). b.N is ignored: run it with -benchtime 1x.
func BenchmarkFleet(b *testing.B) {
	var (
		nHosts  = env("FLEETBENCH_HOSTS", 1000)
		rate    = env("FLEETBENCH_RATE", 10)
		nSubs   = env("FLEETBENCH_SUBS", 100)
		nProcs  = min(env("FLEETBENCH_PROCS", 20), nHosts)
		nNodes  = 3
		filter  = os.Getenv("FLEETBENCH_FILTER")
		warmup  = envDur("FLEETBENCH_WARMUP", 10*time.Second)
		measure = envDur("FLEETBENCH_MEASURE", 30*time.Second)
	)
	dir := b.TempDir()
	logf := func(format string, a ...any) { fmt.Fprintf(os.Stderr, "fleetbench: "+format+"\n", a...) }
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()

	// Keys: one per host, one for the aggregator (a reader).
	hostsDir := filepath.Join(dir, "hosts")
	names := make([]string, nHosts)
	keys := make([]*fleet.HostKey, nHosts)
	for i := range names {
		names[i] = fmt.Sprintf("h%04d", i)
		k, _, _, err := fleet.NewHostKey(hostsDir, names[i])
		if err != nil {
			b.Fatal(err)
		}
		keys[i] = k
	}
	reader, readerPath, _, err := fleet.NewHostKey(filepath.Join(dir, "reader"), "aggregator")
	if err != nil {
		b.Fatal(err)
	}
	bin, err := buildNotifyd(dir)
	if err != nil {
		b.Fatal(err)
	}

	// Three NATS nodes, each its own process.
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	ports, err := freePorts(3 * nNodes)
	if err != nil {
		b.Fatal(err)
	}
	var routes []string
	for i := 0; i < nNodes; i++ {
		routes = append(routes, "nats-route://"+ports[nNodes+i])
	}
	var nodes []*proc
	var urls, monitors []string
	for i := 0; i < nNodes; i++ {
		spec, _ := json.Marshal(nodeSpec{Name: fmt.Sprintf("n%d", i+1), Store: filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			Listen: ports[i], ClusterListen: ports[nNodes+i], Monitor: ports[2*nNodes+i], Routes: routes, HostsDir: hostsDir, Reader: reader.Public})
		p, err := start(fmt.Sprintf("nats n%d", i+1), []string{"FLEETBENCH_ROLE=nats", "FLEETBENCH_NODE=" + string(spec)}, self)
		if err != nil {
			b.Fatal(err)
		}
		cleanups = append(cleanups, func() { p.stop(10 * time.Second) })
		nodes = append(nodes, p)
		urls = append(urls, "nats://"+ports[i])
		monitors = append(monitors, "http://"+ports[2*nNodes+i])
	}
	for _, p := range nodes {
		if _, err := p.expect("READY", 30*time.Second); err != nil {
			b.Fatal(err)
		}
	}
	logf("%d NATS nodes up: %s", nNodes, strings.Join(urls, ","))

	// The aggregator: notifyd fleet on the cluster.
	cfg := fmt.Sprintf(`[daemon]
runtime_dir = %q
log_level = "warn"
[websocket]
listen = "127.0.0.1:0"
socket = "off"
[limits]
max_subscribers = 1024
[fleet]
state_dir = %q
nats = [%s]
nkey_file = %q
replicas = 3
`, filepath.Join(dir, "aggrun"), filepath.Join(dir, "aggstate"), `"`+strings.Join(urls, `","`)+`"`, readerPath)
	cfgPath := filepath.Join(dir, "fleet.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	agg, err := start("aggregator", nil, bin, "fleet", "--config", cfgPath)
	if err != nil {
		b.Fatal(err)
	}
	cleanups = append(cleanups, func() { agg.stop(20 * time.Second) })
	line, err := agg.expect("dashboard", 60*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	m := regexp.MustCompile(`http://([0-9.:]+)/`).FindStringSubmatch(line)
	if m == nil {
		b.Fatalf("banner line %q", line)
	}
	aggAddr := m[1]
	tok, err := os.ReadFile(filepath.Join(dir, "aggrun", "token"))
	if err != nil {
		b.Fatal(err)
	}
	token := strings.TrimSpace(string(tok))
	logf("aggregator up on %s (pid %d)", aggAddr, agg.cmd.Process.Pid)

	// Subscribers.
	// A filter with %d is a template: subscriber i gets it with i, and
	// subscriber 0 takes everything (it checks that nothing is missing).
	subs := make([]*subscriber, nSubs)
	filters := make([]string, nSubs)
	for i := range subs {
		f := filter
		if strings.Contains(f, "%") {
			f = fmt.Sprintf(f, i)
			if i == 0 {
				f = ""
			}
		}
		filters[i] = f
		s, err := dial("ws://"+aggAddr, token, f)
		if err != nil {
			b.Fatalf("subscriber %d: %v", i, err)
		}
		subs[i] = s
		cleanups = append(cleanups, s.close)
	}
	logf("%d subscribers (filter %q)", nSubs, filter)

	// NATS memory before the hosts connect.
	base := varzAll(monitors)

	// Hosts: nProcs in their own notifyd process, the rest here.
	var simProcs []*proc
	for i := 0; i < nProcs; i++ {
		p, err := start("host "+names[i], nil, bin, "fleet", "simulate", "--host", names[i], "--nkey", filepath.Join(hostsDir, names[i]+".nk"),
			"--nats", strings.Join(urls, ","), "--rate", strconv.Itoa(rate))
		if err != nil {
			b.Fatal(err)
		}
		simProcs = append(simProcs, p)
		cleanups = append(cleanups, func() { p.stop(5 * time.Second) })
	}
	var hosts []*fleetsim.Host
	var hmu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := nProcs; i < nHosts; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			h, err := fleetsim.StartHost(fleetsim.HostConfig{Name: names[i], URLs: urls, Options: []nats.Option{keys[i].Option()},
				AckTimeout: 5 * time.Second, Heartbeat: 5 * time.Second, ReconnectWait: 250 * time.Millisecond, HistoryEvents: 1024})
			if err != nil {
				logf("host %s: %v", names[i], err)
				return
			}
			hmu.Lock()
			hosts = append(hosts, h)
			hmu.Unlock()
		}()
	}
	wg.Wait()
	cleanups = append(cleanups, func() {
		for _, h := range hosts {
			h.Stop()
		}
	})
	if len(hosts) != nHosts-nProcs {
		b.Fatalf("%d of %d in-process hosts started", len(hosts), nHosts-nProcs)
	}
	time.Sleep(2 * time.Second)
	conns := varzAll(monitors)
	// What the connections cost when nothing is published (heartbeats,
	// pings).
	ni0, ai0 := nodeUsage(nodes), must(procUsage(agg.cmd.Process.Pid))
	time.Sleep(5 * time.Second)
	ni1, ai1 := nodeUsage(nodes), must(procUsage(agg.cmd.Process.Pid))
	idleNATS, idleAgg := (ni1.cpu-ni0.cpu).Seconds()/5, (ai1.cpu-ai0.cpu).Seconds()/5
	logf("%d hosts connected (%d processes, %d here): NATS connections %d, RSS %s → %s",
		nHosts, nProcs, len(hosts), conns.conns-base.conns, mib(base.mem), mib(conns.mem))

	// Publish: the in-process hosts at rate each, spread evenly.
	stop := make(chan struct{})
	var pubWG sync.WaitGroup
	pubWG.Add(1)
	go func() {
		defer pubWG.Done()
		t0 := time.Now()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		done, next := 0, 0
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			due := int(time.Since(t0).Seconds() * float64(rate*len(hosts)))
			for ; done < due; done++ {
				hosts[next].Publish(1)
				next = (next + 1) % len(hosts)
			}
		}
	}()
	logf("warming up for %v", warmup)
	time.Sleep(warmup)

	// Measure.
	for _, s := range subs {
		s.sample(true)
	}
	var fail0 uint64
	for _, h := range hosts {
		fail0 += h.Fwd.Stats().Failures
	}
	pid := agg.cmd.Process.Pid
	hist0 := scrape("http://"+aggAddr+"/metrics", token)
	busy0, all0 := machineCPU()
	a0, _ := procUsage(pid)
	me0, _ := procUsage(os.Getpid())
	n0 := nodeUsage(nodes)
	s0 := nodeUsage(simProcs)
	var per0 []usage
	for _, p := range nodes {
		u, _ := procUsage(p.cmd.Process.Pid)
		per0 = append(per0, u)
	}
	t0 := time.Now()
	logf("measuring for %v", measure)
	var rssPeak int64
	var varzLoad varz
	var midLag string
	for time.Since(t0) < measure {
		time.Sleep(time.Second)
		if u, err := procUsage(pid); err == nil && u.rss > rssPeak {
			rssPeak = u.rss
		}
		if time.Since(t0) > measure/2 && varzLoad.conns == 0 {
			varzLoad = varzAll(monitors)
			mid := scrape("http://"+aggAddr+"/metrics", token)
			var lags []float64
			for k, v := range mid {
				if strings.HasPrefix(k, "notifyd_fleet_host_lag_seconds") {
					lags = append(lags, v)
				}
			}
			slices.Sort(lags)
			var queued int
			for _, h := range hosts {
				queued += h.Fwd.Stats().Queued
			}
			if len(lags) > 0 {
				midLag = fmt.Sprintf("age of each host's last event at the aggregator: median %.3fs, max %.3fs; forwarders here hold %d events; %s",
					lags[len(lags)/2], lags[len(lags)-1], queued, consumerLag(monitors))
			}
		}
	}
	el := time.Since(t0)
	hist1 := scrape("http://"+aggAddr+"/metrics", token)
	busy1, all1 := machineCPU()
	a1, _ := procUsage(pid)
	me1, _ := procUsage(os.Getpid())
	n1 := nodeUsage(nodes)
	s1 := nodeUsage(simProcs)
	var perNode []string
	for i, p := range nodes {
		u, _ := procUsage(p.cmd.Process.Pid)
		perNode = append(perNode, fmt.Sprintf("%.2f", (u.cpu-per0[i].cpu).Seconds()/time.Since(t0).Seconds()))
	}
	for _, s := range subs {
		s.sample(false)
	}

	// Stop publishing, let everything arrive.
	close(stop)
	pubWG.Wait()
	published := map[string]int{}
	for _, h := range hosts {
		published[h.Name] = h.Published()
	}
	for _, p := range simProcs {
		p.cmd.Process.Signal(syscall.SIGTERM)
	}
	var procLost uint64
	for _, p := range simProcs {
		l, err := p.expect("{", 20*time.Second)
		if err != nil {
			logf("%v", err)
			continue
		}
		var sum struct {
			Host      string
			Published int
			Lost      uint64
		}
		json.Unmarshal([]byte(l), &sum)
		published[sum.Host] = sum.Published
		procLost += sum.Lost
	}
	total := 0
	for _, n := range published {
		total += n
	}
	// The aggregator's last seq: wait until the subscribers have it.
	metrics := func() map[string]float64 { return scrape("http://"+aggAddr+"/metrics", token) }
	var final uint64
	waitUntil := time.Now().Add(90 * time.Second)
	for time.Now().Before(waitUntil) {
		mm := metrics()
		if int(mm["notifyd_fleet_messages_total"]) >= total || mm[`notifyd_published_total`] >= float64(total) {
			final = uint64(mm["notifyd_seq"])
			behind := false
			for i, s := range subs {
				behind = behind || (filters[i] == "" && s.lastSeq() < final)
			}
			if !behind {
				break
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	mm := metrics()
	final = uint64(mm["notifyd_seq"])
	time.Sleep(time.Second)

	// Figures.
	var lat []time.Duration
	var unreported, subLoss, subLost, items uint64
	checked, resumed := 0, 0
	var inflight uint64
	for i, s := range subs {
		s.mu.Lock()
		resumed += s.resumed
		lat = append(lat, s.lat...)
		subLoss += s.losses
		subLost += s.lost
		items += s.items
		s.mu.Unlock()
		if filters[i] == "" {
			// Items come in order: what is missing below the last one
			// received was skipped; above it, still on its way.
			last := min(s.lastSeq(), final)
			unreported += s.unreported(last)
			inflight += final - last
			checked++
		}
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	var aggEvents, aggLosses float64
	for k, v := range mm {
		if strings.HasPrefix(k, "notifyd_fleet_host_events_total") {
			aggEvents += v
		}
		if strings.HasPrefix(k, "notifyd_fleet_host_losses_total") {
			aggLosses += v
		}
	}
	hostUnreported := total - int(aggEvents)
	if aggLosses > 0 || procLost > 0 {
		logf("host losses reported: %v loss events at the aggregator, %d events lost in process hosts' outboxes", aggLosses, procLost)
	}
	aggCPU := a1.cpu - a0.cpu
	nodeCPU := n1.cpu - n0.cpu
	meCPU := me1.cpu - me0.cpu
	perConnLoad := float64(varzLoad.mem-base.mem) / float64(max(1, varzLoad.conns-base.conns))
	perConnIdle := float64(conns.mem-base.mem) / float64(max(1, conns.conns-base.conns))

	fmt.Printf("\nfleet: %d hosts × %d events/s (%d in notifyd processes) → %d-node NATS (R3) → aggregator → %d WebSocket subscribers (filter %q), %v measured, GOMAXPROCS %d\n",
		nHosts, rate, nProcs, nNodes, nSubs, filter, el.Round(time.Second), runtime.GOMAXPROCS(0))
	fmt.Printf("  events published by hosts      %d (%.0f/s)\n", total, float64(total)/(el+warmup).Seconds())
	fmt.Printf("  events published by aggregator %.0f, host loss events %.0f\n", aggEvents, aggLosses)
	fmt.Printf("  items delivered to subscribers %d (%.0f/s); subscriber loss events %d covering %d events\n", items, float64(items)/(el+warmup).Seconds(), subLoss, subLost)
	fmt.Printf("  latency host publish → subscriber: p50 %v  p90 %v  p99 %v  p99.9 %v  max %v  (%d samples)\n", pct(0.50).Round(100*time.Microsecond),
		pct(0.90).Round(100*time.Microsecond), pct(0.99).Round(100*time.Microsecond), pct(0.999).Round(time.Millisecond), pct(1).Round(time.Millisecond), len(lat))
	fmt.Printf("  of which host publish → aggregator hub (notifyd_fleet_arrival_seconds, bucket upper bounds): p50 ≤ %s  p90 ≤ %s  p99 ≤ %s\n",
		histQuantile(hist0, hist1, "notifyd_fleet_arrival_seconds", 0.5), histQuantile(hist0, hist1, "notifyd_fleet_arrival_seconds", 0.9),
		histQuantile(hist0, hist1, "notifyd_fleet_arrival_seconds", 0.99))
	if syncs := hist1["notifyd_fleet_journal_syncs_total"] - hist0["notifyd_fleet_journal_syncs_total"]; syncs > 0 {
		fmt.Printf("  aggregator journal: %.0f syncs/s, %.1f ms each on average, %.0f events per sync; busy syncing %.0f%% of the time measured\n",
			syncs/el.Seconds(), 1000*(hist1["notifyd_fleet_journal_sync_seconds_total"]-hist0["notifyd_fleet_journal_sync_seconds_total"])/syncs,
			(hist1["notifyd_fleet_messages_total"]-hist0["notifyd_fleet_messages_total"])/syncs,
			100*(hist1["notifyd_fleet_journal_sync_seconds_total"]-hist0["notifyd_fleet_journal_sync_seconds_total"])/el.Seconds())
	}
	fmt.Printf("  the machine's CPUs were busy %.0f%% of the time measured (%d CPUs, everything on it: this benchmark and any other work)\n",
		100*float64(busy1-busy0)/float64(max(1, all1-all0)), runtime.NumCPU())
	fmt.Printf("  mid-run: %s\n", midLag)
	var resent, failures uint64
	errs := map[string]int{}
	for _, h := range hosts {
		st := h.Fwd.Stats()
		resent += st.Resent
		failures += st.Failures
		if st.LastFail != "" {
			e := regexp.MustCompile(`notifyd\.[^ ]+`).ReplaceAllString(st.LastFail, "SUBJECT")
			errs[e]++
		}
	}
	for e, n := range errs {
		logf("%d forwarders' last error: %s", n, e)
	}
	fmt.Printf("  forwarders here: %d publishes failed (%d while measuring), %d sent again; aggregator: %.0f duplicates dropped, %.0f items waited for a gap\n",
		failures, failures-fail0, resent, mm["notifyd_fleet_duplicates_total"], mm["notifyd_fleet_pending"])
	fmt.Printf("  lost unreported: %d at the %d unfiltered subscribers (seqs neither received nor in a loss), %d between hosts and the aggregator; subscribers dropped for reading too slowly and resumed: %d times; still on their way when the wait ended: %d\n",
		unreported, checked, max(0, hostUnreported), resumed, inflight)
	fmt.Printf("  aggregator: CPU %.2f cores, RSS %s (peak %s)\n", aggCPU.Seconds()/el.Seconds(), mib(a1.rss), mib(rssPeak))
	fmt.Printf("  NATS nodes: CPU %.2f cores in all (%s), RSS %s in all; per host connection %.1f KiB idle, %.1f KiB under load\n",
		nodeCPU.Seconds()/el.Seconds(), strings.Join(perNode, " + "), mib(n1.rss), perConnIdle/1024, perConnLoad/1024)
	fmt.Printf("  idle, %d hosts connected, nothing published: NATS nodes %.3f cores in all, aggregator %.3f cores\n", nHosts, idleNATS, idleAgg)
	fmt.Printf("  %d host processes: CPU %.3f cores in all, RSS %s each\n", len(simProcs), (s1.cpu-s0.cpu).Seconds()/el.Seconds(), mib(s1.rss/int64(max(1, len(simProcs)))))
	fmt.Printf("  benchmark process (%d hosts, %d subscribers): CPU %.2f cores, RSS %s\n", len(hosts), nSubs, meCPU.Seconds()/el.Seconds(), mib(me1.rss))
	b.ReportMetric(float64(pct(0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(unreported+uint64(max(0, hostUnreported))), "unreported")
	b.ReportMetric(aggCPU.Seconds()/el.Seconds(), "agg-cores")
	b.ReportMetric(float64(a1.rss)/(1<<20), "agg-MiB")
	b.ReportMetric(perConnLoad/1024, "nats-KiB/conn")
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// varz is what the NATS nodes' /varz says, summed.
type varz struct {
	conns int
	mem   int64
}

func varzAll(monitors []string) varz {
	var v varz
	for _, m := range monitors {
		resp, err := http.Get(m + "/varz")
		if err != nil {
			continue
		}
		var x struct {
			Connections int   `json:"connections"`
			Mem         int64 `json:"mem"`
		}
		json.NewDecoder(resp.Body).Decode(&x)
		resp.Body.Close()
		v.conns += x.Connections
		v.mem += x.Mem
	}
	return v
}

func nodeUsage(nodes []*proc) usage {
	var u usage
	for _, p := range nodes {
		x, _ := procUsage(p.cmd.Process.Pid)
		u.cpu += x.cpu
		u.rss += x.rss
	}
	return u
}

// scrape reads a Prometheus text page: series (name with labels) → value.
func scrape(u, token string) map[string]float64 {
	out := map[string]float64{}
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 64<<20))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(l[i+1:], 64); err == nil {
			out[l[:i]] = v
		}
	}
	return out
}

// consumerLag is what the stream's consumers have not been delivered or
// have not acknowledged, as the cluster reports.
func consumerLag(monitors []string) string {
	for _, m := range monitors {
		resp, err := http.Get(m + "/jsz?consumers=true&accounts=true")
		if err != nil {
			continue
		}
		var x struct {
			Accounts []struct {
				Streams []struct {
					Name  string `json:"name"`
					State struct {
						Msgs uint64 `json:"messages"`
					} `json:"state"`
					Consumers []struct {
						Name       string `json:"name"`
						NumPending uint64 `json:"num_pending"`
						AckPending uint64 `json:"num_ack_pending"`
						Cluster    struct {
							Leader string `json:"leader"`
						} `json:"cluster"`
					} `json:"consumer_detail"`
				} `json:"stream_detail"`
			} `json:"account_details"`
		}
		json.NewDecoder(resp.Body).Decode(&x)
		resp.Body.Close()
		for _, a := range x.Accounts {
			for _, st := range a.Streams {
				for _, c := range st.Consumers {
					return fmt.Sprintf("stream %d messages, consumer %d not delivered, %d not acknowledged (leader %s)", st.State.Msgs, c.NumPending, c.AckPending, c.Cluster.Leader)
				}
			}
		}
	}
	return "consumer state unknown"
}

func must(u usage, _ error) usage { return u }

// histQuantile is the upper bound of the bucket of a Prometheus histogram
// that holds quantile q of the observations between two scrapes.
func histQuantile(before, after map[string]float64, name string, q float64) string {
	type bucket struct {
		le    float64
		label string
		n     float64
	}
	var bs []bucket
	prefix := name + `_bucket{le="`
	for k, v := range after {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		label := strings.TrimSuffix(strings.TrimPrefix(k, prefix), `"}`)
		le, err := strconv.ParseFloat(label, 64)
		if err != nil {
			continue // +Inf
		}
		bs = append(bs, bucket{le, label + "s", v - before[k]})
	}
	slices.SortFunc(bs, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
	total := after[name+"_count"] - before[name+"_count"]
	if total <= 0 {
		return "-"
	}
	for _, b := range bs {
		if b.n >= q*total {
			return b.label
		}
	}
	return "∞"
}

// machineCPU is the time all CPUs were busy and the total time, in
// clock ticks, from /proc/stat.
func machineCPU() (busy, all uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, v := range f[1:min(len(f), 9)] { // guest time is counted in user time already
		n, _ := strconv.ParseUint(v, 10, 64)
		all += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, all
}
