// Package kafkaout holds what every command's Kafka client shares: the TLS
// settings (KAFKA_SECURITY_PROTOCOL, KAFKA_CA_FILE; roots from package
// tlsconf, system roots with an embedded fallback) and SASL PLAIN
// (CONFLUENT_API_KEY, CONFLUENT_API_SECRET), as franz-go options.
//
// The forwarder's producer (package forwarder), the sink's consumer and
// `cloud-forwarder tail` start from ClientOpts and add their own settings.
//
// Example:
//
//	opts, err := kafkaout.ClientOpts(cfg.Kafka, "cloud-forwarder-tail")
//	cl, err := kgo.NewClient(append(opts, kgo.ConsumeTopics(cfg.Kafka.Topic))...)
package kafkaout
