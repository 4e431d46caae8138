package brokerauth_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/edgepipe/sensorpipe/cloud/brokerauth"
)

// logins has one login of every role (two devices, two forwarders).
func logins() []brokerauth.Login {
	return []brokerauth.Login{
		{Name: "pi-A", Role: brokerauth.Device, Password: "pi-A-pw"},
		{Name: "pi-B", Role: brokerauth.Device, Password: "pi-B-pw"},
		{Name: "fwd-a", Role: brokerauth.Forwarder, Password: "fwd-a-pw"},
		{Name: "fwd-b", Role: brokerauth.Forwarder, Password: "fwd-b-pw"},
		{Name: "ops", Role: brokerauth.Operator, Password: "ops-pw"},
		{Name: "grafana", Role: brokerauth.Monitor, Password: "grafana-pw"},
	}
}

// TestHashVectors checks the hashes against the brokers' own: the file
// `mosquitto_ctrl dynsec init ds.json admin adminpw` wrote (mosquitto
// 2.0.11), and the example user of the File RBAC extension's README
// ("pass1").
func TestHashVectors(t *testing.T) {
	for _, tc := range []struct {
		name, password, salt, want string
		iterations                 int
	}{
		{"mosquitto_ctrl", "adminpw", "an8vO/1dqG3TmowI",
			"nKdkvqLZN/ZXVl1XWO37nWE0mB8MYlc2nZF+nJsiBdC0D/jVazVxcNOaMJpfZfK7z4knTiDL4hxTRUbLKKfCqg==", 101},
		{"hivemq file-rbac", "pass1", "WFNQUVB0UkxjM04xa0hSR1BQNGhuOTJKVzdlbXA4bjk=",
			"FY12nwpUEbBK9EKQ/Aw/rQKSoA7jXsC0HKELwU2mLCVU39bJVK0zf4NemuFeDOHPO4BW1nOjxi6NporkC6rUog==", 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			salt, err := base64.StdEncoding.DecodeString(tc.salt)
			if err != nil {
				t.Fatal(err)
			}
			gotSalt, key, err := brokerauth.Hash(bytes.NewReader(salt), tc.password, len(salt), tc.iterations)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(gotSalt, salt) || base64.StdEncoding.EncodeToString(key) != tc.want {
				t.Errorf("hash = %s, want %s", base64.StdEncoding.EncodeToString(key), tc.want)
			}
		})
	}
}

func TestLoginsRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		login brokerauth.Login
	}{
		{"wildcard", brokerauth.Login{Name: "pi-+", Role: brokerauth.Device, Password: "x"}},
		{"level", brokerauth.Login{Name: "pi/1", Role: brokerauth.Device, Password: "x"}},
		{"dollar", brokerauth.Login{Name: "$pi", Role: brokerauth.Device, Password: "x"}},
		{"space", brokerauth.Login{Name: "pi 1", Role: brokerauth.Device, Password: "x"}},
		{"empty name", brokerauth.Login{Role: brokerauth.Device, Password: "x"}},
		{"no password", brokerauth.Login{Name: "pi-1", Role: brokerauth.Device}},
		{"role", brokerauth.Login{Name: "pi-1", Role: "admin", Password: "x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, gen := range []func(string, []brokerauth.Login, io.Reader) ([]byte, error){brokerauth.DynSec, brokerauth.HiveMQ} {
				if _, err := gen("sensors", []brokerauth.Login{tc.login}, rand.Reader); !errors.Is(err, brokerauth.ErrLogin) {
					t.Errorf("err = %v, want ErrLogin", err)
				}
			}
		})
	}
	dup := append(logins(), brokerauth.Login{Name: "pi-A", Role: brokerauth.Forwarder, Password: "x"})
	if _, err := brokerauth.DynSec("sensors", dup, rand.Reader); !errors.Is(err, brokerauth.ErrLogin) {
		t.Errorf("a name listed twice: err = %v, want ErrLogin", err)
	}
}

