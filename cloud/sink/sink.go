package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"golang.org/x/sync/errgroup"

	"github.com/edgepipe/sensorpipe/buffer/reading"
	"github.com/edgepipe/sensorpipe/cloud/config"
	"github.com/edgepipe/sensorpipe/cloud/kafkaout"
	"github.com/edgepipe/sensorpipe/cloud/sink/schema"
	"github.com/edgepipe/sensorpipe/cloud/statushttp"
)

// Options are the parts of a Sink that do not come from configuration.
type Options struct {
	Logger  *slog.Logger // nil = discard
	Version string       // shown in the startup log line
	// Listening, if set, is called with the bound address of the HTTP
	// server (useful with SINK_LISTEN=127.0.0.1:0).
	Listening func(addr string)
}

// shutdownGrace is how long a stop waits for the batch in hand to be
// stored and committed; past it the batch is abandoned uncommitted (it is
// consumed again by the next owner of its partitions).
const shutdownGrace = 5 * time.Second

// connectTimeout bounds one attempt to connect to PostgreSQL.
const connectTimeout = 15 * time.Second

// Sink is one Kafka-to-PostgreSQL writer. Create it with New and call Run once.
type Sink struct {
	cfg *config.Sink
	log *slog.Logger
	// connectTimeout bounds a connection attempt (and preparing the new
	// session); migrate tunes the schema migration, which connectTimeout
	// does not bound.
	connectTimeout time.Duration
	migrate        schema.Options
	opts           Options
	m              *metrics
	sm             *statusMetrics
	dbCfg          *pgx.ConnConfig
	kopts          []kgo.Opt

	dbUp     atomic.Bool
	kafkaUp  atomic.Bool
	migrated atomic.Bool
	own      partitions
	// rebalance is set when the group waits on us for a rebalance; wakePoll
	// cancels the poll in progress so the consume loop sees it at once.
	rebalance atomic.Bool
	wakePoll  atomic.Pointer[context.CancelFunc]
}

// New checks what can be checked without the network and returns a Sink.
func New(cfg *config.Sink, opts Options) (*Sink, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	// Parsed and checked again, not taken on trust from LoadSink: pgx
	// reads the environment and service files at each parse.
	dbCfg, err := config.DatabaseConfig(cfg.DatabaseURL.Reveal())
	if err != nil {
		return nil, err
	}
	if dbCfg.RuntimeParams["application_name"] == "" {
		dbCfg.RuntimeParams["application_name"] = "cloud-forwarder-sink"
	}
	s := &Sink{cfg: cfg, log: opts.Logger, opts: opts, m: newMetrics(), dbCfg: dbCfg,
		connectTimeout: connectTimeout, migrate: schema.Options{LockTimeout: schema.DefaultLockTimeout}}
	s.sm = s.m.status()
	if s.kopts, err = s.kafkaOptions(); err != nil {
		return nil, err
	}
	return s, nil
}

