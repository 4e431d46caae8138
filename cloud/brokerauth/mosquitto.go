package brokerauth

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// DynSecIterations is the PBKDF2 iteration count of the generated
// password hashes (mosquitto_ctrl writes 101).
const DynSecIterations = 1000

// The dynamic-security plugin's ACL types.
const (
	aclPublish   = "publishClientSend"
	aclReceive   = "publishClientReceive"
	aclSubscribe = "subscribePattern"
)

type dynsecFile struct {
	Clients []dynsecClient `json:"clients"`
	Roles   []dynsecRole   `json:"roles"`
	// Deny whatever the roles do not allow; unsubscribing is harmless.
	DefaultACLAccess map[string]bool `json:"defaultACLAccess"`
}

type dynsecClient struct {
	Username   string          `json:"username"`
	ClientID   string          `json:"clientid"`
	Password   string          `json:"password"`
	Salt       string          `json:"salt"`
	Iterations int             `json:"iterations"`
	Roles      []dynsecRoleRef `json:"roles"`
}

type dynsecRoleRef struct {
	Name string `json:"rolename"`
}

type dynsecRole struct {
	Name string      `json:"rolename"`
	ACLs []dynsecACL `json:"acls"`
}

type dynsecACL struct {
	Type  string `json:"acltype"`
	Topic string `json:"topic"`
	Allow bool   `json:"allow"`
}

// DynSec writes the table as the configuration file of mosquitto's
// dynamic-security plugin (plugin_opt_config_file) for logins, with
// salted password hashes (salts from rnd, crypto/rand.Reader in use).
//
// Every client is bound to its client id (the plugin refuses a CONNECT
// whose client id differs), so no login can take another's session.
// mosquitto 2.0 substitutes nothing in the plugin's topics, so a role
// whose topics name the login (a device's) is written once per login,
// named "device:NAME"; the others once. The default access is deny: a
// SUBSCRIBE the table does not allow is refused at once (SUBACK 0x80), a
// shared one included, since the plugin checks "$share/GROUP/FILTER" as
// written.
func DynSec(prefix string, logins []Login, rnd io.Reader) ([]byte, error) {
	if err := checkLogins(logins); err != nil {
		return nil, err
	}
	table := Table(prefix)
	f := dynsecFile{DefaultACLAccess: map[string]bool{aclPublish: false, aclReceive: false, "subscribe": false, "unsubscribe": true}}
	shared := map[Role]bool{}
	for _, l := range logins {
		r, _ := rule(table, l.Role)
		name := string(l.Role)
		if perLogin(r) {
			name += ":" + l.Name
			f.Roles = append(f.Roles, dynsecRoleFor(name, r, l.Name))
		} else if !shared[l.Role] {
			shared[l.Role] = true
			f.Roles = append(f.Roles, dynsecRoleFor(name, r, ""))
		}
		salt, key, err := hash(rnd, l.Password, 12, DynSecIterations)
		if err != nil {
			return nil, err
		}
		f.Clients = append(f.Clients, dynsecClient{
			Username: l.Name, ClientID: l.Name, Iterations: DynSecIterations,
			Password: base64.StdEncoding.EncodeToString(key), Salt: base64.StdEncoding.EncodeToString(salt),
			Roles: []dynsecRoleRef{{name}},
		})
	}
	out, err := json.MarshalIndent(f, "", "\t")
	if err != nil {
		return nil, fmt.Errorf("brokerauth: %w", err)
	}
	return append(out, '\n'), nil
}

// perLogin tells a rule whose topics name the login.
func perLogin(r Rule) bool {
	return slices.ContainsFunc(append(slices.Clone(r.Publish), r.Subscribe...), func(t string) bool { return strings.Contains(t, Self) })
}

func dynsecRoleFor(name string, r Rule, login string) dynsecRole {
	role := dynsecRole{Name: name, ACLs: []dynsecACL{}}
	add := func(typ, topic string) {
		a := dynsecACL{Type: typ, Topic: expand(topic, login), Allow: true}
		if !slices.Contains(role.ACLs, a) {
			role.ACLs = append(role.ACLs, a)
		}
	}
	for _, p := range r.Publish {
		add(aclPublish, p)
	}
	for _, s := range r.Subscribe {
		add(aclSubscribe, s)
		f, _ := receiveFilter(s)
		add(aclReceive, f)
	}
	return role
}

// DynSecPlugins are where distributions install the plugin (Debian and
// Ubuntu per architecture, then source builds).
var DynSecPlugins = []string{
	"/usr/lib/*/mosquitto_dynamic_security.so",
	"/usr/lib/mosquitto_dynamic_security.so",
	"/usr/local/lib/mosquitto_dynamic_security.so",
}

// MosquittoConf is the part of mosquitto.conf that puts the table in
// force: the plugin at pluginPath reading configFile (DynSec's output,
// which the broker must be able to write: it saves changes made with
// mosquitto_ctrl there), no anonymous clients, and one set of security
// settings for every listener.
func MosquittoConf(pluginPath, configFile string) []string {
	return []string{
		"per_listener_settings false",
		"allow_anonymous false",
		"plugin " + pluginPath,
		"plugin_opt_config_file " + configFile,
	}
}
