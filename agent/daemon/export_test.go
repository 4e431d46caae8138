package daemon

// WithAppendFault makes the agent's appends fail with fault's error while
// it returns one, as a full disk does.
func WithAppendFault(o *Options, fault func() error) { o.appendFault = fault }
