package forwarder

import (
	"crypto/tls"
	"net"
	"net/url"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/edgepipe/sensorpipe/buffer/mqttconn"
)

// dialMQTT is paho's CustomOpenConnectionFn: TCP or TLS through
// buffer/mqttconn, the connection the agent uses too, tuned for a stream of
// PUBACKs: a bigger read buffer and queue, and small flushes wait 200 us for
// company (PUBACKs gain nothing from leaving a few microseconds earlier:
// Kafka already has the records), so a burst shares one syscall. A stop
// cancels a dial in progress, and shutdown closes the last connection
// (paho holds one at a time) whatever paho's disconnect left of it.
func (f *Forwarder) dialMQTT(tc *tls.Config) mqtt.OpenConnectionFunc {
	return func(uri *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
		c, err := mqttconn.Dial(f.work, uri, mqttconn.Options{
			TLS:            tc,
			ConnectTimeout: o.ConnectTimeout,
			WriteTimeout:   10 * time.Second,
			ReadBuffer:     64 << 10,
			MaxPending:     1 << 20,
			CoalesceDelay:  200 * time.Microsecond,
			CloseFlush:     time.Second,
		})
		if err != nil { // never a typed nil inside net.Conn
			return nil, err
		}
		f.conn.Store(c)
		return c, nil
	}
}

// copyingStore is paho's memory store, except that an outbound PUBLISH is
// stored, and handed back, as a copy. After a reconnect paho's resume() sets
// the DUP flag on the stored packet while the previous connection's writer
// may still be encoding that same packet: a data race in paho v1.5.x
// (eclipse-paho/paho.mqtt.golang issue 703) that the confirmations, the
// forwarder's only outbound QoS 1 messages, run into when the broker goes
// away with one in flight. Inbound messages (every reading) pass through
// untouched.
type copyingStore struct{ mqtt.Store }

func newCopyingStore() copyingStore { return copyingStore{mqtt.NewMemoryStore()} }

func (s copyingStore) Put(key string, m packets.ControlPacket) { s.Store.Put(key, copyPublish(key, m)) }

func (s copyingStore) Get(key string) packets.ControlPacket {
	return copyPublish(key, s.Store.Get(key))
}

func copyPublish(key string, m packets.ControlPacket) packets.ControlPacket {
	if p, ok := m.(*packets.PublishPacket); ok && strings.HasPrefix(key, "o.") { // paho's outbound key prefix
		cp := *p // FixedHeader (with Dup) is a value: the copy has its own
		return &cp
	}
	return m
}
