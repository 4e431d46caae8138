package mqttconn

import (
	"errors"
	"fmt"
	"net"
)

// ErrScheme is returned for a broker URL scheme neither program speaks.
var ErrScheme = errors.New("scheme is not ssl or tcp")

// TLS reports whether a broker URL scheme means TLS. This is the one place
// that decides which schemes both programs accept: ssl, tls, mqtts and tcps
// are TLS; tcp and mqtt are plaintext; anything else wraps ErrScheme.
func TLS(scheme string) (bool, error) {
	switch scheme {
	case "ssl", "tls", "mqtts", "tcps":
		return true, nil
	case "tcp", "mqtt":
		return false, nil
	}
	return false, fmt.Errorf("%w: %q", ErrScheme, scheme)
}

// IsLoopback reports whether host (a name or an IP) is this machine, where
// plaintext is allowed without an explicit insecure option.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