// kafkaOptions are the consumer's settings: the group, TLS and SASL as for
// `run`, manual commits, and bounded fetch buffers.
func (s *Sink) kafkaOptions() ([]kgo.Opt, error) {
	k := s.cfg.Kafka
	opts, err := s.kafkaConn()
	if err != nil {
		return nil, err
	}
	return append(opts,
		kgo.ClientID("cloud-forwarder-sink"),
		kgo.ConsumerGroup(s.cfg.Group),
		kgo.ConsumeTopics(k.Topic),
		// A new group starts at the oldest record: the table is meant to
		// hold every reading the topic still has.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		// Offsets are committed by the consume loop after the rows are;
		// blocking rebalances meanwhile means a commit never lands on a
		// partition that moved to another replica during the batch.
		kgo.BlockRebalanceOnPoll(),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		// A replica that died without leaving the group (SIGKILL, power
		// cut) holds its partitions until this passes: 10 s instead of
		// kgo's 45 s, within the brokers' usual 6 s to 30 min bounds.
		kgo.SessionTimeout(10*time.Second),
		kgo.HeartbeatInterval(2*time.Second),
		// Bound what is fetched ahead of the database: this is most of
		// the sink's memory. The limits count compressed bytes, and our
		// JSON compresses about 8:1 with snappy, so 256 KiB is some 8,000
		// readings, more than one batch.
		kgo.FetchMaxBytes(256<<10),
		kgo.FetchMaxPartitionBytes(128<<10),
		kgo.MaxConcurrentFetches(1),
		// With one fetch at a time, a fetch for partitions that have
		// nothing left waits this long at the broker while a lane's paused
		// partitions, resumed meanwhile, wait behind it: at 500 ms (kgo's
		// and Java's default) a third of BenchmarkSink's rounds stalled
		// ~350 ms (114k -> 78k rows/s). Caught up, it costs an empty
		// fetch every 100 ms; new records still come back at once.
		kgo.FetchMaxWait(100*time.Millisecond),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			s.log.Info("kafka partitions assigned", "partitions", m)
			s.own.add(m[s.cfg.Kafka.Topic])
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { s.forget("revoked", m) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { s.forget("lost", m) }),
		kgo.OnPartitionsCallbackBlocked(func(context.Context, *kgo.Client) {
			s.rebalance.Store(true)
			s.wake()
		}),
	), nil
}