// TestDynSecFromTable checks the plugin file against the table: every
// login bound to its own client id, default deny, and each login's role
// holding exactly its row, with the device's name in its topics.
func TestDynSecFromTable(t *testing.T) {
	js, err := brokerauth.DynSec("sensors", logins(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Clients []struct {
			Username, ClientID, Password, Salt string
			Iterations                         int
			Roles                              []struct{ Rolename string }
		}
		Roles []struct {
			Rolename string
			ACLs     []struct {
				ACLType, Topic string
				Allow          bool
			}
		}
		DefaultACLAccess map[string]bool
	}
	if err := json.Unmarshal(js, &f); err != nil {
		t.Fatal(err)
	}
	for k, v := range f.DefaultACLAccess {
		if v != (k == "unsubscribe") {
			t.Errorf("defaultACLAccess %s = %v", k, v)
		}
	}
	roles := map[string][]string{}
	for _, r := range f.Roles {
		for _, a := range r.ACLs {
			if !a.Allow {
				t.Errorf("role %s denies %s", r.Rolename, a.Topic)
			}
			roles[r.Rolename] = append(roles[r.Rolename], a.ACLType+" "+a.Topic)
		}
	}
	table := brokerauth.Table("sensors")
	if len(f.Clients) != len(logins()) {
		t.Fatalf("%d clients, want %d", len(f.Clients), len(logins()))
	}
	for i, l := range logins() {
		c := f.Clients[i]
		if c.Username != l.Name || c.ClientID != l.Name {
			t.Errorf("client %q has client id %q, want its user name %q", c.Username, c.ClientID, l.Name)
		}
		if c.Password == "" || c.Salt == "" || c.Iterations != brokerauth.DynSecIterations || len(c.Roles) != 1 {
			t.Errorf("client %q: %+v", c.Username, c)
			continue
		}
		var want []string
		for _, r := range table {
			if r.Role != l.Role {
				continue
			}
			for _, p := range r.Publish {
				want = append(want, "publishClientSend "+strings.ReplaceAll(p, brokerauth.Self, l.Name))
			}
			for _, s := range r.Subscribe {
				s = strings.ReplaceAll(s, brokerauth.Self, l.Name)
				want = append(want, "subscribePattern "+s, "publishClientReceive "+strings.TrimPrefix(s, "$share/+/"))
			}
		}
		got := roles[c.Roles[0].Rolename]
		for _, w := range want {
			if !slices.Contains(got, w) {
				t.Errorf("%s (%s): role %s lacks %q", l.Name, l.Role, c.Roles[0].Rolename, w)
			}
		}
		for _, g := range got {
			if !slices.Contains(want, g) {
				t.Errorf("%s (%s): role %s has %q, not in the table", l.Name, l.Role, c.Roles[0].Rolename, g)
			}
		}
	}
}

// TestHiveMQFromTable checks credentials.xml: well-formed, every login a
// user with a hash of the extension's format and its role, every row of
// the table a role with each of its permissions.
func TestHiveMQFromTable(t *testing.T) {
	x, err := brokerauth.HiveMQ("sensors", logins(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		XMLName xml.Name `xml:"file-rbac"`
		Users   []struct {
			Name     string   `xml:"name"`
			Password string   `xml:"password"`
			Roles    []string `xml:"roles>id"`
		} `xml:"users>user"`
		Roles []struct {
			ID    string `xml:"id"`
			Perms []struct {
				Topic    string `xml:"topic"`
				Activity string `xml:"activity"`
				Shared   string `xml:"shared-subscription"`
			} `xml:"permissions>permission"`
		} `xml:"roles>role"`
	}
	dec := xml.NewDecoder(bytes.NewReader(x))
	dec.Strict = true
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("not well-formed: %v\n%s", err, x)
	}
	if len(f.Users) != len(logins()) {
		t.Fatalf("%d users, want %d", len(f.Users), len(logins()))
	}
	for i, l := range logins() {
		u := f.Users[i]
		parts := strings.Split(u.Password, ":")
		if u.Name != l.Name || len(u.Roles) != 1 || u.Roles[0] != string(l.Role) || len(parts) != 3 || parts[1] != "1000" {
			t.Errorf("user %d = %+v, want %s with role %s and salt:1000:hash", i, u, l.Name, l.Role)
		}
		if strings.Contains(string(x), l.Password) {
			t.Errorf("%s's password is in the file", l.Name)
		}
	}
	perms := map[string][]string{}
	for _, r := range f.Roles {
		for _, p := range r.Perms {
			perms[r.ID] = append(perms[r.ID], p.Activity+" "+p.Topic+" "+p.Shared)
		}
	}
	for _, r := range brokerauth.Table("sensors") {
		var want []string
		for _, p := range r.Publish {
			want = append(want, "PUBLISH "+strings.ReplaceAll(p, brokerauth.Self, "${{username}}")+" ")
		}
		for _, s := range r.Subscribe {
			s = strings.ReplaceAll(s, brokerauth.Self, "${{username}}")
			if f, ok := strings.CutPrefix(s, "$share/+/"); ok {
				want = append(want, "SUBSCRIBE "+f+" SHARED")
			} else {
				want = append(want, "SUBSCRIBE "+s+" NOT_SHARED")
			}
		}
		if !slices.Equal(perms[string(r.Role)], want) {
			t.Errorf("role %s:\n got %q\nwant %q", r.Role, perms[string(r.Role)], want)
		}
	}
}

// TestDocsShowTable checks README.md and docs/FORWARDER.md show the table
// verbatim, and docs/FORWARDER.md the mosquitto.conf lines, so the
// permissions users read are the ones the tests run.
func TestDocsShowTable(t *testing.T) {
	table := brokerauth.Markdown("sensors")
	for _, doc := range []string{"../../README.md", "../../docs/FORWARDER.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "\n"+table+"\n") {
			t.Errorf("%s does not show the permission table verbatim; it is:\n%s", doc, table)
		}
	}
	conf := strings.Join(brokerauth.MosquittoConf("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so", "/var/lib/mosquitto/dynsec.json"), "\n")
	if b, _ := os.ReadFile("../../docs/FORWARDER.md"); !strings.Contains(string(b), "```\n"+conf+"\n```\n") {
		t.Errorf("docs/FORWARDER.md does not show the mosquitto.conf lines the tests use:\n%s", conf)
	}
}
