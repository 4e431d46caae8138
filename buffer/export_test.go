package buffer

// Settle waits for a downsampling pass in progress, and runs the one a
// commit asked for if the writer has not started it, as the writer would.
// Tests that append on a fake clock call it after each append: passes
// then run between appends, as they do when readings come a few a second.
func (b *Buffer) Settle() {
	b.commitMu.Lock()
	defer b.commitMu.Unlock()
	b.runPass()
}

// OnChunk sets a function the writer calls before each chunk of a
// downsampling pass (with commitMu held). Set it before the pass starts.
func (b *Buffer) OnChunk(fn func()) {
	b.commitMu.Lock()
	defer b.commitMu.Unlock()
	b.chunkHook = fn
}

// Waiting is how many requests wait for the writer.
func (b *Buffer) Waiting() int { return len(b.reqs) }
