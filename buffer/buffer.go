package buffer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/edgepipe/sensorpipe/buffer/reading"
)

// Options tunes a Buffer. The zero value is what the agent runs with.
type Options struct {
	// MaxBytes bounds the live bytes (keys + stored values). 0 means 256 MiB.
	// Past it, the oldest readings are folded into aggregates or dropped
	// (WhenFull), counted in Stats.Folded and Stats.DroppedBytes.
	// On 32-bit platforms it is capped at 256 MiB so the mmap fits the address space.
	MaxBytes int64
	// MaxAge drops readings whose (NTP-synced) timestamp is older. 0 means 720h.
	// Readings taken before the clock was synced are not aged (their ts is not
	// trusted) until Update fixes their timestamps; MaxBytes still bounds them.
	MaxAge time.Duration
	// WhenFull is what happens past MaxBytes: Downsample (the zero value)
	// folds the oldest readings into aggregates, Drop deletes them.
	WhenFull WhenFull
	// Logger receives drop, corruption and recovery events. nil discards.
	Logger *slog.Logger
	// LockTimeout is how long Open waits for another process's lock before
	// returning ErrLocked. 0 means 5s.
	LockTimeout time.Duration
	// FullCheckLimit: at Open, files up to this size get a full walk (every
	// record decoded); larger files get a quick structural check so a 256 MiB
	// buffer on an SD card does not delay start-up. 0 means 32 MiB; negative
	// means always quick.
	FullCheckLimit int64
	// AgeInterval is how often MaxAge is enforced. 0 means 1 minute.
	AgeInterval time.Duration
	// Now is the clock used for MaxAge and for the first seq of a fresh
	// buffer; nil means time.Now. Tests set it.
	Now func() time.Time
	// Hold, when set, is asked about every reading Peek or Wait comes to
	// that was taken while the clock was not synced: how much longer it must
	// be held back (<= 0: not held). Peek returns nothing from the first
	// held reading on, so the order is kept, and Wait does not return for
	// it until its hold ends or the buffer changes (an Update that corrects
	// it, say). The agent holds such readings so that their ts can be
	// corrected before they are published (agent/clock). Each, Last and the
	// CLI see every reading.
	Hold func(synced bool, boot reading.BootStamp) time.Duration
}

const (
	defaultMaxBytes       = 256 << 20
	maxBytes32            = 256 << 20
	defaultMaxAge         = 720 * time.Hour
	defaultLockTimeout    = 5 * time.Second
	defaultFullCheckLimit = 32 << 20
	defaultAgeInterval    = time.Minute
)

