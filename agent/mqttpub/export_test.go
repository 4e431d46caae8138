package mqttpub

// LedgerEntries is how many entries p's ledger holds: its map, send order
// (stale items included), due list and delete queue.
func LedgerEntries(p *Publisher) int { return ledgerEntries(p.led) }