// kafkaConn are the settings of a connection to the cluster, as for `run`:
// the bootstrap brokers, TLS and SASL, and the logger.
func (s *Sink) kafkaConn() ([]kgo.Opt, error) {
	k := s.cfg.Kafka
	opts := []kgo.Opt{kgo.SeedBrokers(k.Bootstrap...), kgo.WithLogger(kgoLogger{s.log})}
	tc, err := kafkaout.TLSConfig(k)
	if err != nil {
		return nil, fmt.Errorf("kafka tls: %w", err)
	}
	if tc != nil {
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if k.SecurityProtocol == config.SASLSSL {
		opts = append(opts, kgo.SASL(plain.Auth{User: k.APIKey, Pass: k.APISecret.Reveal()}.AsMechanism()))
	}
	return opts, nil
}

func (s *Sink) forget(how string, m map[string][]int32) {
	s.log.Info("kafka partitions "+how, "partitions", m)
	ps := m[s.cfg.Kafka.Topic]
	s.own.remove(ps)
	for _, p := range ps {
		s.m.dropLag(s.cfg.Kafka.Topic, p)
	}
}

// Ready reports whether the sink can store readings: the schema is in
// place, PostgreSQL takes writes and Kafka answers.
func (s *Sink) Ready() bool { return s.migrated.Load() && s.dbUp.Load() && s.kafkaUp.Load() }

func (s *Sink) notReady() string {
	return fmt.Sprintf("schema_ready=%t db_ready=%t kafka_ready=%t", s.migrated.Load(), s.dbUp.Load(), s.kafkaUp.Load())
}

// Run consumes and stores until ctx is cancelled, then stores the batch in
// hand (for up to 5 s), commits it, leaves the group and returns.
func (s *Sink) Run(ctx context.Context) error {
	srv, err := statushttp.Listen(s.cfg.Listen, statushttp.Handler(s.m.reg, s.cfg.Pprof, func() (bool, string) {
		return s.Ready(), s.notReady()
	}))
	if err != nil {
		return err
	}
	if s.opts.Listening != nil {
		s.opts.Listening(srv.Addr())
	}
	var g errgroup.Group
	g.Go(srv.Serve)
	defer func() {
		srv.Shutdown()
		_ = g.Wait()
	}()
	s.log.Info("sink starting", "version", s.opts.Version, "kafka", s.cfg.Kafka.Bootstrap, "topic", s.cfg.Kafka.Topic,
		"group", s.cfg.Group, "security_protocol", s.cfg.Kafka.SecurityProtocol, "database", s.dbCfg.Host,
		"retention", s.cfg.Retention.String(), "listen", srv.Addr())

	if !s.migrateSchema(ctx) {
		return nil // stopped before the schema was in place
	}

	cl, err := kgo.NewClient(s.kopts...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer func() {
		// Leaving the group hands our partitions to the other replicas at once.
		done := make(chan struct{})
		go func() { cl.CloseAllowingRebalance(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			s.log.Warn("kafka client did not close within 5s")
		}
	}()
	bg, bgCtx := errgroup.WithContext(ctx)
	bg.Go(func() error { s.probeKafka(bgCtx, cl); return nil })
	bg.Go(func() error { s.probeDB(bgCtx); return nil })
	if s.cfg.Retention > 0 {
		bg.Go(func() error { s.retain(bgCtx); return nil })
	}
	if s.cfg.Kafka.StatusTopic != "" {
		bg.Go(func() error { s.runStatus(bgCtx); return nil })
	}
	err = s.consume(ctx, cl)
	_ = bg.Wait()
	s.log.Info("sink stopped")
	return err
}

// wake cancels the poll in progress, if any, so the consume loop looks at
// its lanes and the group at once.
func (s *Sink) wake() {
	if cancel := s.wakePoll.Load(); cancel != nil {
		(*cancel)()
	}
}

// batch is records of one poll that go to one lane, and the rows decoded
// from them (by the lane).
type batch struct {
	recs []*kgo.Record
	rows []row
}

// lane is one writer goroutine with its own PostgreSQL session. Each
// partition always goes to the same lane, which stores its batches in
// order and commits each batch's offsets after the batch's transaction,
// so a partition's offsets only move past rows that are committed.
type lane struct {
	w    writer
	work chan *batch // one batch waits here while the lane writes the one before
	// backlogged is set while the consume loop holds batches for this
	// lane that did not fit in work: the lane then wakes the loop's poll
	// each time it takes one.
	backlogged atomic.Bool
}

// laneOf is the lane of a partition: fixed for the life of the consume
// loop, so a partition's batches never race each other.
func laneOf(partition int32, lanes int) int { return int(partition) % lanes }

// consume polls batches and hands each partition's records to its lane
// (SINK_WRITERS lanes, each on its own database session), so several
// partitions are written at once and PostgreSQL works while the next poll
// is fetched. A lane decodes, stores and then commits the offsets of its
// batch; at most two of its batches are in hand (one being written, one
// waiting). When a lane is behind, the loop keeps what it polled for it
// (at most one poll's share) and pauses fetching its partitions, so a
// slow or blocked lane does not stop the others. Rebalances stay blocked
// while any batch is in hand; when the group wants one
// (OnPartitionsCallbackBlocked), or when the lanes have caught up, the
// loop lets it happen.
func (s *Sink) consume(ctx context.Context, cl *kgo.Client) error {
	// hard outlives ctx by shutdownGrace, so the batches in hand can finish.
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(shutdownGrace, cancelHard) })
	defer stop()

	n := max(s.cfg.Writers, 1)
	lanes := make([]*lane, n)
	done := make(chan bool, 2*n) // one per batch: stored (and commit tried), or abandoned
	var wg sync.WaitGroup
	for i := range lanes {
		l := &lane{work: make(chan *batch, 1)}
		lanes[i] = l
		wg.Go(func() { s.runLane(ctx, hard, cl, l, done) })
	}
	var (
		inHand    int                   // batches handed to lanes and not yet settled
		abandoned bool                  // a lane stopped before storing a batch
		backlog   = make([][]*batch, n) // polled for a lane, not yet handed to it
		paused    = make([][]int32, n)  // partitions paused because their lane has a backlog
		topic     = s.cfg.Kafka.Topic
	)
	settle := func(ok bool) {
		inHand--
		abandoned = abandoned || !ok
	}
	// feed hands each lane what fits of its backlog, and resumes the
	// partitions of a lane whose backlog is gone.
	feed := func() {
		for i, l := range lanes {
			for len(backlog[i]) > 0 {
				select {
				case l.work <- backlog[i][0]:
					inHand++
					backlog[i] = backlog[i][1:]
					continue
				default:
				}
				break
			}
			if len(backlog[i]) == 0 {
				l.backlogged.Store(false)
				if len(paused[i]) > 0 {
					cl.ResumeFetchPartitions(map[string][]int32{topic: paused[i]})
					paused[i] = nil
				}
			}
		}
	}
	idle := func() bool {
		for i := range lanes {
			if len(backlog[i]) > 0 {
				return false
			}
		}
		return inHand == 0
	}
	defer func() {
		for _, l := range lanes {
			close(l.work)
		}
		wg.Wait()
		for len(done) > 0 {
			settle(<-done)
		}
		cl.AllowRebalance()
	}()
	for ctx.Err() == nil && !abandoned {
		// Collect finished batches, refill the lanes; with nothing in
		// hand a rebalance may run.
		for more := true; more; {
			select {
			case ok := <-done:
				settle(ok)
			default:
				more = false
			}
		}
		feed()
		if s.rebalance.Load() {
			for !idle() && !abandoned {
				settle(<-done)
				feed()
			}
			s.rebalance.Store(false)
		}
		if idle() {
			cl.AllowRebalance()
		}
		if !slices.ContainsFunc(backlog, func(b []*batch) bool { return len(b) == 0 }) {
			settle(<-done) // every lane is behind: wait for one, then feed it
			continue
		}
		pctx, cancel := context.WithCancel(ctx)
		s.wakePoll.Store(&cancel)
		if (s.rebalance.Load() && !idle()) || len(done) > 0 {
			cancel() // the group asked, or a lane finished, since the checks above
		}
		fs := cl.PollRecords(pctx, s.cfg.BatchSize*n)
		s.wakePoll.Store(nil)
		cancel()
		if ctx.Err() != nil || fs.IsClientClosed() {
			return nil
		}
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				s.log.Warn("kafka fetch error", "topic", t, "partition", p, "err", err)
			}
		})
		for i, bs := range split(fs, n, s.cfg.BatchSize) {
			backlog[i] = append(backlog[i], bs...)
		}
		feed()
		for i, l := range lanes {
			if len(backlog[i]) == 0 || len(paused[i]) > 0 {
				continue
			}
			l.backlogged.Store(true)
			paused[i] = lanePartitions(backlog[i], s.own.list(), i, n)
			cl.PauseFetchPartitions(map[string][]int32{topic: paused[i]})
		}
	}
	return nil
}

