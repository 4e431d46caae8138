package dht

// Failures counts failed measurement attempts since New, including those a
// retry recovered from and out-of-range values. Only tests read it: the
// agent counts failed Reads itself.
func (s *Sensor) Failures() uint64 { return s.failures.Load() }
