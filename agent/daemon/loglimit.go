package daemon

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// limitHandler passes at most one record per message (and scope, the
// attributes given to With) every interval, for WARN and above; the
// records it drops are counted in the next one it passes, as
// "not_logged". A failing disk makes the buffer log one line per append;
// this keeps that to a line per interval without hiding the first one.
type limitHandler struct {
	next  slog.Handler
	every time.Duration
	scope string
	st    *limitState
}

type limitState struct {
	mu   sync.Mutex
	seen map[string]*limitEntry
}

type limitEntry struct {
	last    time.Time
	dropped int
}

// maxLimitKeys bounds the state; messages are constants, so it is never
// reached in practice.
const maxLimitKeys = 1024

func newLimitHandler(next slog.Handler, every time.Duration) *limitHandler {
	return &limitHandler{next: next, every: every, st: &limitState{seen: map[string]*limitEntry{}}}
}

func (h *limitHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *limitHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return h.next.Handle(ctx, r)
	}
	key := h.scope + "\x00" + r.Message
	h.st.mu.Lock()
	e := h.st.seen[key]
	if e == nil {
		if len(h.st.seen) >= maxLimitKeys {
			clear(h.st.seen)
		}
		e = &limitEntry{}
		h.st.seen[key] = e
	}
	if !e.last.IsZero() && r.Time.Sub(e.last) < h.every {
		e.dropped++
		h.st.mu.Unlock()
		return nil
	}
	dropped := e.dropped
	e.last, e.dropped = r.Time, 0
	h.st.mu.Unlock()
	if dropped > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("not_logged", dropped))
	}
	return h.next.Handle(ctx, r)
}

func (h *limitHandler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.scope)
	for _, a := range as {
		b.WriteString(a.String())
		b.WriteByte(' ')
	}
	return &limitHandler{next: h.next.WithAttrs(as), every: h.every, scope: b.String(), st: h.st}
}

func (h *limitHandler) WithGroup(name string) slog.Handler {
	return &limitHandler{next: h.next.WithGroup(name), every: h.every, scope: h.scope + name + ".", st: h.st}
}