// lanePartitions are the partitions of lane i: those it owns and those
// with records in its backlog.
func lanePartitions(backlog []*batch, owned []int32, i, lanes int) []int32 {
	var ps []int32
	for _, p := range owned {
		if laneOf(p, lanes) == i {
			ps = append(ps, p)
		}
	}
	for _, b := range backlog {
		for _, r := range b.recs {
			if !slices.Contains(ps, r.Partition) {
				ps = append(ps, r.Partition)
			}
		}
	}
	return ps
}

// split sorts a poll's records into batches per lane, each partition's
// records in order and at most size records a batch.
func split(fs kgo.Fetches, lanes, size int) [][]*batch {
	out := make([][]*batch, lanes)
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		i := laneOf(p.Partition, lanes)
		for _, rec := range p.Records {
			bs := out[i]
			if len(bs) == 0 || len(bs[len(bs)-1].recs) == size {
				bs = append(bs, &batch{recs: make([]*kgo.Record, 0, min(size, len(p.Records)))})
				out[i] = bs
			}
			b := bs[len(bs)-1]
			b.recs = append(b.recs, rec)
		}
	})
	return out
}

// runLane stores the lane's batches in order until its work channel is
// closed. Once a batch is abandoned (the sink stopping before it was
// stored), the lane writes nothing more: a later batch of the same
// partition must not commit offsets past rows that are not in the table.
func (s *Sink) runLane(ctx, hard context.Context, cl *kgo.Client, l *lane, done chan<- bool) {
	defer l.w.close(hard)
	ok := true
	for b := range l.work {
		ok = ok && s.storeAndCommit(ctx, hard, cl, &l.w, b)
		done <- ok
		if l.backlogged.Load() {
			s.wake() // the consume loop has more for this lane
		}
	}
}