func (o Options) withDefaults() Options {
	if o.MaxBytes <= 0 {
		o.MaxBytes = defaultMaxBytes
	}
	if o.MaxAge <= 0 {
		o.MaxAge = defaultMaxAge
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = defaultLockTimeout
	}
	if o.FullCheckLimit == 0 {
		o.FullCheckLimit = defaultFullCheckLimit
	}
	if o.AgeInterval <= 0 {
		o.AgeInterval = defaultAgeInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Bucket and meta key names.
const (
	bucketReadings = "readings"
	bucketMeta     = "meta"
	metaCounters   = "counters"
	countersLen    = 4 * 8
)

// counters live in the meta bucket and are updated in the same transaction
// as the readings, so Stats is O(1) and always consistent with the data.
type counters struct {
	count        uint64
	live         uint64 // bytes of keys + values in the readings bucket
	droppedBytes uint64 // readings dropped by MaxBytes
	droppedAge   uint64 // readings dropped by MaxAge
}

func (c *counters) marshal() []byte {
	b := make([]byte, 0, countersLen)
	for _, v := range []uint64{c.count, c.live, c.droppedBytes, c.droppedAge} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return b
}

func loadCounters(tx *bolt.Tx) (counters, error) {
	mb := tx.Bucket([]byte(bucketMeta))
	if mb == nil {
		return counters{}, fmt.Errorf("%w: meta bucket missing", ErrCorrupt)
	}
	v := mb.Get([]byte(metaCounters))
	if v == nil {
		return counters{}, nil
	}
	if len(v) != countersLen {
		return counters{}, fmt.Errorf("%w: counters of %d bytes", ErrCorrupt, len(v))
	}
	be := binary.BigEndian
	return counters{be.Uint64(v), be.Uint64(v[8:]), be.Uint64(v[16:]), be.Uint64(v[24:])}, nil
}

func (c *counters) save(tx *bolt.Tx) error {
	return tx.Bucket([]byte(bucketMeta)).Put([]byte(metaCounters), c.marshal())
}

// Buffer is a durable FIFO of readings in one bbolt file and its log.
// Its methods are safe for concurrent use.
type Buffer struct {
	db       *bolt.DB
	wal      *os.File // nil when read-only
	walSize  int64    // bytes of the log file (preallocated, or grown by writes); writer only
	lastGrow time.Time
	path     string
	opts     Options
	log      *slog.Logger
	readOnly bool
	opened   time.Time // monotonic; when Open began

	mu sync.RWMutex // guards st; the writer holds it to change st, readers to read bbolt+st consistently
	st *state

	commitMu   sync.Mutex   // held by whoever commits: the writer goroutine, or a caller on the fast path
	commitLog  throttle     // under commitMu
	ckptLog    throttle     // under commitMu
	foldLog    throttle     // under commitMu
	lastCommit atomic.Int64 // Unix ns of the last commit, for the idle checkpoint

	reqs       chan *request
	foldKick   chan struct{} // wakes the writer for the pass foldWanted asks for
	foldWanted bool          // a commit left the buffer over MaxBytes: a downsampling pass is due; under commitMu
	chunkHook  func()        // tests: called before each chunk of a pass; nil otherwise
	heldExcl   *request      // an exclusive request that came during a pass, run after it; under commitMu
	quit       chan struct{}
	writerDone chan struct{}
	closeMu    sync.RWMutex
	closed     bool

	notifyMu sync.Mutex
	notify   chan struct{} // closed and replaced when readings are appended

	suspectMu  sync.Mutex
	suspects   map[uint64]struct{} // damaged records seen by readers, for the writer to move aside
	quarantine chan struct{}       // wakes the writer to move them
}

// Open opens or creates the buffer at path (and its log, path+".wal"),
// creating missing directories. A file bbolt cannot read, or that fails the
// open-time check, is renamed to <path>.corrupt-<UTC time> (logged as an
// error) and a fresh buffer is started; the caller keeps running. It
// returns ErrLocked when another process holds the file for longer than
// opts.LockTimeout.
func Open(path string, opts Options) (*Buffer, error) {
	opened := time.Now() // before the floor is read from opts.Now: see confirmFloor
	opts = opts.withDefaults()
	if unsafe.Sizeof(uintptr(0)) == 4 && opts.MaxBytes > maxBytes32 {
		opts.Logger.Warn("buffer max_bytes capped on a 32-bit system", "max_bytes", opts.MaxBytes, "cap", maxBytes32)
		opts.MaxBytes = maxBytes32
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("open buffer %s: %w", path, err)
	}
	db, st, err := openChecked(path, opts)
	recovered := false
	if err != nil && errors.Is(err, ErrCorrupt) {
		db, st, err = recoverCorrupt(path, opts, err)
		recovered = true
	}
	if err != nil {
		return nil, err
	}
	if st.next == 0 { // no seq ever handed out here: new, deleted, emptied or moved aside
		floor, evidence := freshFloor(path, opts.Now())
		st.startFresh(floor)
		opts.Logger.Info("new buffer: seqs start above the floor", "path", path,
			"next_seq", floor+1, "left_by_earlier_buffer", evidence)
	}
	if recovered { // after the floor: the old files were evidence for it
		trimCorrupt(path, opts.Logger)
	}
	b := &Buffer{
		db:         db,
		path:       path,
		opts:       opts,
		log:        opts.Logger,
		st:         st,
		opened:     opened,
		reqs:       make(chan *request, 1024),
		foldKick:   make(chan struct{}, 1),
		quit:       make(chan struct{}),
		writerDone: make(chan struct{}),
		notify:     make(chan struct{}),
		quarantine: make(chan struct{}, 1),
	}
	// Always start a new log epoch: whatever the old log holds past its
	// last intact record (a torn write) must never look valid again. On a
	// full disk bbolt may have no room for that; then the buffer runs on
	// in the log's current epoch, from its last intact record, as it does
	// between checkpoints, so that the agent still starts.
	if err := b.update(b.st.checkpointTx); isNoSpace(err) {
		opts.Logger.Warn("disk full: buffer starts without its checkpoint; the log keeps the data", "path", path, "err", err)
	} else if err != nil {
		db.Close()
		return nil, fmt.Errorf("open buffer %s: checkpoint: %w", path, err)
	} else {
		b.st.reset()
	}
	if b.wal, b.walSize, err = openWAL(path, opts.Logger); err != nil {
		db.Close()
		return nil, err
	}
	_ = b.moveDamaged(b.st.suspects) // logged; on failure they stay skipped, and the next Peek retries
	b.st.suspects = nil
	go b.writer()
	return b, nil
}

// boltOptions are shared by every open.
func boltOptions(readOnly bool, timeout time.Duration) *bolt.Options {
	return &bolt.Options{
		Timeout:      timeout,
		ReadOnly:     readOnly,
		FreelistType: bolt.FreelistMapType,
	}
}

// openChecked opens path read-write, creates the buckets, checks the file
// and replays the log. Errors caused by the file's content wrap ErrCorrupt.
func openChecked(path string, opts Options) (*bolt.DB, *state, error) {
	db, err := openBolt(path, boltOptions(false, opts.LockTimeout))
	if err != nil {
		return nil, nil, classifyOpenErr(path, err)
	}
	suspects, err := initAndCheck(db, path, opts)
	if err != nil {
		_ = db.Close()
		return nil, nil, err
	}
	st, err := loadFromDisk(db, path, opts.Logger)
	if err != nil {
		_ = db.Close()
		return nil, nil, err
	}
	st.suspects = suspects
	return db, st, nil
}

// loadFromDisk builds the state from bbolt and replays the log on top.
// Intact records found past the point where the replay had to stop mean
// the log was damaged, not torn by a crash: that is logged, never silent.
func loadFromDisk(db *bolt.DB, path string, logger *slog.Logger) (st *state, err error) {
	log, err := readWAL(path)
	if err != nil {
		return nil, fmt.Errorf("open buffer %s: read log: %w", path, err)
	}
	var lost int
	err = viewGuarded(db, func(tx *bolt.Tx) error {
		if st, err = loadState(tx); err != nil {
			return err
		}
		lost = st.replay(tx.Bucket([]byte(bucketReadings)), log)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open buffer %s: %w", path, err)
	}
	if lost > 0 {
		logger.Error("buffer log is damaged: records after the damage are lost",
			"path", walPath(path), "offset", st.walOff, "lost_records", lost)
	}
	return st, nil
}

// initAndCheck creates the buckets and runs the open-time check; it returns
// the seqs of damaged records it found.
func initAndCheck(db *bolt.DB, path string, opts Options) (damaged []uint64, err error) {
	defer guard(&err)()
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists([]byte(bucketReadings)); err != nil {
			return fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		if _, err := tx.CreateBucketIfNotExists([]byte(bucketMeta)); err != nil {
			return fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open buffer %s: %w", path, err)
	}
	full := opts.FullCheckLimit > 0 && fileSize(path) <= opts.FullCheckLimit
	err = db.View(func(tx *bolt.Tx) error {
		return checkTx(tx, path, full, func(seq uint64, _ error) { damaged = append(damaged, seq) })
	})
	return damaged, err
}

func viewGuarded(db *bolt.DB, fn func(tx *bolt.Tx) error) (err error) {
	defer guard(&err)()
	return db.View(fn)
}

// classifyOpenErr tells a damaged file (move it aside) from a problem of the
// environment (permissions, lock, full disk), which moving would not fix.
func classifyOpenErr(path string, err error) error {
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("open buffer %s: %w", path, ErrLocked)
	case errors.Is(err, fs.ErrPermission), errors.Is(err, fs.ErrNotExist), isEnvErrno(err):
		return wrapNoSpace(fmt.Errorf("open buffer %s: %w", path, err))
	default:
		return fmt.Errorf("open buffer %s: %w: %w", path, ErrCorrupt, err)
	}
}

// OpenReadOnly opens an existing buffer without writing to it, for the CLI.
// It waits at most timeout for the lock and returns ErrLocked while the
// agent holds the file. A missing file is an error wrapping fs.ErrNotExist.
// A damaged file is reported (ErrCorrupt), never moved.
func OpenReadOnly(path string, timeout time.Duration) (*Buffer, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("open buffer %s: %w", path, err)
	}
	if timeout <= 0 {
		timeout = 500 * time.Millisecond
	}
	db, err := openBolt(path, boltOptions(true, timeout))
	if err != nil {
		return nil, classifyOpenErr(path, err)
	}
	if err := viewGuarded(db, func(tx *bolt.Tx) error { return checkTx(tx, path, false, nil) }); err != nil {
		_ = db.Close()
		return nil, err
	}
	st, err := loadFromDisk(db, path, slog.New(slog.DiscardHandler))
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return &Buffer{db: db, path: path, readOnly: true, opts: Options{}.withDefaults(), st: st,
		log: slog.New(slog.DiscardHandler), quit: make(chan struct{}), notify: make(chan struct{})}, nil
}

// Path is the buffer's file.
func (b *Buffer) Path() string { return b.path }

// Close stops the writer after committing what was already accepted, and
// closes the file. Waiters return ErrClosed.
func (b *Buffer) Close() error {
	b.closeMu.Lock()
	if b.closed {
		b.closeMu.Unlock()
		return ErrClosed
	}
	b.closed = true
	b.closeMu.Unlock()
	close(b.quit)
	if b.writerDone != nil {
		<-b.writerDone
	}
	if b.wal != nil {
		_ = b.wal.Close()
	}
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("close buffer %s: %w", b.path, err)
	}
	return nil
}

// read runs fn with the state and a bbolt read transaction, consistently
// (the writer cannot change either meanwhile), turning a panic or a memory
// fault from a damaged file into an error wrapping ErrCorrupt.
func (b *Buffer) read(fn func(s *state, tx *bolt.Tx) error) (err error) {
	b.closeMu.RLock()
	defer b.closeMu.RUnlock()
	if b.closed {
		return ErrClosed
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	defer guard(&err)()
	return b.db.View(func(tx *bolt.Tx) error { return fn(b.st, tx) })
}

// Peek returns up to n of the oldest records with Seq > after, oldest first.
// Payloads are copies, valid after the call.
func (b *Buffer) Peek(after uint64, n int) ([]Record, error) {
	if n <= 0 {
		return nil, nil
	}
	out, err := b.collect(after, ^uint64(0), n, true)
	if err != nil {
		return nil, fmt.Errorf("peek buffer: %w", err)
	}
	return out, nil
}

// arenaSize is what collect allocates at a time for the payloads it copies.
const arenaSize = 4 << 10

// collect returns up to n records with after < seq <= to, oldest first,
// stopping before the first held one if hold is set.
func (b *Buffer) collect(after, to uint64, n int, hold bool) ([]Record, error) {
	var out []Record
	err := b.read(func(s *state, tx *bolt.Tx) error {
		var arena []byte
		return s.each(tx.Bucket([]byte(bucketReadings)), after, min(to, s.durable), func(seq uint64, v []byte) bool {
			h, err := parseValue(v)
			if err != nil { // damaged: never handed out; the writer moves it aside (a newer format's: kept)
				b.noteBad(seq, err)
				return true
			}
			if hold && b.held(h) > 0 {
				return false
			}
			// Small arenas: a record's payload keeps its whole arena alive
			// while the record is in flight (paho holds it until the
			// PUBACK), so a 32 KiB arena held ~130 payloads' worth per
			// straggler; 4 KiB pins 16.
			if cap(arena)-len(arena) < len(h.payload) {
				arena = make([]byte, 0, max(arenaSize, len(h.payload)))
			}
			start := len(arena)
			arena = append(arena, h.payload...)
			out = append(out, Record{Seq: seq, Sensor: string(h.sensor), Payload: arena[start:len(arena):len(arena)]})
			return len(out) < n
		})
	})
	return out, err
}

// Wait blocks until a record with Seq > after exists that Peek would
// return (not held back, see Options.Hold), ctx ends or the buffer is
// closed.
func (b *Buffer) Wait(ctx context.Context, after uint64) error {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		b.notifyMu.Lock()
		ch := b.notify
		b.notifyMu.Unlock()
		var found bool
		var holdFor time.Duration
		err := b.read(func(s *state, tx *bolt.Tx) error {
			return s.each(tx.Bucket([]byte(bucketReadings)), after, s.durable, func(_ uint64, v []byte) bool {
				h, err := parseValue(v)
				if isNewer(err) { // never published: Peek skips it
					return true
				}
				found = true
				if err == nil {
					holdFor = b.held(h)
				}
				return false
			})
		})
		if err != nil || found && holdFor <= 0 {
			return err
		}
		var expired <-chan time.Time
		if holdFor > 0 {
			if timer == nil {
				timer = time.NewTimer(holdFor)
			} else {
				timer.Reset(holdFor)
			}
			expired = timer.C
		}
		select {
		case <-ch:
		case <-expired:
		case <-ctx.Done():
			return ctx.Err()
		case <-b.quit:
			return ErrClosed
		}
	}
}

// held is how much longer the reading with header h is held back.
func (b *Buffer) held(h header) time.Duration {
	if h.synced || b.opts.Hold == nil {
		return 0
	}
	return b.opts.Hold(false, h.boot)
}

func (b *Buffer) wake() {
	b.notifyMu.Lock()
	close(b.notify)
	b.notify = make(chan struct{})
	b.notifyMu.Unlock()
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
