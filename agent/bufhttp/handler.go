package bufhttp

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"path"
	"strconv"
	"time"

	"github.com/edgepipe/sensorpipe/buffer"
)

// Delivery is what a running agent adds to the buffer's stats: how the
// buffered readings split between waiting to be sent and sent but not yet
// confirmed (delivery: kafka).
type Delivery struct {
	Mode              string    `json:"mode"`               // kafka or broker
	Waiting           uint64    `json:"waiting"`            // not sent yet (or to be sent again)
	SentUnconfirmed   uint64    `json:"sent_unconfirmed"`   // published, no confirmation yet
	ConfirmedDeleting uint64    `json:"confirmed_deleting"` // delivered, delete under way
	OldestUnconfirmed time.Time `json:"oldest_unconfirmed,omitzero"`
	LastConfirm       time.Time `json:"last_confirm,omitzero"`
}

// Stats is the answer of /buffer/stats and of `edge-agent buffer stats
// --json`: the buffer's own figures, plus Delivery when the running agent
// answers.
type Stats struct {
	buffer.Stats
	Delivery *Delivery `json:"delivery,omitempty"`
}

// Handler serves the buffer's debug endpoint. Mount it at /buffer/ (with or
// without http.StripPrefix); it answers GET .../stats (JSON Stats),
// .../list?n=N[&newest=1] and .../export[?from=SEQ][&to=SEQ] (JSON lines of
// wire-format readings, oldest first). delivery, when not nil, reports the
// publisher's view for stats; Waiting is computed here.
func Handler(b *buffer.Buffer, delivery func() Delivery) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		var err error
		switch path.Base(r.URL.Path) {
		case "stats":
			err = serveStats(w, b, delivery)
		case "list":
			err = serveList(w, r, b)
		case "export":
			err = serveExport(w, r, b)
		default:
			http.Error(w, "not found: use /buffer/stats, /buffer/list or /buffer/export", http.StatusNotFound)
			return
		}
		if errors.Is(err, errBadQuery) {
			http.Error(w, err.Error(), http.StatusBadRequest)
		} else if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
}

var errBadQuery = errors.New("bad query")

// List limits: list holds the readings in memory, in the agent too when it
// answers; export streams.
const (
	DefaultListN = 20
	MaxListN     = 10000
)

func serveStats(w http.ResponseWriter, b *buffer.Buffer, delivery func() Delivery) error {
	bst, err := b.Stats()
	if err != nil {
		return err
	}
	st := Stats{Stats: bst}
	if delivery != nil {
		d := delivery()
		held := d.SentUnconfirmed + d.ConfirmedDeleting
		d.Waiting = bst.Count - min(bst.Count, held)
		st.Delivery = &d
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(st)
}

func queryUint(r *http.Request, key string, def uint64) (uint64, error) {
	s := r.URL.Query().Get(key)
	if s == "" {
		return def, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s=%q is not a number", errBadQuery, key, s)
	}
	return v, nil
}

func serveList(w http.ResponseWriter, r *http.Request, b *buffer.Buffer) error {
	n, err := queryUint(r, "n", DefaultListN)
	if err != nil {
		return err
	}
	if n > MaxListN {
		return fmt.Errorf("%w: n is limited to %d (use export)", errBadQuery, MaxListN)
	}
	newest, _ := strconv.ParseBool(r.URL.Query().Get("newest"))
	recs, err := ListRecords(b, int(n), newest)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	bw := bufio.NewWriter(w)
	for _, rec := range recs {
		bw.Write(rec.Payload)
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

func serveExport(w http.ResponseWriter, r *http.Request, b *buffer.Buffer) error {
	from, err := queryUint(r, "from", 0)
	if err != nil {
		return err
	}
	to, err := queryUint(r, "to", math.MaxUint64)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	bw := bufio.NewWriterSize(w, 64<<10)
	wrote := false
	err = b.Each(r.Context(), from, to, func(_ uint64, payload []byte) error {
		wrote = true
		bw.Write(payload)
		return bw.WriteByte('\n')
	})
	if err != nil && wrote {
		// The status line is gone; cut the stream so the client sees a
		// truncated body rather than a silent short export.
		panic(http.ErrAbortHandler)
	}
	if err != nil {
		return err
	}
	return bw.Flush()
}

// ListRecords returns n records, oldest first: the oldest n, or the newest n.
func ListRecords(b *buffer.Buffer, n int, newest bool) ([]buffer.Record, error) {
	if !newest {
		return b.Peek(0, n)
	}
	recs, err := b.Last(n)
	for i, j := 0, len(recs)-1; i < j; i, j = i+1, j-1 {
		recs[i], recs[j] = recs[j], recs[i]
	}
	return recs, err
}