// storeAndCommit decodes b, writes its rows and then commits its offsets.
// It returns false if the sink is stopping with b not stored (its offsets
// stay where they were, so the next owner of its partitions consumes it
// again).
func (s *Sink) storeAndCommit(ctx, hard context.Context, cl *kgo.Client, w *writer, b *batch) bool {
	start := time.Now()
	b.rows = s.decode(b.recs)
	if !s.store(ctx, hard, w, b.rows) {
		return false
	}
	if err := cl.CommitRecords(hard, b.recs...); err != nil {
		s.m.commitErrs.Inc()
		s.log.Warn("kafka offset commit failed; the batch will be consumed again and its rows dropped as duplicates",
			"records", len(b.recs), "err", err)
	}
	s.m.records.Add(len(b.recs))
	s.m.batchTime.UpdateDuration(start)
	return true
}

// decode turns records into rows, skipping (counting and logging) those
// that are not readings or do not fit the table.
func (s *Sink) decode(recs []*kgo.Record) []row {
	rows := make([]row, 0, len(recs))
	arena := make([]byte, 0, 64*len(recs))
	for _, rec := range recs {
		src := Source{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset}
		r, err := reading.Decode(rec.Value)
		if err != nil {
			s.skip(reasonDecode, src, err)
			continue
		}
		var rw row
		rw, arena, err = newRow(&r, src, arena)
		if err != nil {
			s.skip(reasonColumn, src, err)
			continue
		}
		rows = append(rows, rw)
	}
	return rows
}

// store writes rows on w, retrying with backoff while PostgreSQL is
// unreachable. It returns false if ctx ended first (or hard, the grace
// after it), with the rows not stored.
func (s *Sink) store(ctx, hard context.Context, w *writer, rows []row) bool {
	for {
		if !s.connect(ctx, w) {
			return false
		}
		res, err := w.write(hard, rows, func(r row, err error) { s.skip(reasonRefused, r.src, err) })
		s.m.rows.AddInt64(res.inserted)
		s.m.duplicates.AddInt64(res.dups)
		s.m.batches.Add(res.batches)
		if err == nil {
			s.dbOK(w)
			return true
		}
		s.dbFailed(w, "write failed; retrying the batch", err)
		// A failure that left the session usable (statement timeout, disk
		// full): start the next attempt on a fresh one anyway.
		w.close(hard)
		if ctx.Err() != nil || !sleep(ctx, w.backoff()) {
			return false
		}
	}
}

func (s *Sink) skip(reason string, src Source, err error) {
	s.m.skipped[reason].Inc()
	s.log.Warn("skipping a record", "reason", reason, "topic", src.Topic, "partition", src.Partition, "offset", src.Offset, "err", err)
}

// connect makes sure w has a usable session, retrying with backoff. It
// returns false if ctx ended before it had one.
func (s *Sink) connect(ctx context.Context, w *writer) bool {
	for w.conn == nil || w.conn.IsClosed() {
		err := s.open(ctx, w)
		if err == nil {
			s.dbOK(w)
			return true
		}
		s.dbFailed(w, "database not reachable; retrying", err)
		if !sleep(ctx, w.backoff()) {
			return false
		}
	}
	return true
}

// open connects w, bounded by connectTimeout, and prepares its session.
func (s *Sink) open(ctx context.Context, w *writer) error {
	cctx, cancel := context.WithTimeout(ctx, s.connectTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, s.dbCfg)
	if err != nil {
		return err
	}
	w.conn = conn
	if err := w.prepare(cctx); err != nil {
		w.close(ctx)
		return err
	}
	return nil
}

// migrateSchema creates or migrates the schema on a session of its own,
// retrying with backoff until it is done. It returns false if ctx ended
// first.
func (s *Sink) migrateSchema(ctx context.Context) bool {
	var w writer // for its failure count; the session is closed after each try
	for {
		err := s.migrateOnce(ctx)
		if err == nil {
			s.dbOK(&w)
			return true
		}
		msg := "schema migration failed; retrying"
		switch {
		case errors.Is(err, schema.ErrTooNew):
			s.log.Error("refusing to write", "err", err)
			msg = "schema newer than this sink; retrying"
		case errors.Is(err, schema.ErrLockTimeout):
			msg = "schema migration waited too long for a lock; retrying"
		case errors.Is(err, errConnect):
			msg = "database not reachable; retrying"
		}
		s.dbFailed(&w, msg, err)
		if !sleep(ctx, w.backoff()) {
			return false
		}
	}
}

