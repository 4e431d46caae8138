// Package config reads the cloud-forwarder's configuration from the
// environment (12-factor) and, optionally, from a YAML file whose keys are
// the same names in lower case (hivemq_url: ...). The environment wins over
// the file. Load validates everything once; the rest of the program reads
// only the typed Config and never looks at the environment again. LoadKafka
// is the subset `tail` needs; LoadSink is `sink`'s (the same Kafka settings,
// DATABASE_URL and SINK_*).
//
// It does not connect to anything: that is package forwarder's (and sink's) job.
//
// Example:
//
//	cfg, err := config.Load("", os.Getenv)
//	if errors.Is(err, config.ErrInvalid) { /* exit 2; err names the variable */ }
package config
