package brokerauth

import (
	"crypto/pbkdf2"
	"crypto/sha512"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode"

	"github.com/edgepipe/sensorpipe/buffer/cmdline"
)

// ErrLogin marks a login the table cannot give permissions to (a usage
// error: exit status 2).
var ErrLogin = cmdline.NewUsageError("brokerauth: bad login")

// Login is one broker account: its user name (also its client id), its
// role and its password.
type Login struct {
	Name     string
	Role     Role
	Password string
}

// checkLogins refuses names a topic filter could not hold literally (the
// table puts a device's name in its topics), unknown roles, empty
// passwords and duplicates.
func checkLogins(logins []Login) error {
	seen := map[string]bool{}
	for _, l := range logins {
		if !slices.Contains(Roles, l.Role) {
			return fmt.Errorf("%w: %q has role %q, want one of %v", ErrLogin, l.Name, l.Role, Roles)
		}
		if l.Name == "" || len(l.Name) > 256 || strings.ContainsAny(l.Name, "+#/$") ||
			strings.IndexFunc(l.Name, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
			return fmt.Errorf("%w: user name %q must be 1-256 bytes without +, #, /, $, spaces or control characters", ErrLogin, l.Name)
		}
		if l.Password == "" {
			return fmt.Errorf("%w: %q has an empty password", ErrLogin, l.Name)
		}
		if seen[l.Name] {
			return fmt.Errorf("%w: %q is listed twice", ErrLogin, l.Name)
		}
		seen[l.Name] = true
	}
	return nil
}

// hash is PBKDF2-SHA512 of password with a fresh salt of saltLen bytes
// from rnd, the scheme both mosquitto's dynamic-security plugin and
// HiveMQ's File RBAC extension check.
func hash(rnd io.Reader, password string, saltLen, iterations int) (salt, key []byte, err error) {
	salt = make([]byte, saltLen)
	if _, err := io.ReadFull(rnd, salt); err != nil {
		return nil, nil, fmt.Errorf("brokerauth: salt: %w", err)
	}
	key, err = pbkdf2.Key(sha512.New, password, salt, iterations, sha512.Size)
	return salt, key, err
}