// errConnect marks migrateOnce's failures to connect.
var errConnect = errors.New("connect")

// migrateOnce connects, bounded by connectTimeout, and migrates. The
// migration runs on ctx alone: it may take as long as it needs (a later
// migration may build an index on a big table), while each of its waits
// for a lock ends after migrate.LockTimeout with schema.ErrLockTimeout, so
// a sink behind another one's migration, or behind a long query, says so
// and tries again instead of hanging.
func (s *Sink) migrateOnce(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, s.connectTimeout)
	conn, err := pgx.ConnectConfig(cctx, s.dbCfg)
	cancel()
	if err != nil {
		return fmt.Errorf("%w: %w", errConnect, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	from, to, err := schema.Migrate(ctx, conn, &s.migrate)
	if err != nil {
		return fmt.Errorf("migrate the schema: %w", err)
	}
	if from != to {
		s.log.Info("schema migrated", "from", from, "to", to)
	}
	s.migrated.Store(true)
	return nil
}

func (s *Sink) dbOK(w *writer) {
	if !s.dbUp.Swap(true) || w.fails > 0 {
		s.log.Info("database ready")
	}
	w.fails = 0
	s.m.dbUp.Set(1)
}

func (s *Sink) dbFailed(w *writer, msg string, err error) {
	s.m.dbErrors.Inc()
	s.dbUp.Store(false)
	s.m.dbUp.Set(0)
	w.fails++
	if w.fails == 1 || w.fails%10 == 0 {
		s.log.Warn(msg, "failures", w.fails, "retry_in", w.backoff(), "err", err)
	}
}

// probeKafka asks a broker for its API versions every few seconds, so
// /readyz tells a Kafka outage even while there is nothing to consume, and
// then updates the lag of the partitions this replica owns.
func (s *Sink) probeKafka(ctx context.Context, cl *kgo.Client) {
	for first := true; ; first = false {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := cl.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		up := err == nil
		if s.kafkaUp.Swap(up) != up || (first && !up) {
			if up {
				s.log.Info("kafka reachable")
			} else {
				s.log.Warn("kafka not reachable", "bootstrap", s.cfg.Kafka.Bootstrap, "err", err)
			}
		}
		s.m.kafkaUp.Set(map[bool]float64{false: 0, true: 1}[up])
		if up {
			if err := s.updateLag(ctx, cl); err != nil && ctx.Err() == nil {
				s.log.Debug("lag not updated", "err", err)
			}
		}
		if !sleep(ctx, 2*time.Second) {
			return
		}
	}
}

// probeDB pings PostgreSQL every few seconds on a connection of its own,
// so /readyz tells a database outage even while there is nothing to write
// (the writer's own failures and successes also set it).
func (s *Sink) probeDB(ctx context.Context) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	for sleep(ctx, 2*time.Second) {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var err error
		if conn == nil || conn.IsClosed() {
			conn, err = pgx.ConnectConfig(pctx, s.dbCfg)
		}
		if err == nil {
			err = conn.Ping(pctx)
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if conn != nil {
				conn.Close(context.WithoutCancel(ctx))
				conn = nil
			}
			if s.dbUp.Swap(false) {
				s.m.dbUp.Set(0)
				s.log.Warn("database not reachable", "err", err)
			}
			continue
		}
		if !s.dbUp.Swap(true) {
			s.m.dbUp.Set(1)
			s.log.Info("database reachable")
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// kgoLogger sends franz-go's warnings and errors to slog.
type kgoLogger struct{ l *slog.Logger }

func (k kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lv := slog.LevelWarn
	if level == kgo.LogLevelError {
		lv = slog.LevelError
	}
	k.l.Log(context.Background(), lv, "kafka: "+msg, keyvals...)
}
